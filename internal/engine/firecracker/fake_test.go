package firecracker

// A fake Firecracker: it serves the API on a Unix socket, validates every
// request (and its own every response) against the published API
// definition, records what it received, and mimics the Firecracker
// behaviour the driver relies on (state machine, pre-boot-only calls,
// input files opened at configuration time, the vsock socket bound at PUT
// /vsock with the hybrid "CONNECT <port>" handshake in front of a real
// guest agent, exit on Ctrl+Alt+Del).
//
// The test binary doubles as the fake VMM process: TestMain runs the fake
// instead of the tests when fakeEnv is set, so the driver's detach,
// pidfile, adopt, kill and cleanup paths run against a real, separate
// process. The binary is started through a link called "firecracker", so
// /proc/PID/cmdline looks like the real thing. Started through a link
// called "jailer", it is a fake jailer (fakejailer_test.go) that execs
// the fake Firecracker in a jail.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"banger/internal/agent"
	"banger/internal/engine"
	"banger/internal/guest"
)

// Environment of the fake VMM process.
const (
	fakeEnv        = "BANGER_FAKE_FIRECRACKER"   // "1": run as the fake
	fakeSpecEnv    = "BANGER_FAKE_FC_SPEC"       // API definition path
	fakeRecordEnv  = "BANGER_FAKE_FC_RECORD"     // JSON lines of requests
	fakeFaultAtEnv = "BANGER_FAKE_FC_FAULT_AT"   // "PUT /drives/root"
	fakeFaultEnv   = "BANGER_FAKE_FC_FAULT"      // its fault_message
	fakeHangAtEnv  = "BANGER_FAKE_FC_HANG_AT"    // never answer this request
	fakeExitEnv    = "BANGER_FAKE_FC_EXIT_EARLY" // print this, exit 1
	// fakeSilentEnv "1": the vsock device reads a connection's CONNECT
	// line and never answers it (a guest that never comes up).
	fakeSilentEnv = "BANGER_FAKE_FC_VSOCK_SILENT"

	// daemonEnv makes the test binary a short-lived "daemon" that starts
	// the VM described by daemonSpecEnv (JSON) with the binary in
	// daemonBinEnv, prints the pid and exits without closing anything.
	daemonEnv     = "BANGER_FAKE_FC_DAEMON"
	daemonSpecEnv = "BANGER_FAKE_FC_DAEMON_SPEC"
	daemonBinEnv  = "BANGER_FAKE_FC_DAEMON_BIN"
	// daemonDriverEnv, if set, is the Driver (JSON) the daemon uses
	// instead of New(daemonBinEnv, ""); daemonWaitEnv "1" makes it wait
	// for a signal after printing the pid instead of exiting.
	daemonDriverEnv = "BANGER_FAKE_FC_DAEMON_DRIVER"
	daemonWaitEnv   = "BANGER_FAKE_FC_DAEMON_WAIT"
)

// fakeVersion is what the fake reports as vmm_version.
const fakeVersion = "1.17.0-fake"

func TestMain(m *testing.M) {
	if os.Getenv(daemonEnv) == "1" {
		os.Unsetenv(daemonEnv) // the VMM it starts is the fake
		os.Exit(runFakeDaemon())
	}
	if os.Getenv(fakeEnv) == "1" {
		if filepath.Base(os.Args[0]) == "jailer" {
			os.Exit(runFakeJailer(os.Args))
		}
		os.Exit(runFakeFirecracker(os.Args[1:]))
	}
	code := m.Run()
	reportSpecUse()
	os.Exit(code)
}

// fakeRecord is one request as the fake saw it.
type fakeRecord struct {
	PID        int             `json:"pid"`
	Method     string          `json:"method"`
	Path       string          `json:"path"`
	Operation  string          `json:"operation,omitempty"`
	Body       json.RawMessage `json:"body,omitempty"`
	Status     int             `json:"status"`
	Violations []string        `json:"violations,omitempty"`
}

