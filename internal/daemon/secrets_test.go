package daemon

import (
	"bytes"
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
	"banger/internal/secrets"
)

// The secret routes: values go in, only names come out; bad names and
// oversized values are refused and nothing is written.
func TestSecretRoutes(t *testing.T) {
	dir := t.TempDir()
	st, err := secrets.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	h := (&Server{VMs: newFakeVMs(), Images: &fakeImages{}, Secrets: st,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}).Handler()
	do := func(method, path, body string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, "/v1"+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w
	}
	val, _ := json.Marshal(api.SecretSetParams{Value: []byte("sk-real-value")})
	if w := do("PUT", "/secrets/MY_KEY", string(val)); w.Code != http.StatusNoContent {
		t.Fatalf("set: %d %s", w.Code, w.Body)
	}
	w := do("GET", "/secrets", "")
	if w.Code != 200 || !strings.Contains(w.Body.String(), `"MY_KEY"`) || strings.Contains(w.Body.String(), "sk-real") {
		t.Fatalf("list: %d %s", w.Code, w.Body)
	}
	if got, _ := st.Get("MY_KEY"); !bytes.Equal(got, []byte("sk-real-value")) {
		t.Fatalf("stored %q", got)
	}
	bigVal, _ := json.Marshal(api.SecretSetParams{Value: make([]byte, api.MaxSecretBytes+1)})
	for _, c := range []struct{ path, body string }{
		{"/secrets/..%2Fescape", string(val)},
		{"/secrets/.hidden", string(val)},
		{"/secrets/K", `{"value":""}`},
		{"/secrets/K", `{"value":"c2s=","extra":1}`},
		{"/secrets/K", string(bigVal)},
	} {
		if w := do("PUT", c.path, c.body); w.Code/100 != 4 {
			t.Errorf("PUT %s: %d %s", c.path, w.Code, w.Body)
		}
	}
	if entries, _ := os.ReadDir(filepath.Join(dir, "secrets")); len(entries) != 1 {
		t.Errorf("secret files: %v", entries)
	}
	if w := do("DELETE", "/secrets/MY_KEY", ""); w.Code != http.StatusNoContent {
		t.Fatalf("rm: %d %s", w.Code, w.Body)
	}
	if w := do("DELETE", "/secrets/MY_KEY", ""); w.Code != http.StatusNotFound {
		t.Errorf("rm again: %d %s", w.Code, w.Body)
	}
}
