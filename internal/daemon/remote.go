package daemon

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"banger/internal/api"
)

// tokenBytes is the entropy of a generated API token.
const tokenBytes = 32

// maxTokenFile bounds what is read of a token file.
const maxTokenFile = 4096

// loadToken returns the bearer token in path, generating it (hex of 32
// bytes from crypto/rand, mode 0600) when the file does not exist. An
// existing file must be a regular file of this user's that nobody else
// can read, not a symbolic link, holding a token of at least 32
// characters.
func loadToken(path string) (string, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", fmt.Errorf("api token: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err == nil {
		var b [tokenBytes]byte
		if _, err := rand.Read(b[:]); err != nil {
			f.Close()
			os.Remove(path)
			return "", fmt.Errorf("api token: %w", err)
		}
		tok := hex.EncodeToString(b[:])
		if _, err := f.WriteString(tok + "\n"); err != nil {
			f.Close()
			os.Remove(path)
			return "", fmt.Errorf("api token %s: %w", path, err)
		}
		if err := f.Close(); err != nil {
			os.Remove(path)
			return "", fmt.Errorf("api token %s: %w", path, err)
		}
		return tok, nil
	}
	if !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("api token %s: %w", path, err)
	}
	f, err = os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return "", fmt.Errorf("api token %s: %w", path, err)
	}
	defer f.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return "", fmt.Errorf("api token %s: %w", path, err)
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFREG || int(st.Uid) != os.Geteuid() || st.Mode&0o077 != 0 {
		return "", fmt.Errorf("api token %s must be a regular file of this user's with mode 0600: refusing it", path)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxTokenFile))
	if err != nil {
		return "", fmt.Errorf("api token %s: %w", path, err)
	}
	tok := string(bytes.TrimSpace(b))
	if len(tok) < tokenBytes || strings.ContainsAny(tok, " \t\r\n") {
		return "", fmt.Errorf("api token %s holds no token of at least %d characters: remove it and restart bangerd to generate one", path, tokenBytes)
	}
	return tok, nil
}

// requireToken refuses every request that does not carry
// "Authorization: Bearer TOKEN" with 401 and an unauthorized error. The
// comparison takes the same time whatever the token sent.
func requireToken(token string, h http.Handler, log *slog.Logger) http.Handler {
	want := sha256.Sum256([]byte(token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		sum := sha256.Sum256([]byte(got))
		if subtle.ConstantTimeCompare(sum[:], want[:]) != 1 || !ok {
			id := newOpID()
			log.Warn("api request refused: no valid token", "op", id, "remote", r.RemoteAddr, "method", r.Method, "path", r.URL.Path)
			w.Header().Set("WWW-Authenticate", `Bearer realm="bangerd"`)
			writeJSON(w, http.StatusUnauthorized, &api.Error{Code: api.CodeUnauthorized, Message: "this listener needs the bearer token of the daemon's api-token file", OpID: id})
			return
		}
		h.ServeHTTP(w, r)
	})
}

// serveTCP serves h on addr (config api_listen) behind requireToken with
// the token in tokenFile, until the returned stop is called.
func serveTCP(addr, tokenFile string, h http.Handler, log *slog.Logger) (stop func(), err error) {
	tok, err := loadToken(tokenFile)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("api_listen: %w", err)
	}
	hs := &http.Server{Handler: requireToken(tok, h, log), ReadHeaderTimeout: 10 * time.Second}
	go hs.Serve(ln)
	log.Info("bangerd serving the API on tcp (bearer token required)", "addr", ln.Addr().String(), "token_file", tokenFile)
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		hs.Shutdown(ctx)
	}, nil
}
