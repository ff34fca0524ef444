// Package apitest checks bangerd's HTTP traffic against the OpenAPI
// document in api/openapi.yaml, for tests: a validating
// http.RoundTripper that checks every request and every answer (JSON
// bodies, newline-delimited events line by line, and the JSON payloads of
// the frames of upgraded connections), and a real daemon process to talk
// to (daemon.go). Only tests import it.
package apitest

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sync"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"banger/internal/agent"
)

// DocPath is api/openapi.yaml of this repository.
func DocPath() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "api", "openapi.yaml")
}

// Doc is the loaded, validated document.
type Doc struct {
	T      *openapi3.T
	router routers.Router
}

// Load reads the OpenAPI document at path and validates it as OpenAPI 3.1.
func Load(ctx context.Context, path string) (*Doc, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	loader := openapi3.NewLoader()
	t, err := loader.LoadFromData(b)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", path, err)
	}
	if !t.IsOpenAPI31OrLater() {
		return nil, fmt.Errorf("%s: openapi %s, want 3.1", path, t.OpenAPI)
	}
	if err := t.Validate(ctx); err != nil {
		return nil, fmt.Errorf("validate %s: %w", path, err)
	}
	r, err := gorillamux.NewRouter(t)
	if err != nil {
		return nil, fmt.Errorf("route %s: %w", path, err)
	}
	return &Doc{T: t, router: r}, nil
}

// Schema returns the component schema called name.
func (d *Doc) Schema(name string) (*openapi3.Schema, error) {
	ref, ok := d.T.Components.Schemas[name]
	if !ok || ref.Value == nil {
		return nil, fmt.Errorf("no schema %q in the document", name)
	}
	return ref.Value, nil
}

// CheckJSON validates one JSON value against schema.
func CheckJSON(schema *openapi3.Schema, data []byte) error {
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		return fmt.Errorf("not JSON: %w: %q", err, truncate(data))
	}
	if err := schema.VisitJSON(v, openapi3.EnableJSONSchema2020(), openapi3.VisitAsResponse()); err != nil {
		return fmt.Errorf("%w (value %s)", err, truncate(data))
	}
	return nil
}

func truncate(b []byte) string {
	if len(b) > 400 {
		return string(b[:400]) + "..."
	}
	return string(b)
}

// Transport wraps inner so that every request and answer is checked
// against the document; report receives each mismatch (a test passes
// t.Errorf-like functions; it may be called from any goroutine). Checked:
// the route is described; the request's parameters and JSON body; the
// answer's status is described for the route; its content type is one
// the route declares; JSON bodies; every line of an application/x-ndjson
// body; on a 101, the Upgrade headers and the JSON payload of every
// progress, error and exit frame the daemon sends, and that it sends no
// other frame type than stdout, stderr, exit, progress and error.
func (d *Doc) Transport(inner http.RoundTripper, report func(error)) http.RoundTripper {
	return &transport{d: d, inner: inner, report: report}
}

type transport struct {
	d      *Doc
	inner  http.RoundTripper
	report func(error)
}

func (t *transport) fail(req *http.Request, format string, args ...any) {
	t.report(fmt.Errorf("%s %s: %s", req.Method, req.URL.Path, fmt.Sprintf(format, args...)))
}

var opts = &openapi3filter.Options{
	AuthenticationFunc:    openapi3filter.NoopAuthenticationFunc,
	IncludeResponseStatus: true,
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	// Route by path: the host is the socket's placeholder or, over TCP,
	// the daemon's address.
	rreq := req.Clone(req.Context())
	rreq.URL.Scheme, rreq.URL.Host, rreq.Host = "http", "bangerd", "bangerd"
	route, params, err := t.d.router.FindRoute(rreq)
	if err != nil {
		t.fail(req, "not described in the document: %v", err)
		return t.inner.RoundTrip(req)
	}
	in := &openapi3filter.RequestValidationInput{Request: rreq, PathParams: params, Route: route, Options: opts}
	if isJSON(req.Header.Get("Content-Type")) && req.Body != nil && req.Body != http.NoBody {
		b, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		req.Body = io.NopCloser(bytes.NewReader(b))
		rreq.Body = io.NopCloser(bytes.NewReader(b))
		if err := openapi3filter.ValidateRequest(req.Context(), in); err != nil {
			t.fail(req, "request: %v", err)
		}
	} else {
		// A stream (file, tar): its bytes are the caller's, never read
		// here; the clone shares the body, so it gets none.
		rreq.Body, rreq.ContentLength = http.NoBody, 0
		o := *opts
		o.ExcludeRequestBody = true
		in.Options = &o
		if err := openapi3filter.ValidateRequest(req.Context(), in); err != nil {
			t.fail(req, "request: %v", err)
		}
	}
	resp, err := t.inner.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	t.checkResponse(req, in, resp)
	return resp, nil
}