// fakeVMM is the API handler.
type fakeVMM struct {
	spec    *apiSpec
	id      string
	record  func(fakeRecord)
	faultAt string
	fault   string
	hangAt  string
	// path maps a path from a request to the file the fake opens: the
	// identity, except for a jailed fake that could not chroot (not
	// root), which resolves paths inside the jail itself.
	path func(string) string
	// silent makes the vsock device swallow CONNECT lines unanswered.
	silent bool
	// ctrlAltDel is called (after the response is sent) for a
	// SendCtrlAltDel action; poweroff by the guest agent.
	ctrlAltDel func()
	poweroff   func()

	mu         sync.Mutex
	state      string
	bootSource bool
	vsock      net.Listener
}

func newFakeVMM(spec *apiSpec, id string, record func(fakeRecord)) *fakeVMM {
	return &fakeVMM{spec: spec, id: id, record: record, state: StateNotStarted, path: func(p string) string { return p }}
}

func (f *fakeVMM) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	rec := fakeRecord{PID: os.Getpid(), Method: r.Method, Path: r.URL.Path}
	if len(body) > 0 {
		if json.Valid(body) {
			rec.Body = body
		} else {
			rec.Body, _ = json.Marshal(string(body))
		}
	}
	op, violations := f.spec.checkRequest(r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Get("Content-Type"), body)
	rec.Violations = violations
	var status int
	var resp any
	var after func()
	key := r.Method + " " + r.URL.Path
	switch {
	case op == nil:
		status, resp = http.StatusBadRequest, faultBody{FaultMessage: strings.Join(violations, "; ")}
	case len(violations) > 0:
		rec.Operation = op.OperationID
		status, resp = http.StatusBadRequest, faultBody{FaultMessage: "request violates the API definition: " + strings.Join(violations, "; ")}
	case key == f.hangAt:
		rec.Operation = op.OperationID
		f.record(rec)
		<-r.Context().Done()
		return
	case key == f.faultAt:
		rec.Operation = op.OperationID
		status, resp = http.StatusBadRequest, faultBody{FaultMessage: f.fault}
	default:
		rec.Operation = op.OperationID
		status, resp, after = f.handle(op, body)
	}
	var out []byte
	if resp != nil {
		out, _ = json.Marshal(resp)
	}
	if op != nil {
		rec.Violations = append(rec.Violations, prefix("fake response: ", f.spec.checkResponse(op, status, out))...)
	}
	rec.Status = status
	f.record(rec)
	if out != nil {
		w.Header().Set("Content-Type", "application/json")
	}
	w.WriteHeader(status)
	w.Write(out)
	if after != nil {
		if fl, ok := w.(http.Flusher); ok {
			fl.Flush()
		}
		after()
	}
}

func prefix(p string, ss []string) []string {
	for i := range ss {
		ss[i] = p + ss[i]
	}
	return ss
}

