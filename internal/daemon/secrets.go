package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"banger/internal/api"
	"banger/internal/egress/egresslog"
	"banger/internal/egress/policy"
	"banger/internal/secrets"
)

// SecretStore is the daemon's secret store (*secrets.Store): values
// never leave the daemon except towards the hosts a VM's policy binds
// them to, through the egress proxy.
type SecretStore interface {
	Set(name string, value []byte) error
	List() ([]string, error)
	Remove(name string) error
}

func (s *Server) secretStore() (SecretStore, error) {
	if s.Secrets == nil {
		return nil, api.Errorf(api.CodeOperationFailed, "this daemon has no secret store")
	}
	return s.Secrets, nil
}

func (s *Server) secretList(w http.ResponseWriter, r *http.Request) error {
	st, err := s.secretStore()
	if err != nil {
		return err
	}
	names, err := st.List()
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, api.SecretList{Names: names})
	return nil
}

func (s *Server) secretSet(w http.ResponseWriter, r *http.Request) error {
	st, err := s.secretStore()
	if err != nil {
		return err
	}
	name := r.PathValue("secret")
	if !policy.ValidSecretName(name) {
		return api.Errorf(api.CodeBadRequest, "secret name %q: want 1-64 letters, digits, _ . - (not starting with . or -)", name)
	}
	r.Body = http.MaxBytesReader(w, r.Body, 2*api.MaxSecretBytes)
	var p api.SecretSetParams
	if err := decode(r, &p); err != nil {
		return err
	}
	if len(p.Value) == 0 {
		return api.Errorf(api.CodeBadRequest, "secret %q: empty value", name)
	}
	if len(p.Value) > api.MaxSecretBytes {
		return api.Errorf(api.CodeBadRequest, "secret %q: larger than %d bytes", name, api.MaxSecretBytes)
	}
	if err := st.Set(name, p.Value); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) secretRemove(w http.ResponseWriter, r *http.Request) error {
	st, err := s.secretStore()
	if err != nil {
		return err
	}
	name := r.PathValue("secret")
	if !policy.ValidSecretName(name) {
		return api.Errorf(api.CodeBadRequest, "secret name %q: want 1-64 letters, digits, _ . - (not starting with . or -)", name)
	}
	if err := st.Remove(name); err != nil {
		if errors.Is(err, secrets.ErrNotFound) {
			return api.Errorf(api.CodeNotFound, "no secret %q", name)
		}
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// EgressLogs gives a VM's egress records, oldest first; with follow, new
// ones as they come until ctx ends.
type EgressLogs interface {
	Records(ctx context.Context, ref string, follow bool, fn func(egresslog.Record) error) error
}

// vmEgress answers with the VM's egress records as newline-delimited
// JSON (?follow=1: and keeps streaming new ones).
func (s *Server) vmEgress(w http.ResponseWriter, r *http.Request) error {
	if s.EgressLogs == nil {
		return api.Errorf(api.CodeOperationFailed, "this daemon keeps no egress logs")
	}
	follow := r.URL.Query().Get("follow") == "1"
	fl, _ := w.(http.Flusher)
	started := false
	enc := json.NewEncoder(w)
	err := s.EgressLogs.Records(r.Context(), r.PathValue("name"), follow, func(rec egresslog.Record) error {
		if !started {
			w.Header().Set("Content-Type", "application/x-ndjson")
			w.WriteHeader(http.StatusOK)
			started = true
		}
		if err := enc.Encode(rec); err != nil {
			return err
		}
		if fl != nil && follow {
			fl.Flush()
		}
		return nil
	})
	if err != nil && !started {
		return err
	}
	if !started {
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
	}
	return nil
}
