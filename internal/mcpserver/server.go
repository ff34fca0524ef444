// Package mcpserver serves banger sandboxes to coding agents over the
// Model Context Protocol (banger mcp): tools to create a sandbox, run
// commands in it, read and write its files, ship an allowed host
// repository in as a workspace and take the guest's edits back as a patch,
// run long-lived sessions, and delete it. It is a client of bangerd's API
// like the CLI: it never touches the VM engines or the store itself.
//
// Every sandbox it creates is named NamePrefix+... and recorded in a state
// file; the tools only act on the sandboxes of their own MCP session, and
// those are deleted when the session ends (Cleanup; banger mcp --cleanup
// deletes every recorded one, e.g. after a crash).
package mcpserver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"banger/internal/api"
	"banger/internal/model"
)

// Daemon is what the server needs of the daemon's API (*client.Client).
type Daemon interface {
	Do(ctx context.Context, method, path string, in, out any) error
	DoBody(ctx context.Context, method, path string, body io.Reader, size int64, out any) error
	Stream(ctx context.Context, method, path string, in any, onProgress func(api.Progress), out any) error
	Upgrade(ctx context.Context, path string, in any) (net.Conn, io.Reader, error)
}

// Limits of what one tool call returns to the agent. Larger output is
// cut (commands and sessions: its first and last halves are kept; files
// and patches: the first bytes) and the answer says so.
const (
	MaxOutput       = 64 << 10 // each of a command's stdout and stderr
	MaxFileRead     = 1 << 20  // a file's content
	MaxPatch        = 1 << 20  // an exported patch
	MaxFileWrite    = 8 << 20  // a file written in one call
	DefaultTimeout  = 10 * time.Minute
	MaxTimeout      = time.Hour
	DefaultLogsTail = 64 << 10
)

// DefaultImage is the image of sandboxes created without one.
const DefaultImage = "debian"

// Options configure a Server.
type Options struct {
	Daemon Daemon
	// Allow holds the host directories workspaces may come from.
	Allow *Allowlist
	// State records the sandboxes made through MCP.
	State State
	// Image is the default image (DefaultImage when empty).
	Image   string
	Version string
	// Log receives one line per sandbox created or deleted (nil: none).
	Log io.Writer
}

// Server is one MCP session's server.
type Server struct {
	opts Options
	mcp  *mcp.Server

	mu    sync.Mutex
	owned map[string]Record // by sandbox name
}

// New makes a server with every tool registered.
func New(o Options) *Server {
	if o.Image == "" {
		o.Image = DefaultImage
	}
	if o.Allow == nil {
		o.Allow = &Allowlist{}
	}
	s := &Server{opts: o, owned: map[string]Record{}}
	s.mcp = mcp.NewServer(&mcp.Implementation{Name: "banger", Version: o.Version}, &mcp.ServerOptions{
		Instructions: "banger runs disposable Linux microVMs (sandboxes). Create one with sandbox_create, " +
			"run commands with sandbox_exec, move files with file_read/file_write/file_list, ship an allowed " +
			"host repository to /root/repo with workspace_prepare and take the edits back with workspace_export. " +
			"Sandboxes are deleted when this MCP session ends.",
	})
	s.register()
	return s
}

// MCP returns the underlying MCP server (e.g. to connect it to an
// in-memory transport in tests).
func (s *Server) MCP() *mcp.Server { return s.mcp }

// Run serves one MCP session over t until the client goes away or ctx
// ends, then deletes the sandboxes the session created.
func (s *Server) Run(ctx context.Context, t mcp.Transport) error {
	err := s.mcp.Run(ctx, t)
	if errors.Is(err, context.Canceled) || errors.Is(err, io.EOF) {
		err = nil
	}
	cctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	return errors.Join(err, s.Cleanup(cctx))
}