// handle implements the operations, as Firecracker would, on a request
// that conforms to the definition.
func (f *fakeVMM) handle(op *operation, body []byte) (int, any, func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fault := func(format string, args ...any) (int, any, func()) {
		return http.StatusBadRequest, faultBody{FaultMessage: fmt.Sprintf(format, args...)}, nil
	}
	if f.state != StateNotStarted && strings.Contains(op.Summary, "Pre-boot only") {
		return fault("The requested operation is not supported after starting the microVM.")
	}
	switch op.OperationID {
	case "describeInstance":
		return http.StatusOK, InstanceInfo{AppName: "Firecracker", ID: f.id, State: f.state, VMMVersion: fakeVersion}, nil
	case "putGuestBootSource":
		var bs BootSource
		json.Unmarshal(body, &bs)
		for _, p := range []string{bs.KernelImagePath, bs.InitrdPath} {
			if p == "" {
				continue
			}
			// Opened as Firecracker opens them (read-only, as its
			// user, inside its jail if any).
			fl, err := os.Open(f.path(p))
			if err != nil {
				return fault("Cannot open kernel or initrd file: %v", err)
			}
			fl.Close()
		}
		f.bootSource = true
	case "putGuestDriveByID":
		var d Drive
		json.Unmarshal(body, &d)
		mode := os.O_RDWR
		if d.IsReadOnly {
			mode = os.O_RDONLY
		}
		fl, err := os.OpenFile(f.path(d.PathOnHost), mode, 0)
		if err != nil {
			return fault("Unable to create the block device: %v", err)
		}
		fl.Close()
	case "putSerialDevice":
		var s SerialDevice
		json.Unmarshal(body, &s)
		if s.SerialOutPath != "" {
			fl, err := os.OpenFile(f.path(s.SerialOutPath), os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				return fault("Failed to open serial output: %v", err)
			}
			fmt.Fprintln(fl, "fake serial console")
			fl.Close()
		}
	case "putGuestVsock":
		var v Vsock
		json.Unmarshal(body, &v)
		if f.vsock != nil {
			f.vsock.Close()
		}
		ln, err := net.Listen("unix", f.path(v.UDSPath))
		if err != nil {
			return fault("Cannot create backend for vsock device: %v", err)
		}
		f.vsock = ln
		go f.serveVsock(ln)
	case "patchVm":
		var v VM
		json.Unmarshal(body, &v)
		if f.state == StateNotStarted {
			return fault("The requested operation is not supported before starting the microVM.")
		}
		if v.State == VMPaused {
			f.state = StatePaused
		} else {
			f.state = StateRunning
		}
	case "createSnapshot":
		var p SnapshotCreateParams
		json.Unmarshal(body, &p)
		if f.state != StatePaused {
			return fault("Cannot create snapshot: the microVM is not paused.")
		}
		for _, path := range []string{p.SnapshotPath, p.MemFilePath} {
			if err := os.WriteFile(f.path(path), []byte("fake "+filepath.Base(path)), 0o600); err != nil {
				return fault("Cannot create snapshot: %v", err)
			}
		}
	case "loadSnapshot":
		var p SnapshotLoadParams
		json.Unmarshal(body, &p)
		for _, path := range []string{p.SnapshotPath, p.MemFilePath} {
			if _, err := os.Stat(f.path(path)); err != nil {
				return fault("Cannot load snapshot: %v", err)
			}
		}
		f.state = StatePaused
		if p.ResumeVM {
			f.state = StateRunning
		}
	case "createSyncAction":
		var a InstanceActionInfo
		json.Unmarshal(body, &a)
		switch a.ActionType {
		case ActionInstanceStart:
			if f.state != StateNotStarted {
				return fault("The microVM is already running.")
			}
			if !f.bootSource {
				return fault("Cannot start microvm without kernel configuration.")
			}
			f.state = StateRunning
		case ActionSendCtrlAltDel:
			if f.state != StateRunning {
				return fault("The microVM is not running.")
			}
			return http.StatusNoContent, nil, f.ctrlAltDel
		}
	}
	return http.StatusNoContent, nil, nil
}

// serveVsock is the host side of a hybrid vsock device, with the guest
// agent behind the agent's port.
func (f *fakeVMM) serveVsock(ln net.Listener) {
	srv := &guest.Server{Log: log.New(io.Discard, "", 0), Poweroff: func(bool) error {
		if f.poweroff != nil {
			f.poweroff()
		}
		return nil
	}}
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer conn.Close()
			br := bufio.NewReader(conn)
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			port, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "CONNECT ")
			if f.silent {
				io.Copy(io.Discard, br) // until the host hangs up
				return
			}
			f.mu.Lock()
			running := f.state == StateRunning
			f.mu.Unlock()
			if !ok || port != strconv.FormatUint(uint64(agent.VsockPort), 10) || !running {
				return // as Firecracker: no listener, hang up
			}
			io.WriteString(conn, "OK 1073741824\n")
			srv.ServeConn(context.Background(), struct {
				io.Reader
				io.WriteCloser
			}{br, conn})
		}()
	}
}

