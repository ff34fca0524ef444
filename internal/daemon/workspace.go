package daemon

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"banger/internal/agent"
	"banger/internal/api"
)

// relayUpload forwards a tar stream (stdin frames from the client, ended
// by an empty one) to an agent untar stream and returns the agent's
// verdict. Nothing moving for idle, in either direction (a guest that
// stopped reading or never answers, a client that stopped sending),
// ends it with an error wrapping agent.ErrIdle.
func relayUpload(client io.Reader, raw net.Conn, idle time.Duration) (agent.ExitStatus, error) {
	st := agent.IdleConn(raw, idle)
	defer st.Close()
	fw := agent.NewFrameWriter(st)
	errc := make(chan error, 1)
	go func() {
		for {
			t, p, err := agent.ReadFrame(client)
			if err != nil {
				errc <- fmt.Errorf("client stream: %w", err)
				st.Close()
				return
			}
			if t != agent.FrameStdin {
				continue
			}
			if err := fw.Write(t, p); err != nil {
				errc <- fmt.Errorf("guest stream: %w", err)
				return
			}
			if len(p) == 0 {
				errc <- nil
				return
			}
		}
	}()
	for {
		t, p, err := agent.ReadFrame(st)
		if err != nil {
			// The client side's error, when it ended first, says more
			// (it closes the guest stream); a client that merely stopped
			// sending is not waited for.
			select {
			case cerr := <-errc:
				if cerr != nil {
					return agent.ExitStatus{}, cerr
				}
			default:
			}
			return agent.ExitStatus{}, fmt.Errorf("guest stream: %w", err)
		}
		if t == agent.FrameExit {
			var es agent.ExitStatus
			json.Unmarshal(p, &es)
			return es, nil
		}
	}
}

// workspaceVerdict turns the agent's answer to a workspace upload into
// an error, when it is one.
func workspaceVerdict(es agent.ExitStatus, vm string) error {
	switch {
	case es.Code != 0:
		return fmt.Errorf("extract workspace in the guest: %s", es.Error)
	case !es.Workspace:
		return api.Errorf(api.CodeOperationFailed, "vm %q runs a guest agent older than this banger, which cannot take a workspace: restart the VM (banger vm restart %s) to update it", vm, vm)
	}
	return nil
}

// uploadIdle is how long a relayed upload may go without progress.
func (s *Server) uploadIdle() time.Duration {
	if s.UploadIdle > 0 {
		return s.UploadIdle
	}
	return agent.UploadIdle
}

// workspacePrepare receives a workspace tar stream over an upgraded
// connection and extracts it at /root/repo in the guest.
func (s *Server) workspacePrepare(w http.ResponseWriter, r *http.Request) error {
	var p api.WorkspaceParams
	if err := decode(r, &p); err != nil {
		return err
	}
	if p.Path == "" {
		return api.Errorf(api.CodeBadRequest, "workspace path is required")
	}
	name := r.PathValue("name")
	st, err := s.VMs.OpenWorkspaceUntar(r.Context(), name)
	if err != nil {
		return err
	}
	defer st.Close()
	conn, rw, err := hijack(w)
	if err != nil {
		return err
	}
	defer conn.Close()
	fw := agent.NewFrameWriter(conn)
	es, err := relayUpload(rw.Reader, st, s.uploadIdle())
	if err != nil {
		err = fmt.Errorf("send workspace %s to vm %q: %w", p.Path, name, err)
	}
	if err == nil {
		err = workspaceVerdict(es, name)
	}
	if err == nil {
		err = s.VMs.RecordWorkspace(r.Context(), name, p)
	}
	if err != nil {
		ae := s.toAPIError(err, opID(r.Context()))
		s.Log.Warn("workspace prepare failed", "op", ae.OpID, "vm", name, "err", ae.Message)
		fw.WriteJSON(agent.FrameError, ae)
		return nil
	}
	s.Log.Info("workspace prepared", "vm", name, "path", p.Path, "files", p.Files, "bytes", p.Bytes)
	fw.WriteJSON(agent.FrameExit, agent.ExitStatus{})
	return nil
}

func (s *Server) workspaceExport(w http.ResponseWriter, r *http.Request) error {
	var p api.ExportParams
	if err := decode(r, &p); err != nil {
		return err
	}
	patch, err := s.VMs.Export(r.Context(), r.PathValue("name"), p.BaseCommit)
	if err != nil {
		return err
	}
	defer patch.Close()
	w.Header().Set("Content-Type", "text/x-diff")
	if f, ok := patch.(interface{ Stat() (os.FileInfo, error) }); ok {
		if fi, err := f.Stat(); err == nil {
			w.Header().Set("Content-Length", strconv.FormatInt(fi.Size(), 10))
		}
	}
	io.Copy(w, patch)
	return nil
}
