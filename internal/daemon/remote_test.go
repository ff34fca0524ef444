package daemon

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/api"
)

func TestLoadTokenGeneratesOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cfg", "api-token")
	tok, err := loadToken(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(tok) != 2*tokenBytes || strings.Trim(tok, "0123456789abcdef") != "" {
		t.Errorf("token %q: want %d hex characters", tok, 2*tokenBytes)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v %v", fi.Mode(), err)
	}
	again, err := loadToken(path)
	if err != nil || again != tok {
		t.Errorf("second load: %q %v, want the same token", again, err)
	}
	other, _ := loadToken(filepath.Join(t.TempDir(), "api-token"))
	if other == tok {
		t.Errorf("two installations got the same token")
	}
}

// A token file another user could read, a symbolic link (maybe to a file
// the attacker chose), a directory or a short token are refused, and
// none of them is changed.
func TestLoadTokenRefusesHostileFiles(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	os.WriteFile(good, []byte(strings.Repeat("a", 64)), 0o600)
	cases := map[string]func(p string){
		"group readable": func(p string) { os.WriteFile(p, []byte(strings.Repeat("a", 64)), 0o640); os.Chmod(p, 0o640) },
		"symlink":        func(p string) { os.Symlink(good, p) },
		"directory":      func(p string) { os.Mkdir(p, 0o700) },
		"short":          func(p string) { os.WriteFile(p, []byte("abc\n"), 0o600) },
		"spaces":         func(p string) { os.WriteFile(p, []byte(strings.Repeat("a", 40)+" "+strings.Repeat("b", 40)), 0o600) },
	}
	for name, mk := range cases {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "-"))
		mk(p)
		before, _ := os.Lstat(p)
		if tok, err := loadToken(p); err == nil {
			t.Errorf("%s: accepted, token %q", name, tok)
		}
		after, _ := os.Lstat(p)
		if before.Mode() != after.Mode() || before.Size() != after.Size() {
			t.Errorf("%s: the file was changed", name)
		}
	}
}

func TestRequireToken(t *testing.T) {
	tok := strings.Repeat("7", 64)
	h := requireToken(tok, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "inner")
	}), slog.New(slog.NewTextHandler(io.Discard, nil)))
	srv := httptest.NewServer(h)
	defer srv.Close()
	for header, want := range map[string]int{
		"":                                  401,
		"Bearer":                            401,
		"Bearer ":                           401,
		"Bearer " + tok[:63]:                401,
		"Bearer " + tok + "7":               401,
		"bearer " + tok:                     401,
		"Basic " + tok:                      401,
		"Bearer " + strings.ToUpper(tok):    200, // digits only: same token
		"Bearer " + strings.Repeat("8", 64): 401,
		"Bearer " + tok:                     200,
	} {
		req, _ := http.NewRequest("GET", srv.URL+"/v1/ping", nil)
		if header != "" {
			req.Header.Set("Authorization", header)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("Authorization %q: %s %s, want %d", header, resp.Status, b, want)
			continue
		}
		if want == 401 {
			var ae api.Error
			if json.Unmarshal(b, &ae) != nil || ae.Code != api.CodeUnauthorized || ae.OpID == "" || strings.Contains(string(b), tok) {
				t.Errorf("Authorization %q: body %s", header, b)
			}
		} else if string(b) != "inner" {
			t.Errorf("Authorization %q: body %s", header, b)
		}
	}
}
