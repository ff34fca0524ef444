package daemon

// The files API: reading, writing, listing, removing and watching files
// in a running VM's guest, and tar streams in and out. Paths are
// absolute guest paths that the guest agent resolves; sizes are capped
// by file_max_mib in both directions.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"banger/internal/agent"
	"banger/internal/api"
)

// queryPath is the request's path parameter, checked.
func queryPath(r *http.Request) (string, error) {
	p, err := api.CheckGuestPath(r.URL.Query().Get("path"))
	if err != nil {
		return "", api.Errorf(api.CodeBadRequest, "%v", err)
	}
	return p, nil
}

// queryBool reads a flag parameter ("1", "true", ...; absent is false).
func queryBool(r *http.Request, name string) (bool, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, api.Errorf(api.CodeBadRequest, "%s=%q: want 1 or 0", name, v)
	}
	return b, nil
}

// fileAgent checks the path and returns the VM's agent for it.
func (s *Server) fileAgent(r *http.Request) (*agent.Client, string, error) {
	p, err := queryPath(r)
	if err != nil {
		return nil, "", err
	}
	c, err := s.VMs.FileAgent(r.Context(), r.PathValue("name"))
	if err != nil {
		return nil, "", err
	}
	return c, p, nil
}

// tooLarge says that something is over file_max_mib.
func (s *Server) tooLarge(what string) error {
	return api.Errorf(api.CodeBadRequest, "%s is over the %d MiB limit (file_max_mib in the daemon's config)", what, s.VMs.FileMax()>>20)
}

// limitBody caps a request body at file_max_mib; a body announced larger
// is refused before anything reaches the guest.
func (s *Server) limitBody(w http.ResponseWriter, r *http.Request) (io.Reader, error) {
	max := s.VMs.FileMax()
	if r.ContentLength > max {
		return nil, s.tooLarge(fmt.Sprintf("the body (%d bytes)", r.ContentLength))
	}
	return http.MaxBytesReader(w, r.Body, max), nil
}

// sizeError turns a failure caused by an over-long body or guest answer
// into a clear one.
func (s *Server) sizeError(err error) error {
	var mbe *http.MaxBytesError
	var se *agent.SizeError
	switch {
	case errors.As(err, &mbe):
		return s.tooLarge("the body")
	case errors.As(err, &se):
		if se.Size >= 0 {
			return s.tooLarge(fmt.Sprintf("%s (%d bytes)", se.What, se.Size))
		}
		return s.tooLarge(se.What)
	}
	return err
}

func (s *Server) fileStat(w http.ResponseWriter, r *http.Request) error {
	c, p, err := s.fileAgent(r)
	if err != nil {
		return err
	}
	fi, err := c.FileStat(r.Context(), p)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, fi)
	return nil
}

func (s *Server) fileList(w http.ResponseWriter, r *http.Request) error {
	c, p, err := s.fileAgent(r)
	if err != nil {
		return err
	}
	l, err := c.FileList(r.Context(), p, api.MaxListEntries)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, l)
	return nil
}

func (s *Server) fileRemove(w http.ResponseWriter, r *http.Request) error {
	recursive, err := queryBool(r, "recursive")
	if err != nil {
		return err
	}
	c, p, err := s.fileAgent(r)
	if err != nil {
		return err
	}
	if err := c.FileRemove(r.Context(), p, recursive); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, struct{}{})
	return nil
}

func (s *Server) fileMkdir(w http.ResponseWriter, r *http.Request) error {
	var p api.MkdirParams
	if err := decode(r, &p); err != nil {
		return err
	}
	path, err := api.CheckGuestPath(p.Path)
	if err != nil {
		return api.Errorf(api.CodeBadRequest, "%v", err)
	}
	if _, err := api.ParseMode(p.Mode, 0o755); err != nil {
		return api.Errorf(api.CodeBadRequest, "%v", err)
	}
	c, err := s.VMs.FileAgent(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	fi, err := c.FileMkdir(r.Context(), path, p.Mode, p.Parents)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, fi)
	return nil
}

