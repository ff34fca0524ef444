// Package daemon is bangerd's API server: it routes the versioned
// HTTP+JSON API on the Unix socket to the VM manager and the image service,
// gives every request an operation id, and turns failures into coded
// errors that name that id.
package daemon

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"banger/internal/agent"
	"banger/internal/api"
	"banger/internal/catalog"
	"banger/internal/image"
	"banger/internal/model"
	"banger/internal/store"
	"banger/internal/vm"
)

// VMManager is what the API needs of the VM manager (*vm.Manager): the
// calls its routes make, so that handler tests can fake it.
type VMManager interface {
	List(ctx context.Context) ([]*model.VM, error)
	Get(ctx context.Context, ref string) (*model.VM, error)
	// ListWithMemory and Show add running VMs' memory use.
	ListWithMemory(ctx context.Context) ([]*model.VM, error)
	Show(ctx context.Context, ref string) (*model.VM, error)
	// CheckCreate checks a create's own parameters; Create makes the VM
	// from an image already resolved (see Server.createVM).
	CheckCreate(p api.VMCreateParams) error
	Create(ctx context.Context, p api.VMCreateParams, img *model.Image, progress vm.Progress) (*model.VM, error)
	Start(ctx context.Context, ref string, progress vm.Progress) (*model.VM, error)
	Restart(ctx context.Context, ref string, progress vm.Progress) (*model.VM, error)
	Stop(ctx context.Context, ref string) (*model.VM, error)
	Kill(ctx context.Context, ref string, sig syscall.Signal) (*model.VM, error)
	// Pause stops a VM's vCPUs; Resume continues them and sets the
	// guest's clock.
	Pause(ctx context.Context, ref string) (*model.VM, error)
	Resume(ctx context.Context, ref string) (*model.VM, error)
	// Snapshots: take, list, show, remove.
	CreateSnapshot(ctx context.Context, p api.SnapshotCreateParams) (*model.Snapshot, error)
	Snapshots(ctx context.Context) ([]*model.Snapshot, error)
	GetSnapshot(ctx context.Context, ref string) (*model.Snapshot, error)
	DeleteSnapshot(ctx context.Context, ref string) error
	Delete(ctx context.Context, ref string) error
	Set(ctx context.Context, ref string, p api.VMSetParams) (*model.VM, error)
	Prune(ctx context.Context) ([]string, error)
	// Logs and Export return streams the caller closes: a guest's
	// console and patch are never held in memory.
	Logs(ctx context.Context, ref string) (io.ReadCloser, error)
	Ports(ctx context.Context, ref string) ([]agent.PortInfo, error)
	// Readiness: how far the guest has booted; WaitReady waits for a level.
	Readiness(ctx context.Context, ref string) (api.Readiness, error)
	WaitReady(ctx context.Context, ref, level string, timeout time.Duration) (api.Readiness, error)
	// The streams: exec, workspace upload, sessions.
	OpenExec(ctx context.Context, ref string, p api.ExecParams) (net.Conn, error)
	OpenUntar(ctx context.Context, ref, dir string, clean bool) (net.Conn, error)
	OpenWorkspaceUntar(ctx context.Context, ref string) (net.Conn, error)
	RecordWorkspace(ctx context.Context, ref string, p api.WorkspaceParams) error
	Export(ctx context.Context, ref, base string) (io.ReadCloser, error)
	SessionCall(ctx context.Context, ref, op string, req agent.SessionRequest) (agent.Response, error)
	OpenSession(ctx context.Context, ref, op string, req agent.SessionRequest) (net.Conn, error)
	// FileAgent is the agent of a running VM, for the files API (the
	// agent resolves and bounds the file operations); FileMax caps what
	// that API moves.
	FileAgent(ctx context.Context, ref string) (*agent.Client, error)
	FileMax() int64
}

// ImageService is what the API needs of the kernel and image service
// (*image.Service).
type ImageService interface {
	Kernels(ctx context.Context) ([]*model.Kernel, error)
	Kernel(ctx context.Context, name string) (*model.Kernel, error)
	ImportKernel(ctx context.Context, p api.KernelImportParams, progress image.Progress) (*model.Kernel, error)
	PullKernel(ctx context.Context, p api.KernelPullParams, progress image.Progress) (*api.PullResult, error)
	DeleteKernel(ctx context.Context, name string) error
	Images(ctx context.Context) ([]*model.Image, error)
	Image(ctx context.Context, name string) (*model.Image, error)
	// ResolveImage finds (pulling it when missing) the image a VM create
	// names.
	ResolveImage(ctx context.Context, ref string, progress image.Progress) (*model.Image, error)
	Build(ctx context.Context, p api.ImageBuildParams, progress image.Progress) (*model.Image, error)
	Register(ctx context.Context, p api.ImageRegisterParams) (*model.Image, error)
	PullImage(ctx context.Context, p api.ImagePullParams, progress image.Progress) (*api.PullResult, error)
	DeleteImage(ctx context.Context, name string) error
	ExportBundle(ctx context.Context, name string, w io.Writer) error
	LoadCatalog(ctx context.Context, src string) (*catalog.Catalog, error)
}