// runFakeDaemon starts one VM and exits (or waits for a signal), as a
// daemon that dies would.
func runFakeDaemon() int {
	var spec engine.Spec
	if err := json.Unmarshal([]byte(os.Getenv(daemonSpecEnv)), &spec); err != nil {
		fmt.Fprintln(os.Stderr, "fake daemon:", err)
		return 1
	}
	d := New(os.Getenv(daemonBinEnv), "")
	if cfg := os.Getenv(daemonDriverEnv); cfg != "" {
		if err := json.Unmarshal([]byte(cfg), d); err != nil {
			fmt.Fprintln(os.Stderr, "fake daemon:", err)
			return 1
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	inst, err := d.Start(ctx, spec)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake daemon:", err)
		return 1
	}
	fmt.Println(inst.PID())
	if os.Getenv(daemonWaitEnv) == "1" {
		// Like a daemon in a terminal: Ctrl-C (SIGINT to the process
		// group) ends it; nothing here handles it.
		time.Sleep(time.Minute)
		return 1
	}
	return 0
}

// fcArgs returns the Firecracker arguments the fake accepts: the
// driver's and the jailer's. Anything else fails, as an unknown argument
// fails the real parser.
func fcArgs() map[string]argSpec {
	return map[string]argSpec{
		"api-sock":           {value: true, def: "/run/firecracker.socket"},
		"id":                 {value: true, def: "anonymous-instance"},
		"start-time-us":      {value: true},
		"start-time-cpu-us":  {value: true},
		"parent-cpu-time-us": {value: true},
	}
}

// runFakeFirecracker is the fake VMM process's main.
func runFakeFirecracker(args []string) int {
	a, err := parseStrictArgs(args, fcArgs())
	if err != nil {
		fmt.Printf("Arguments parsing error: %v\n\nFor more information try --help.\n", err)
		return 1
	}
	if a.has("version") {
		fmt.Printf("Firecracker v%s\n\n", fakeVersion)
		return 0
	}
	if len(a.extra) > 0 {
		fmt.Printf("Arguments parsing error: unexpected %q\n", a.extra)
		return 1
	}
	apiSock, id := a.get("api-sock"), a.get("id")
	fmt.Printf("Running Firecracker v%s (fake)\n", fakeVersion)
	if msg := os.Getenv(fakeExitEnv); msg != "" {
		fmt.Fprintln(os.Stderr, msg)
		return 1
	}
	spec, err := loadSpecFile(os.Getenv(fakeSpecEnv))
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake firecracker:", err)
		return 1
	}
	var recMu sync.Mutex
	var recFile *os.File
	if p := os.Getenv(fakeRecordEnv); p != "" {
		if recFile, err = os.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "fake firecracker:", err)
			return 1
		}
	}
	// Under the fake jailer: everything from the host is loaded and
	// open, now enter the jail.
	path := func(p string) string { return p }
	if cfg := os.Getenv(fakeJailEnv); cfg != "" {
		if path, err = enterFakeJail(cfg); err != nil {
			fmt.Fprintln(os.Stderr, "fake firecracker:", err)
			return 1
		}
	}
	f := newFakeVMM(spec, id, func(r fakeRecord) {
		if recFile == nil {
			return
		}
		b, _ := json.Marshal(r)
		recMu.Lock()
		recFile.Write(append(b, '\n'))
		recMu.Unlock()
	})
	f.faultAt, f.fault, f.hangAt = os.Getenv(fakeFaultAtEnv), os.Getenv(fakeFaultEnv), os.Getenv(fakeHangAtEnv)
	f.path, f.silent = path, os.Getenv(fakeSilentEnv) == "1"
	exit := func() {
		go func() {
			time.Sleep(50 * time.Millisecond)
			os.Exit(0)
		}()
	}
	f.ctrlAltDel, f.poweroff = exit, exit
	ln, err := net.Listen("unix", path(apiSock))
	if err != nil {
		fmt.Fprintln(os.Stderr, "Failed to open the API socket:", err)
		return 1
	}
	srv := &http.Server{Handler: f, ReadHeaderTimeout: 10 * time.Second}
	if err := srv.Serve(ln); err != nil {
		fmt.Fprintln(os.Stderr, "fake firecracker:", err)
		return 1
	}
	return 0
}