// Cleanup deletes every sandbox this server created and still owns.
func (s *Server) Cleanup(ctx context.Context) error {
	s.mu.Lock()
	recs := make([]Record, 0, len(s.owned))
	for _, r := range s.owned {
		recs = append(recs, r)
	}
	s.mu.Unlock()
	var errs []error
	for _, r := range recs {
		if err := s.deleteOwned(ctx, r); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// CleanupAll deletes every sandbox recorded in the state file whose VM
// still has the recorded id (whichever banger mcp process made it) and
// forgets the records; it returns the names deleted.
func CleanupAll(ctx context.Context, d Daemon, st State) ([]string, error) {
	recs, err := st.List()
	if err != nil {
		return nil, err
	}
	var deleted []string
	var errs []error
	for _, r := range recs {
		var v model.VM
		err := d.Do(ctx, "GET", vmPath(r.Name, ""), nil, &v)
		var ae *api.Error
		switch {
		case errors.As(err, &ae) && ae.Code == api.CodeNotFound, err == nil && v.ID != r.ID:
			// Gone, or the name now belongs to another VM: not ours.
		case err != nil:
			errs = append(errs, fmt.Errorf("look up sandbox %q: %w", r.Name, err))
			continue
		default:
			if err := d.Do(ctx, "DELETE", vmPath(r.Name, ""), nil, nil); err != nil {
				errs = append(errs, fmt.Errorf("delete sandbox %q: %w", r.Name, err))
				continue
			}
			deleted = append(deleted, r.Name)
		}
		if err := st.Remove(r.ID); err != nil {
			errs = append(errs, err)
		}
	}
	return deleted, errors.Join(errs...)
}

func (s *Server) logf(format string, args ...any) {
	if s.opts.Log != nil {
		fmt.Fprintf(s.opts.Log, "banger mcp: "+format+"\n", args...)
	}
}

func vmPath(name, suffix string) string { return "/vms/" + url.PathEscape(name) + suffix }

// own returns the record of a sandbox of this session, or an error that
// says the agent may not touch it.
func (s *Server) own(name string) (Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.owned[name]
	if !ok {
		return Record{}, fmt.Errorf("no sandbox %q in this MCP session: the tools only act on sandboxes created with sandbox_create here", name)
	}
	return r, nil
}

func (s *Server) deleteOwned(ctx context.Context, r Record) error {
	var v model.VM
	err := s.opts.Daemon.Do(ctx, "GET", vmPath(r.Name, ""), nil, &v)
	var ae *api.Error
	switch {
	case errors.As(err, &ae) && ae.Code == api.CodeNotFound, err == nil && v.ID != r.ID:
	case err != nil:
		return fmt.Errorf("look up sandbox %q: %w", r.Name, err)
	default:
		if err := s.opts.Daemon.Do(ctx, "DELETE", vmPath(r.Name, ""), nil, nil); err != nil {
			return fmt.Errorf("delete sandbox %q: %w", r.Name, err)
		}
		s.logf("deleted sandbox %s", r.Name)
	}
	s.mu.Lock()
	delete(s.owned, r.Name)
	s.mu.Unlock()
	return s.opts.State.Remove(r.ID)
}

func randomSuffix() string {
	var b [4]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// --- sandboxes ---

// CreateIn is sandbox_create's input.
type CreateIn struct {
	Image     string `json:"image,omitempty" jsonschema:"image to boot (default: the server's image, usually debian)"`
	Name      string `json:"name,omitempty" jsonschema:"name suffix: the sandbox is called mcp-NAME (lowercase letters, digits, dashes; default: random)"`
	VCPU      int    `json:"vcpu,omitempty" jsonschema:"virtual CPUs (default: the daemon's configuration)"`
	MemoryMiB int    `json:"memory_mib,omitempty" jsonschema:"memory in MiB (default: the daemon's configuration)"`
}

// Sandbox describes one sandbox.
type Sandbox struct {
	Name  string `json:"name" jsonschema:"the sandbox's name, passed to the other tools"`
	ID    string `json:"id"`
	Image string `json:"image"`
	State string `json:"state"`
}

// SandboxList is sandbox_list's output.
type SandboxList struct {
	Sandboxes []Sandbox `json:"sandboxes"`
}

// SandboxRef names one sandbox.
type SandboxRef struct {
	Sandbox string `json:"sandbox" jsonschema:"the sandbox's name (from sandbox_create)"`
}

// Deleted is sandbox_delete's output.
type Deleted struct {
	Deleted string `json:"deleted"`
}

func (s *Server) create(ctx context.Context, _ *mcp.CallToolRequest, in CreateIn) (*mcp.CallToolResult, Sandbox, error) {
	suffix := in.Name
	if suffix == "" {
		suffix = randomSuffix()
	}
	name := NamePrefix + suffix
	if err := model.ValidateName(name); err != nil {
		return nil, Sandbox{}, fmt.Errorf("sandbox name: %w", err)
	}
	image := in.Image
	if image == "" {
		image = s.opts.Image
	}
	var v model.VM
	p := api.VMCreateParams{Name: name, Image: image, VCPU: in.VCPU, MemoryMiB: in.MemoryMiB}
	err := s.opts.Daemon.Stream(ctx, "POST", "/vms", p, nil, &v)
	if err != nil {
		// A create that failed after the row was made (a boot failure)
		// leaves a VM behind: take it down if it carries our name.
		var left model.VM
		if s.opts.Daemon.Do(context.WithoutCancel(ctx), "GET", vmPath(name, ""), nil, &left) == nil {
			s.opts.Daemon.Do(context.WithoutCancel(ctx), "DELETE", vmPath(name, ""), nil, nil)
		}
		return nil, Sandbox{}, fmt.Errorf("create sandbox: %w", err)
	}
	r := Record{Name: v.Name, ID: v.ID, PID: os.Getpid(), CreatedAt: time.Now().UTC()}
	if err := s.opts.State.Add(r); err != nil {
		s.opts.Daemon.Do(context.WithoutCancel(ctx), "DELETE", vmPath(v.Name, ""), nil, nil)
		return nil, Sandbox{}, err
	}
	s.mu.Lock()
	s.owned[v.Name] = r
	s.mu.Unlock()
	s.logf("created sandbox %s (%s)", v.Name, v.Image)
	return nil, Sandbox{Name: v.Name, ID: v.ID, Image: v.Image, State: string(v.State)}, nil
}

func (s *Server) list(ctx context.Context, _ *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, SandboxList, error) {
	s.mu.Lock()
	names := make([]string, 0, len(s.owned))
	for n := range s.owned {
		names = append(names, n)
	}
	s.mu.Unlock()
	sort.Strings(names)
	out := SandboxList{Sandboxes: []Sandbox{}}
	for _, n := range names {
		var v model.VM
		if err := s.opts.Daemon.Do(ctx, "GET", vmPath(n, ""), nil, &v); err != nil {
			out.Sandboxes = append(out.Sandboxes, Sandbox{Name: n, State: "unknown: " + err.Error()})
			continue
		}
		out.Sandboxes = append(out.Sandboxes, Sandbox{Name: v.Name, ID: v.ID, Image: v.Image, State: string(v.State)})
	}
	return nil, out, nil
}

func (s *Server) delete(ctx context.Context, _ *mcp.CallToolRequest, in SandboxRef) (*mcp.CallToolResult, Deleted, error) {
	r, err := s.own(in.Sandbox)
	if err != nil {
		return nil, Deleted{}, err
	}
	if err := s.deleteOwned(ctx, r); err != nil {
		return nil, Deleted{}, err
	}
	return nil, Deleted{Deleted: r.Name}, nil
}

func (s *Server) register() {
	ro := func(b bool) *mcp.ToolAnnotations { return &mcp.ToolAnnotations{ReadOnlyHint: b} }
	mcp.AddTool(s.mcp, &mcp.Tool{Name: "sandbox_create", Description: "Create and boot a disposable Linux microVM (a sandbox) and return its name. It is deleted when this MCP session ends.", Annotations: ro(false)}, s.create)
	mcp.AddTool(s.mcp, &mcp.Tool{Name: "sandbox_list", Description: "List the sandboxes of this MCP session with their state.", Annotations: ro(true)}, s.list)
	mcp.AddTool(s.mcp, &mcp.Tool{Name: "sandbox_delete", Description: "Delete a sandbox of this session (it is stopped first; its disks are removed).", Annotations: ro(false)}, s.delete)
	mcp.AddTool(s.mcp, &mcp.Tool{Name: "sandbox_exec", Description: fmt.Sprintf("Run a command in a sandbox and return its exit code, stdout and stderr. The command is an argv (no shell: use [\"sh\",\"-c\",\"...\"] for pipes). Each output stream is cut to its first and last %d KiB when longer, and the answer says so (stdout_truncated, stderr_truncated).", MaxOutput>>11), Annotations: ro(false)}, s.exec)
	mcp.AddTool(s.mcp, &mcp.Tool{Name: "file_read", Description: fmt.Sprintf("Read a file in a sandbox (absolute guest path). Text comes back as utf-8, anything else as base64; at most %d KiB (or max_bytes), with truncated set when the file is longer.", MaxFileRead>>10), Annotations: ro(true)}, s.fileRead)
	mcp.AddTool(s.mcp, &mcp.Tool{Name: "file_write", Description: fmt.Sprintf("Write a file in a sandbox (absolute guest path), replacing it atomically; content is utf-8 text or base64 (encoding). At most %d MiB per call.", MaxFileWrite>>20), Annotations: ro(false)}, s.fileWrite)
	mcp.AddTool(s.mcp, &mcp.Tool{Name: "file_list", Description: "List a directory in a sandbox (absolute guest path): name, type, size, mode and modification time of each entry.", Annotations: ro(true)}, s.fileList)
	mcp.AddTool(s.mcp, &mcp.Tool{Name: "workspace_prepare", Description: "Copy a git repository from the host into the sandbox at /root/repo (tracked files, plus untracked ones on request, and a .git at HEAD). Only paths inside the directories allowed with `banger mcp --allow-path` are accepted.", Annotations: ro(false)}, s.workspacePrepare)
	mcp.AddTool(s.mcp, &mcp.Tool{Name: "workspace_export", Description: fmt.Sprintf("Return the guest's changes to /root/repo as a git patch (for git apply on the host); at most %d KiB, with truncated set when longer.", MaxPatch>>10), Annotations: ro(true)}, s.workspaceExport)
	mcp.AddTool(s.mcp, &mcp.Tool{Name: "session_start", Description: "Start a long-lived command (a session) in a sandbox; it keeps running between calls. Read its output with session_read, end it with session_stop.", Annotations: ro(false)}, s.sessionStart)
	mcp.AddTool(s.mcp, &mcp.Tool{Name: "session_read", Description: fmt.Sprintf("Return a session's state, exit status once it ended, and its recent output (the last tail_bytes, default %d KiB).", DefaultLogsTail>>10), Annotations: ro(true)}, s.sessionRead)
	mcp.AddTool(s.mcp, &mcp.Tool{Name: "session_stop", Description: "Stop a session (SIGTERM, then SIGKILL if it does not end).", Annotations: ro(false)}, s.sessionStop)
}