var (
	_ VMManager    = (*vm.Manager)(nil)
	_ ImageService = (*image.Service)(nil)
)

// Server serves the API.
type Server struct {
	VMs    VMManager
	Images ImageService
	// Secrets is the secret store (nil: the secret routes answer
	// unavailable).
	Secrets SecretStore
	// EgressLogs reads (and follows) VMs' egress logs; nil: none.
	EgressLogs EgressLogs
	Log        *slog.Logger
	Version    string
	Socket     string
	// Stop is called by POST /v1/daemon/stop.
	Stop func()
	// UploadIdle, when set, replaces agent.UploadIdle: how long a
	// workspace upload may go without progress either way.
	UploadIdle time.Duration

	wg sync.WaitGroup // long-lived streams (exec, run)

	// patterns records every route Handler registers (see Routes).
	patterns []string
}

type ctxKey struct{}

// opID returns the request's operation id.
func opID(ctx context.Context) string {
	id, _ := ctx.Value(ctxKey{}).(string)
	return id
}

func newOpID() string {
	var b [4]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Handler returns the routed API.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	s.patterns = nil
	h := func(pattern string, f func(w http.ResponseWriter, r *http.Request) error) {
		s.patterns = append(s.patterns, pattern)
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			id := newOpID()
			r = r.WithContext(context.WithValue(r.Context(), ctxKey{}, id))
			start := time.Now()
			err := f(w, r)
			if err != nil {
				apiErr := s.toAPIError(err, id)
				s.Log.Warn("request failed", "op", id, "method", r.Method, "path", r.URL.Path, "code", apiErr.Code, "err", apiErr.Message, "duration", time.Since(start).Round(time.Millisecond))
				if w != nil {
					writeJSON(w, httpStatus(apiErr.Code), apiErr)
				}
				return
			}
			s.Log.Debug("request", "op", id, "method", r.Method, "path", r.URL.Path, "duration", time.Since(start).Round(time.Millisecond))
		})
	}
	p := "/" + api.Version
	h("GET "+p+"/ping", s.ping)
	h("POST "+p+"/daemon/stop", s.daemonStop)

	h("GET "+p+"/vms", s.vmList)
	h("POST "+p+"/vms", s.vmCreate)
	h("POST "+p+"/vms/prune", s.vmPrune)
	h("POST "+p+"/run", s.run)
	h("GET "+p+"/secrets", s.secretList)
	h("PUT "+p+"/secrets/{secret}", s.secretSet)
	h("DELETE "+p+"/secrets/{secret}", s.secretRemove)
	h("GET "+p+"/vms/{name}", s.vmShow)
	h("DELETE "+p+"/vms/{name}", s.vmDelete)
	h("PATCH "+p+"/vms/{name}", s.vmSet)
	h("POST "+p+"/vms/{name}/start", s.vmStart)
	h("POST "+p+"/vms/{name}/stop", s.vmStop)
	h("POST "+p+"/vms/{name}/restart", s.vmRestart)
	h("POST "+p+"/vms/{name}/kill", s.vmKill)
	h("POST "+p+"/vms/{name}/pause", s.vmPause)
	h("POST "+p+"/vms/{name}/resume", s.vmResume)
	h("GET "+p+"/vms/{name}/logs", s.vmLogs)
	h("GET "+p+"/vms/{name}/egress", s.vmEgress)
	h("POST "+p+"/vms/{name}/exec", s.vmExec)
	h("POST "+p+"/vms/{name}/workspace", s.workspacePrepare)
	h("POST "+p+"/vms/{name}/workspace/export", s.workspaceExport)
	h("GET "+p+"/vms/{name}/ports", s.vmPorts)
	h("GET "+p+"/vms/{name}/readiness", s.vmReadiness)
	h("POST "+p+"/vms/{name}/wait", s.vmWait)
	h("GET "+p+"/vms/{name}/sessions", s.sessionList)
	h("POST "+p+"/vms/{name}/sessions", s.sessionStart)
	h("GET "+p+"/vms/{name}/sessions/{session}", s.sessionShow)
	h("POST "+p+"/vms/{name}/sessions/{session}/stop", s.sessionStop)
	h("POST "+p+"/vms/{name}/sessions/{session}/logs", s.sessionStream(agent.OpSessionLogs))
	h("POST "+p+"/vms/{name}/sessions/{session}/attach", s.sessionStream(agent.OpSessionAttach))

	h("GET "+p+"/vms/{name}/files", s.fileRead)
	h("PUT "+p+"/vms/{name}/files", s.fileWrite)
	h("DELETE "+p+"/vms/{name}/files", s.fileRemove)
	h("GET "+p+"/vms/{name}/files/stat", s.fileStat)
	h("GET "+p+"/vms/{name}/files/list", s.fileList)
	h("POST "+p+"/vms/{name}/files/mkdir", s.fileMkdir)
	h("GET "+p+"/vms/{name}/files/watch", s.fileWatch)
	h("GET "+p+"/vms/{name}/files/archive", s.archiveGet)
	h("PUT "+p+"/vms/{name}/files/archive", s.archivePut)

	h("GET "+p+"/snapshots", s.snapshotList)
	h("POST "+p+"/snapshots", s.snapshotCreate)
	h("GET "+p+"/snapshots/{name}", s.snapshotShow)
	h("DELETE "+p+"/snapshots/{name}", s.snapshotDelete)

	h("GET "+p+"/kernels", s.kernelList)
	h("POST "+p+"/kernels", s.kernelImport)
	h("POST "+p+"/kernels/pull", s.kernelPull)
	h("GET "+p+"/kernels/{name}", s.kernelShow)
	h("DELETE "+p+"/kernels/{name}", s.kernelDelete)

	h("GET "+p+"/images", s.imageList)
	h("POST "+p+"/images", s.imageBuild)
	h("POST "+p+"/images/register", s.imageRegister)
	h("POST "+p+"/images/pull", s.imagePull)
	h("GET "+p+"/images/{name}/bundle", s.imageBundle)
	h("GET "+p+"/catalog", s.catalogShow)
	h("GET "+p+"/images/{name}", s.imageShow)
	h("DELETE "+p+"/images/{name}", s.imageDelete)

	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		code := api.CodeUnknownMethod
		if !strings.HasPrefix(r.URL.Path, p+"/") {
			code = api.CodeBadVersion
		}
		writeJSON(w, http.StatusNotFound, &api.Error{Code: code, Message: fmt.Sprintf("no such API call: %s %s", r.Method, r.URL.Path), OpID: newOpID()})
	})
	return mux
}

