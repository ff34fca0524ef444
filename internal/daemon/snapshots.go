package daemon

import (
	"net/http"

	"banger/internal/api"
)

func (s *Server) snapshotList(w http.ResponseWriter, r *http.Request) error {
	list, err := s.VMs.Snapshots(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, list)
	return nil
}

func (s *Server) snapshotCreate(w http.ResponseWriter, r *http.Request) error {
	var p api.SnapshotCreateParams
	if err := decode(r, &p); err != nil {
		return err
	}
	sn, err := s.VMs.CreateSnapshot(r.Context(), p)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, sn)
	return nil
}

func (s *Server) snapshotShow(w http.ResponseWriter, r *http.Request) error {
	sn, err := s.VMs.GetSnapshot(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, sn)
	return nil
}

func (s *Server) snapshotDelete(w http.ResponseWriter, r *http.Request) error {
	if err := s.VMs.DeleteSnapshot(r.Context(), r.PathValue("name")); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
	return nil
}
