package daemon

import (
	"net/http"

	"banger/internal/agent"
)

func (s *Server) sessionStart(w http.ResponseWriter, r *http.Request) error {
	var req agent.SessionRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	resp, err := s.VMs.SessionCall(r.Context(), r.PathValue("name"), agent.OpSessionStart, req)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, resp.Session)
	return nil
}

func (s *Server) sessionList(w http.ResponseWriter, r *http.Request) error {
	resp, err := s.VMs.SessionCall(r.Context(), r.PathValue("name"), agent.OpSessionList, agent.SessionRequest{})
	if err != nil {
		return err
	}
	list := resp.Sessions
	if list == nil {
		list = []agent.SessionInfo{}
	}
	writeJSON(w, http.StatusOK, list)
	return nil
}

func (s *Server) sessionShow(w http.ResponseWriter, r *http.Request) error {
	resp, err := s.VMs.SessionCall(r.Context(), r.PathValue("name"), agent.OpSessionShow, agent.SessionRequest{Name: r.PathValue("session")})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, resp.Session)
	return nil
}

func (s *Server) sessionStop(w http.ResponseWriter, r *http.Request) error {
	var req agent.SessionRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	req.Name = r.PathValue("session")
	resp, err := s.VMs.SessionCall(r.Context(), r.PathValue("name"), agent.OpSessionStop, req)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, resp.Session)
	return nil
}

// sessionStream serves logs and attach: the agent's frame stream is
// spliced to the upgraded client connection.
func (s *Server) sessionStream(op string) func(w http.ResponseWriter, r *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		var req agent.SessionRequest
		if err := decode(r, &req); err != nil {
			return err
		}
		req.Name = r.PathValue("session")
		st, err := s.VMs.OpenSession(r.Context(), r.PathValue("name"), op, req)
		if err != nil {
			return err
		}
		return s.spliceUpgraded(w, st)
	}
}