func (s *Server) toAPIError(err error, id string) *api.Error {
	var ae *api.Error
	out := &api.Error{Code: api.CodeOperationFailed, Message: err.Error(), OpID: id}
	switch {
	case errors.As(err, &ae):
		out.Code = ae.Code
		if ae.Message != err.Error() {
			out.Message = err.Error()
		}
	case errors.Is(err, store.ErrNotFound):
		out.Code = api.CodeNotFound
	case errors.Is(err, store.ErrExists):
		out.Code = api.CodeAlreadyExists
	}
	return out
}

func httpStatus(code string) int {
	switch code {
	case api.CodeNotFound, api.CodeUnknownMethod, api.CodeBadVersion:
		return http.StatusNotFound
	case api.CodeAlreadyExists, api.CodeConflict, api.CodeNotRunning:
		return http.StatusConflict
	case api.CodeBadRequest:
		return http.StatusBadRequest
	case api.CodeUnauthorized:
		return http.StatusUnauthorized
	}
	return http.StatusInternalServerError
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func decode(r *http.Request, v any) error {
	if r.Body == nil {
		return nil
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return api.Errorf(api.CodeBadRequest, "bad request body: %v", err)
	}
	return nil
}

// stream answers with newline-delimited events: progress while f runs,
// then its result or error. Errors are written into the stream (the
// status is already 200), so the wrapper must not write them again.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, f func(progress vm.Progress) (any, error)) error {
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	fl, _ := w.(http.Flusher)
	var mu sync.Mutex
	enc := json.NewEncoder(w)
	send := func(ev api.Event) {
		mu.Lock()
		defer mu.Unlock()
		enc.Encode(ev)
		if fl != nil {
			fl.Flush()
		}
	}
	res, err := f(func(p api.Progress) {
		pp := p
		send(api.Event{Progress: &pp})
	})
	if err != nil {
		id := opID(r.Context())
		ae := s.toAPIError(err, id)
		s.Log.Warn("request failed", "op", id, "method", r.Method, "path", r.URL.Path, "code", ae.Code, "err", ae.Message)
		send(api.Event{Error: ae})
		return nil
	}
	send(api.Event{Result: res})
	return nil
}

func (s *Server) ping(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, api.Ping{Version: s.Version, PID: os.Getpid(), Socket: s.Socket})
	return nil
}

func (s *Server) daemonStop(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
	if s.Stop != nil {
		go s.Stop()
	}
	return nil
}

// hijack upgrades an exec or run request to the raw frame stream.
func hijack(w http.ResponseWriter) (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("connection cannot be upgraded")
	}
	conn, rw, err := hj.Hijack()
	if err != nil {
		return nil, nil, err
	}
	fmt.Fprintf(rw, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", api.Upgrade)
	if err := rw.Flush(); err != nil {
		conn.Close()
		return nil, nil, err
	}
	return conn, rw, nil
}
