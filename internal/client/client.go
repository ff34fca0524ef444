// Package client is the typed client for bangerd's API socket.
package client

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
	"strings"
	"time"

	"banger/internal/api"
)

// Client talks to one daemon socket.
type Client struct {
	Socket string
	hc     *http.Client
}

// New returns a client for socket.
func New(socket string) *Client {
	return &Client{Socket: socket, hc: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		DisableKeepAlives: true,
		// Uploads ask first (Expect: 100-continue), so a refusal
		// (too large, no such VM) is read instead of a broken pipe.
		ExpectContinueTimeout: 30 * time.Second,
	}}}
}

// ErrUnavailable wraps failures to reach the daemon at all.
var ErrUnavailable = errors.New("daemon unavailable")

func (c *Client) url(path string) string { return "http://bangerd/" + api.Version + path }

func (c *Client) request(ctx context.Context, method, path string, in any) (*http.Response, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.url(path), body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w: %s: %v", ErrUnavailable, c.Socket, unwrapNet(err))
	}
	return resp, nil
}

func unwrapNet(err error) error {
	var op *net.OpError
	if errors.As(err, &op) {
		return op.Err
	}
	return err
}

func decodeError(resp *http.Response) error {
	b, _ := io.ReadAll(resp.Body)
	var ae api.Error
	if json.Unmarshal(b, &ae) == nil && ae.Code != "" {
		return &ae
	}
	return &api.Error{Code: api.CodeOperationFailed, Message: fmt.Sprintf("daemon answered %s: %s", resp.Status, strings.TrimSpace(string(b)))}
}

// Do makes a simple call; out may be nil.
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	resp, err := c.request(ctx, method, path, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return decodeError(resp)
	}
	if out == nil {
		io.Copy(io.Discard, resp.Body)
		return nil
	}
	if w, ok := out.(io.Writer); ok {
		_, err := io.Copy(w, resp.Body)
		return err
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// Stream makes a long call, passing progress events to onProgress and
// decoding the final result into out.
func (c *Client) Stream(ctx context.Context, method, path string, in any, onProgress func(api.Progress), out any) error {
	resp, err := c.request(ctx, method, path, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return decodeError(resp)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		var ev struct {
			Progress *api.Progress   `json:"progress"`
			Result   json.RawMessage `json:"result"`
			Error    *api.Error      `json:"error"`
		}
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return fmt.Errorf("bad event from daemon: %w", err)
		}
		switch {
		case ev.Error != nil:
			return ev.Error
		case ev.Progress != nil:
			if onProgress != nil {
				onProgress(*ev.Progress)
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
	return errors.New("daemon ended the stream without a result (did it stop or crash? see its log)")
}

// Upgrade makes an exec or run call and returns the raw frame stream.
func (c *Client) Upgrade(ctx context.Context, path string, in any) (net.Conn, io.Reader, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.Socket)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %s: %v", ErrUnavailable, c.Socket, unwrapNet(err))
	}
	b, _ := json.Marshal(in)
	req, _ := http.NewRequest(http.MethodPost, c.url(path), bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", api.Upgrade)
	if err := req.Write(conn); err != nil {
		conn.Close()
		return nil, nil, err
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("read daemon answer: %w", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer conn.Close()
		return nil, nil, decodeError(resp)
	}
	return conn, br, nil
}

// Download copies a streamed download (e.g. an image bundle) to w. An
// error the daemon reports after the first byte (in the api.ErrorTrailer
// trailer) fails it, as does a cut stream.
func (c *Client) Download(ctx context.Context, path string, w io.Writer) (int64, error) {
	resp, err := c.request(ctx, "GET", path, nil)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return 0, decodeError(resp)
	}
	n, err := io.Copy(w, resp.Body)
	if err != nil {
		return n, fmt.Errorf("download: %w", err)
	}
	if t := resp.Trailer.Get(api.ErrorTrailer); t != "" {
		var ae api.Error
		if json.Unmarshal([]byte(t), &ae) == nil && ae.Code != "" {
			return n, &ae
		}
		return n, fmt.Errorf("download failed: %s", t)
	}
	return n, nil
}