func isJSON(ct string) bool {
	mt, _, _ := mime.ParseMediaType(ct)
	return mt == "application/json"
}

func (t *transport) checkResponse(req *http.Request, in *openapi3filter.RequestValidationInput, resp *http.Response) {
	op := in.Route.Operation
	ref := op.Responses.Status(resp.StatusCode)
	if ref == nil {
		ref = op.Responses.Default()
	}
	if ref == nil || ref.Value == nil {
		t.fail(req, "status %d is not described", resp.StatusCode)
		return
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		if op.Responses.Status(http.StatusSwitchingProtocols) == nil {
			t.fail(req, "upgraded, but the document does not describe a 101")
		}
		rin := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: resp.StatusCode, Header: resp.Header, Options: opts}
		if err := openapi3filter.ValidateResponse(req.Context(), rin); err != nil {
			t.fail(req, "101: %v", err)
		}
		rwc, ok := resp.Body.(io.ReadWriteCloser)
		if !ok {
			t.fail(req, "101 without a writable body")
			return
		}
		resp.Body = t.frameChecker(req, rwc)
		return
	}
	ct := resp.Header.Get("Content-Type")
	mt, _, _ := mime.ParseMediaType(ct)
	media := ref.Value.Content.Get(ct)
	if media == nil {
		t.fail(req, "status %d: content type %q is not described", resp.StatusCode, ct)
		return
	}
	switch mt {
	case "application/json":
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(b))
		if err != nil {
			t.fail(req, "read answer: %v", err)
			return
		}
		rin := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: resp.StatusCode, Header: resp.Header, Options: opts}
		rin.SetBodyBytes(b)
		if err := openapi3filter.ValidateResponse(req.Context(), rin); err != nil {
			t.fail(req, "answer: %v", err)
		}
	case "application/x-ndjson":
		if media.Schema == nil || media.Schema.Value == nil {
			t.fail(req, "ndjson answer without a line schema")
			return
		}
		resp.Body = &lineChecker{rc: resp.Body, check: func(line []byte) {
			if err := CheckJSON(media.Schema.Value, line); err != nil {
				t.fail(req, "event line: %v", err)
			}
		}}
	}
}

// lineChecker passes a body through, checking every complete line.
type lineChecker struct {
	rc    io.ReadCloser
	buf   []byte
	check func([]byte)
}

func (l *lineChecker) Read(p []byte) (int, error) {
	n, err := l.rc.Read(p)
	l.buf = append(l.buf, p[:n]...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		if line := bytes.TrimSpace(l.buf[:i]); len(line) > 0 {
			l.check(line)
		}
		l.buf = l.buf[i+1:]
	}
	if errors.Is(err, io.EOF) && len(bytes.TrimSpace(l.buf)) > 0 {
		l.check(bytes.TrimSpace(l.buf))
		l.buf = nil
	}
	return n, err
}

func (l *lineChecker) Close() error { return l.rc.Close() }

// frameChecker parses the frames the daemon sends on an upgraded
// connection as they are read, and checks them.
type frameChecker struct {
	io.ReadWriteCloser
	mu      sync.Mutex
	buf     []byte
	check   func(agent.FrameType, []byte)
	invalid bool
}

func (t *transport) frameChecker(req *http.Request, rwc io.ReadWriteCloser) io.ReadWriteCloser {
	schemas := map[agent.FrameType]string{agent.FrameExit: "ExitStatus", agent.FrameProgress: "Progress", agent.FrameError: "Error"}
	return &frameChecker{ReadWriteCloser: rwc, check: func(ft agent.FrameType, p []byte) {
		switch ft {
		case agent.FrameStdout, agent.FrameStderr:
			return
		}
		name, ok := schemas[ft]
		if !ok {
			t.fail(req, "daemon sent frame type %q, which the document does not describe for this direction", byte(ft))
			return
		}
		s, err := t.d.Schema(name)
		if err != nil {
			t.fail(req, "%v", err)
			return
		}
		if err := CheckJSON(s, p); err != nil {
			t.fail(req, "%c frame: %v", byte(ft), err)
		}
	}}
}

func (f *frameChecker) Read(p []byte) (int, error) {
	n, err := f.ReadWriteCloser.Read(p)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.invalid {
		return n, err
	}
	f.buf = append(f.buf, p[:n]...)
	for len(f.buf) >= 5 {
		size := binary.BigEndian.Uint32(f.buf[1:5])
		if size > agent.MaxFrame {
			f.invalid = true
			f.check('?', nil)
			return n, err
		}
		if uint32(len(f.buf)-5) < size {
			break
		}
		f.check(agent.FrameType(f.buf[0]), f.buf[5:5+size])
		f.buf = f.buf[5+size:]
	}
	return n, err
}
