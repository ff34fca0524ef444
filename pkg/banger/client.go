// Package banger is the Go SDK for bangerd, banger's daemon: programs
// import it to create disposable Linux microVMs, run commands in them
// (streamed stdin, stdout, stderr and the exit code), move files in and
// out, ship a git workspace and take the guest's edits back as a patch,
// run guest sessions, and delete the VMs.
//
// Import it as
//
//	import "banger/pkg/banger"
//
// (the module path of the banger repository is "banger"; add it to your
// go.mod with a replace directive pointing at a checkout, e.g.
// `require banger v0.0.0` and `replace banger => ../banger`).
//
// The SDK speaks the HTTP API described in api/openapi.yaml, to the
// daemon's Unix socket (found as the banger CLI finds it) or, with
// WithAddress("tcp://HOST:PORT") and a token, to the TCP listener a daemon
// opens with `api_listen` in its config. Every call takes a context;
// cancelling it abandons the call (for an exec, the command is killed).
// Failures the daemon reports are *Error values carrying its code
// (errors.As, or the IsNotFound-style helpers).
//
// The daemon is not started on demand: start it with `banger daemon
// start`, any banger command, or `banger system install`.
package banger

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"banger/internal/api"
	"banger/internal/paths"
)

// Client talks to one daemon. It is safe for concurrent use.
type Client struct {
	hc       *http.Client
	base     string // http://bangerd or http://HOST:PORT
	addr     string // for messages
	token    string
	progress func(Progress)
}

// Option configures a Client.
type Option func(*config) error

type config struct {
	network, addr string
	token         string
	tokenFile     string
	wrap          func(http.RoundTripper) http.RoundTripper
	progress      func(Progress)
}

// WithSocket talks to the daemon on this Unix socket instead of the
// default one.
func WithSocket(path string) Option {
	return func(c *config) error {
		c.network, c.addr = "unix", path
		return nil
	}
}

// WithAddress names the daemon: "unix:///PATH" (or a plain absolute
// path) for a Unix socket, "tcp://HOST:PORT" for a daemon's api_listen
// TCP listener, which needs WithToken or WithTokenFile.
func WithAddress(addr string) Option {
	return func(c *config) error {
		switch {
		case strings.HasPrefix(addr, "unix://"):
			c.network, c.addr = "unix", strings.TrimPrefix(addr, "unix://")
		case strings.HasPrefix(addr, "tcp://"):
			c.network, c.addr = "tcp", strings.TrimPrefix(addr, "tcp://")
			if _, _, err := net.SplitHostPort(c.addr); err != nil {
				return fmt.Errorf("address %q: %w", addr, err)
			}
		case filepath.IsAbs(addr):
			c.network, c.addr = "unix", addr
		default:
			return fmt.Errorf("address %q: want unix:///PATH, tcp://HOST:PORT or an absolute socket path", addr)
		}
		return nil
	}
}

// WithToken is the bearer token for a TCP address (the content of the
// daemon's token file).
func WithToken(token string) Option {
	return func(c *config) error {
		c.token = strings.TrimSpace(token)
		return nil
	}
}

// WithTokenFile reads the bearer token for a TCP address from a file
// (the daemon's, DefaultTokenFile, or a copy of it).
func WithTokenFile(path string) Option {
	return func(c *config) error {
		c.tokenFile = path
		return nil
	}
}

// WithTransport wraps the client's HTTP transport (e.g. to log or check
// the traffic). Upgraded calls go through it too: their 101 answer's
// Body is the connection (an io.ReadWriteCloser).
func WithTransport(wrap func(http.RoundTripper) http.RoundTripper) Option {
	return func(c *config) error {
		c.wrap = wrap
		return nil
	}
}

// WithProgress receives the progress events of long calls (create,
// start, run).
func WithProgress(f func(Progress)) Option {
	return func(c *config) error {
		c.progress = f
		return nil
	}
}

// DefaultSocket is the socket the banger CLI uses: the installed
// service's, else $XDG_RUNTIME_DIR/banger/bangerd.sock (with
// BANGER_RUNTIME_DIR and the other fallbacks of the CLI).
func DefaultSocket() (string, error) {
	l, err := paths.FromEnv()
	if err != nil {
		return "", err
	}
	return l.Socket(), nil
}

// DefaultTokenFile is where a daemon of this user keeps its TCP bearer
// token: $XDG_CONFIG_HOME/banger/api-token.
func DefaultTokenFile() (string, error) {
	l, err := paths.FromEnv()
	if err != nil {
		return "", err
	}
	return l.APIToken(), nil
}

