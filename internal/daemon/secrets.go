package daemon

import (
	"errors"
	"net/http"

	"banger/internal/api"
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