// fileRead streams a guest file. With its size known the answer has a
// Content-Length and a failure midway cuts the connection; a file whose
// size the guest does not know (/proc) is sent chunked, a failure then
// reported in the X-Banger-Error trailer.
func (s *Server) fileRead(w http.ResponseWriter, r *http.Request) error {
	c, p, err := s.fileAgent(r)
	if err != nil {
		return err
	}
	fi, rc, err := c.FileRead(r.Context(), p, s.VMs.FileMax())
	if err != nil {
		return s.sizeError(err)
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set(api.HeaderFileMode, fi.Mode)
	if fi.Size > 0 {
		w.Header().Set("Content-Length", strconv.FormatInt(fi.Size, 10))
	} else {
		w.Header().Set("Trailer", api.ErrorTrailer)
	}
	w.WriteHeader(http.StatusOK)
	if _, err := io.Copy(w, rc); err != nil {
		s.streamFailed(w, r, "file read", s.sizeError(err), fi.Size > 0)
	}
	return nil
}

// streamFailed reports a failure after the answer started: in the error
// trailer, or by cutting the connection when the length was announced.
func (s *Server) streamFailed(w http.ResponseWriter, r *http.Request, what string, err error, cut bool) {
	ae := s.toAPIError(err, opID(r.Context()))
	s.Log.Warn(what+" failed", "op", ae.OpID, "vm", r.PathValue("name"), "path", r.URL.Query().Get("path"), "err", ae.Message)
	if cut {
		panic(http.ErrAbortHandler)
	}
	b, _ := json.Marshal(ae)
	w.Header().Set(api.ErrorTrailer, string(b))
}

// fileWrite writes the body to a guest file, atomically.
func (s *Server) fileWrite(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	mode := q.Get("mode")
	if _, err := api.ParseMode(mode, 0o644); err != nil {
		return api.Errorf(api.CodeBadRequest, "%v", err)
	}
	parents, err := queryBool(r, "parents")
	if err != nil {
		return err
	}
	body, err := s.limitBody(w, r)
	if err != nil {
		return err
	}
	c, p, err := s.fileAgent(r)
	if err != nil {
		return err
	}
	fi, err := c.FileWrite(r.Context(), p, mode, parents, body)
	if err != nil {
		return s.sizeError(err)
	}
	writeJSON(w, http.StatusOK, fi)
	return nil
}

// fileWatch streams the guest's file events as NDJSON: a ready line once
// the watch is armed, then one line per event, until the client goes.
func (s *Server) fileWatch(w http.ResponseWriter, r *http.Request) error {
	recursive, err := queryBool(r, "recursive")
	if err != nil {
		return err
	}
	c, p, err := s.fileAgent(r)
	if err != nil {
		return err
	}
	wt, err := c.FileWatch(r.Context(), p, recursive)
	if err != nil {
		return err
	}
	defer wt.Close()
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	fl, _ := w.(http.Flusher)
	enc := json.NewEncoder(w)
	ev := api.FileEvent{Op: api.FileOpReady, Path: p}
	for {
		if err := enc.Encode(ev); err != nil {
			return nil
		}
		if fl != nil {
			fl.Flush()
		}
		if ev, err = wt.Next(); err != nil {
			if r.Context().Err() == nil {
				s.Log.Warn("file watch ended", "op", opID(r.Context()), "vm", r.PathValue("name"), "path", p, "err", err)
			}
			return nil
		}
	}
}

// archiveGet streams a tar of a guest path; a failure midway is reported
// in the X-Banger-Error trailer.
func (s *Server) archiveGet(w http.ResponseWriter, r *http.Request) error {
	c, p, err := s.fileAgent(r)
	if err != nil {
		return err
	}
	_, rc, err := c.FileArchive(r.Context(), p, s.VMs.FileMax())
	if err != nil {
		return err
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "application/x-tar")
	w.Header().Set("Trailer", api.ErrorTrailer)
	w.WriteHeader(http.StatusOK)
	if _, err := io.Copy(w, rc); err != nil {
		s.streamFailed(w, r, "archive", s.sizeError(err), false)
	}
	return nil
}

// archivePut extracts the body, a tar stream, under a guest directory.
func (s *Server) archivePut(w http.ResponseWriter, r *http.Request) error {
	body, err := s.limitBody(w, r)
	if err != nil {
		return err
	}
	c, p, err := s.fileAgent(r)
	if err != nil {
		return err
	}
	res, err := c.FileExtract(r.Context(), p, body)
	if err != nil {
		return s.sizeError(err)
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}