// New returns a client; it does not contact the daemon (see Ping).
func New(opts ...Option) (*Client, error) {
	var cfg config
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return nil, err
		}
	}
	if cfg.network == "" {
		sock, err := DefaultSocket()
		if err != nil {
			return nil, fmt.Errorf("find the daemon's socket: %w", err)
		}
		cfg.network, cfg.addr = "unix", sock
	}
	if cfg.tokenFile != "" {
		b, err := os.ReadFile(cfg.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("read token: %w", err)
		}
		cfg.token = strings.TrimSpace(string(b))
	}
	if cfg.network == "tcp" && cfg.token == "" {
		return nil, errors.New("a tcp:// address needs a token (WithToken or WithTokenFile)")
	}
	network, addr := cfg.network, cfg.addr
	var rt http.RoundTripper = &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
		DisableKeepAlives: true,
	}
	if cfg.wrap != nil {
		rt = cfg.wrap(rt)
	}
	c := &Client{hc: &http.Client{Transport: rt}, base: "http://bangerd", addr: addr, token: cfg.token, progress: cfg.progress}
	if network == "tcp" {
		c.base = "http://" + addr
	}
	return c, nil
}

// Error is a failure the daemon reported: Code is one of the Code*
// constants, OpID names the daemon's log line about it.
type Error = api.Error

// Error codes.
const (
	CodeNotFound        = api.CodeNotFound
	CodeAlreadyExists   = api.CodeAlreadyExists
	CodeBadRequest      = api.CodeBadRequest
	CodeConflict        = api.CodeConflict
	CodeNotRunning      = api.CodeNotRunning
	CodeOperationFailed = api.CodeOperationFailed
	CodeUnknownMethod   = api.CodeUnknownMethod
	CodeBadVersion      = api.CodeBadVersion
	CodeUnauthorized    = api.CodeUnauthorized
)

// ErrorCode is the daemon's code for err ("" when err is not one the
// daemon reported, such as a connection failure).
func ErrorCode(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// IsNotFound reports whether the daemon said the VM, image, session or
// path does not exist.
func IsNotFound(err error) bool { return ErrorCode(err) == CodeNotFound }

// ErrUnavailable wraps failures to reach the daemon at all.
var ErrUnavailable = errors.New("banger daemon unavailable")

func (c *Client) newRequest(ctx context.Context, method, path string, query url.Values, body io.Reader, contentType string) (*http.Request, error) {
	u := c.base + "/" + api.Version + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	return req, nil
}

func jsonBody(in any) (io.Reader, string, error) {
	if in == nil {
		return nil, "", nil
	}
	b, err := json.Marshal(in)
	if err != nil {
		return nil, "", err
	}
	return bytes.NewReader(b), "application/json", nil
}

// send makes a request and returns the answer when its status is 2xx or
// 101, or the daemon's error.
func (c *Client) send(req *http.Request) (*http.Response, error) {
	resp, err := c.hc.Do(req)
	if err != nil {
		if req.Context().Err() != nil {
			return nil, req.Context().Err()
		}
		return nil, fmt.Errorf("%w at %s: %v", ErrUnavailable, c.addr, err)
	}
	if resp.StatusCode/100 != 2 && resp.StatusCode != http.StatusSwitchingProtocols {
		defer resp.Body.Close()
		return nil, decodeError(resp)
	}
	return resp, nil
}

// maxErrorBody bounds an error answer read into memory.
const maxErrorBody = 1 << 20

func decodeError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var ae Error
	if json.Unmarshal(b, &ae) == nil && ae.Code != "" {
		return &ae
	}
	return &Error{Code: CodeOperationFailed, Message: fmt.Sprintf("daemon answered %s: %s", resp.Status, strings.TrimSpace(string(b)))}
}

// call makes a simple JSON call; out may be nil.
func (c *Client) call(ctx context.Context, method, path string, in, out any) error {
	body, ct, err := jsonBody(in)
	if err != nil {
		return err
	}
	req, err := c.newRequest(ctx, method, path, nil, body, ct)
	if err != nil {
		return err
	}
	resp, err := c.send(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode answer of %s %s: %w", method, path, err)
	}
	return nil
}

// stream makes a long call: progress events go to c.progress, the
// result is decoded into out.
func (c *Client) stream(ctx context.Context, method, path string, in, out any) error {
	body, ct, err := jsonBody(in)
	if err != nil {
		return err
	}
	req, err := c.newRequest(ctx, method, path, nil, body, ct)
	if err != nil {
		return err
	}
	resp, err := c.send(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		var ev struct {
			Progress *Progress       `json:"progress"`
			Result   json.RawMessage `json:"result"`
			Error    *Error          `json:"error"`
		}
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return fmt.Errorf("bad event from daemon: %w", err)
		}
		switch {
		case ev.Error != nil:
			return ev.Error
		case ev.Progress != nil:
			if c.progress != nil {
				c.progress(*ev.Progress)
			}
		case ev.Result != nil:
			if out != nil {
				return json.Unmarshal(ev.Result, out)
			}
			return nil
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("daemon stream: %w", err)
	}
	return errors.New("daemon ended the stream without a result")
}

// Ping is the daemon's identity.
type Ping = api.Ping

// Ping checks that the daemon answers and says which one it is.
func (c *Client) Ping(ctx context.Context) (*Ping, error) {
	var p Ping
	if err := c.call(ctx, http.MethodGet, "/ping", nil, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

func vmPath(name, suffix string) string { return "/vms/" + url.PathEscape(name) + suffix }

func jsonDecode(r io.Reader, v any) error { return json.NewDecoder(r).Decode(v) }
