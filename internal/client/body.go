package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
)

// DoBody makes a call whose request body is raw bytes (e.g. a file's
// content) sent as application/octet-stream, size bytes long (-1:
// unknown, sent chunked). out is decoded from JSON, or copied into when it
// is an io.Writer, or discarded when nil.
func (c *Client) DoBody(ctx context.Context, method, path string, body io.Reader, size int64, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, c.url(path), body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	req.ContentLength = size
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%w: %s: %v", ErrUnavailable, c.Socket, unwrapNet(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return decodeError(resp)
	}
	switch o := out.(type) {
	case nil:
		_, err = io.Copy(io.Discard, resp.Body)
	case io.Writer:
		_, err = io.Copy(o, resp.Body)
	default:
		err = json.NewDecoder(resp.Body).Decode(out)
	}
	return err
}
