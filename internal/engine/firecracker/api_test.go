package firecracker

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// startFakeAPI serves the fake on a Unix socket in-process and returns a
// client and the record of requests.
func startFakeAPI(t *testing.T, spec *apiSpec) (*Client, *fakeVMM, func() []fakeRecord) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "api.sock")
	var mu sync.Mutex
	var recs []fakeRecord
	f := newFakeVMM(spec, "api-test", func(r fakeRecord) {
		mu.Lock()
		recs = append(recs, r)
		mu.Unlock()
	})
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: f}
	go srv.Serve(ln)
	c := NewClient(sock)
	t.Cleanup(func() {
		c.Close()
		srv.Close()
		f.mu.Lock()
		if f.vsock != nil {
			f.vsock.Close()
		}
		f.mu.Unlock()
	})
	return c, f, func() []fakeRecord {
		mu.Lock()
		defer mu.Unlock()
		for _, r := range recs {
			for _, v := range r.Violations {
				t.Errorf("%s %s violates the API definition: %s", r.Method, r.Path, v)
			}
		}
		return append([]fakeRecord(nil), recs...)
	}
}

func lowerFirst(s string) string { return strings.ToLower(s[:1]) + s[1:] }

// Every client method sends what the definition's operation of the same
// name (operationId) expects, at the path and with the method it names.
func TestClientMethodsMatchOperations(t *testing.T) {
	spec, _ := loadSpec(t)
	c, _, records := startFakeAPI(t, spec)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dir := t.TempDir()
	kernel := filepath.Join(dir, "vmlinux")
	writeFile(t, kernel, "k")
	calls := []struct {
		method string
		call   func() error
	}{
		{"DescribeInstance", func() error { _, err := c.DescribeInstance(ctx); return err }},
		{"PutMachineConfiguration", func() error {
			return c.PutMachineConfiguration(ctx, MachineConfiguration{VCPUCount: 1, MemSizeMiB: 128})
		}},
		{"PutGuestBootSource", func() error { return c.PutGuestBootSource(ctx, BootSource{KernelImagePath: kernel}) }},
		{"PutSerialDevice", func() error { return c.PutSerialDevice(ctx, SerialDevice{}) }},
		{"PutGuestDriveByID", func() error {
			return c.PutGuestDriveByID(ctx, Drive{DriveID: "d1", PathOnHost: kernel, CacheType: CacheUnsafe, IsReadOnly: true})
		}},
		{"PutGuestNetworkInterfaceByID", func() error {
			return c.PutGuestNetworkInterfaceByID(ctx, NetworkInterface{IfaceID: "eth0", HostDevName: "tap0"})
		}},
		{"PutGuestVsock", func() error {
			return c.PutGuestVsock(ctx, Vsock{GuestCID: 42, UDSPath: filepath.Join(dir, "v.sock")})
		}},
		{"PutBalloon", func() error {
			return c.PutBalloon(ctx, Balloon{AmountMiB: 0, DeflateOnOOM: true, FreePageReporting: true})
		}},
		{"CreateSyncAction", func() error { return c.CreateSyncAction(ctx, InstanceActionInfo{ActionType: ActionInstanceStart}) }},
		{"PatchVm", func() error { return c.PatchVm(ctx, VM{State: VMPaused}) }},
		{"CreateSnapshot", func() error {
			return c.CreateSnapshot(ctx, SnapshotCreateParams{MemFilePath: filepath.Join(dir, "mem"), SnapshotPath: filepath.Join(dir, "state"), SnapshotType: SnapshotFull})
		}},
		{"PatchVm", func() error { return c.PatchVm(ctx, VM{State: VMResumed}) }},
	}
	// Each is a method of Client, so a renamed method fails here.
	ct := reflect.TypeOf(c)
	for _, call := range calls {
		if _, ok := ct.MethodByName(call.method); !ok {
			t.Fatalf("Client has no method %s", call.method)
		}
		if err := call.call(); err != nil {
			t.Errorf("%s: %v", call.method, err)
		}
	}
	recs := records()
	if len(recs) != len(calls) {
		t.Fatalf("%d requests for %d calls", len(recs), len(calls))
	}
	for i, r := range recs {
		if want := lowerFirst(calls[i].method); r.Operation != want {
			t.Errorf("%s sent %s %s, which is operation %q", calls[i].method, r.Method, r.Path, r.Operation)
		}
	}
	if info, err := c.DescribeInstance(ctx); err != nil || info.State != StateRunning || info.ID != "api-test" {
		t.Errorf("after InstanceStart: %+v, %v", info, err)
	}
	// Firecracker's behaviour, as the fake models it: pre-boot calls
	// fail once the guest runs, with the fault message verbatim.
	err := c.PutMachineConfiguration(ctx, MachineConfiguration{VCPUCount: 1, MemSizeMiB: 128})
	if err == nil || err.Error() != "firecracker: PUT /machine-config: 400: The requested operation is not supported after starting the microVM." {
		t.Errorf("pre-boot call after start: %v", err)
	}
}

// A fault_message reaches the caller verbatim, in the error's text and as
// a typed APIError; non-conforming error bodies are still reported.
func TestAPIErrors(t *testing.T) {
	spec, _ := loadSpec(t)
	c, f, records := startFakeAPI(t, spec)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	const msg = `Invalid block device path: "/nope" (os error 2)`
	f.faultAt, f.fault = "PUT /drives/root", msg
	err := c.PutGuestDriveByID(ctx, Drive{DriveID: "root", PathOnHost: "/nope"})
	if err == nil || err.Error() != "firecracker: PUT /drives/root: 400: "+msg {
		t.Fatalf("error %v", err)
	}
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 400 || apiErr.FaultMessage != msg || apiErr.Method != "PUT" || apiErr.Path != "/drives/root" {
		t.Errorf("APIError %+v", apiErr)
	}
	if recs := records(); len(recs) != 1 || recs[0].Status != 400 {
		t.Errorf("records %+v", recs)
	}

	// Bodies outside the Error shape, from something that is not a
	// conforming Firecracker.
	for _, tc := range []struct {
		status int
		body   string
		want   string
	}{
		{500, "", "firecracker: GET /: 500: internal server error"},
		{404, "no such thing\n", "firecracker: GET /: 404: no such thing"},
		{400, `{"error":"x"}`, `firecracker: GET /: 400: {"error":"x"}`},
	} {
		sock := filepath.Join(t.TempDir(), "odd.sock")
		ln, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(tc.status)
			w.Write([]byte(tc.body))
		})}
		go srv.Serve(ln)
		_, err = NewClient(sock).DescribeInstance(ctx)
		srv.Close()
		if err == nil || err.Error() != tc.want {
			t.Errorf("status %d body %q: %v, want %q", tc.status, tc.body, err, tc.want)
		}
	}

	// No server at all: a transport error naming the call.
	_, err = NewClient(filepath.Join(t.TempDir(), "none.sock")).DescribeInstance(ctx)
	if err == nil || !strings.HasPrefix(err.Error(), "firecracker: GET /: dial unix") {
		t.Errorf("no socket: %v", err)
	}
}

// The Go types mirror the definitions: every JSON field is a property of
// the same type, every required property has a field, and a request
// type never omits a required property.
func TestTypesMirrorDefinitions(t *testing.T) {
	spec, _ := loadSpec(t)
	types := []struct {
		v       any
		def     string
		request bool
	}{
		{MachineConfiguration{}, "MachineConfiguration", true},
		{BootSource{}, "BootSource", true},
		{Drive{}, "Drive", true},
		{NetworkInterface{}, "NetworkInterface", true},
		{Vsock{}, "Vsock", true},
		{Balloon{}, "Balloon", true},
		{SerialDevice{}, "SerialDevice", true},
		{InstanceActionInfo{}, "InstanceActionInfo", true},
		{VM{}, "Vm", true},
		{SnapshotCreateParams{}, "SnapshotCreateParams", true},
		{InstanceInfo{}, "InstanceInfo", false},
		{faultBody{}, "Error", false},
	}
	for _, ty := range types {
		rt := reflect.TypeOf(ty.v)
		def := spec.definition(ty.def)
		fields := map[string]bool{}
		for i := 0; i < rt.NumField(); i++ {
			f := rt.Field(i)
			name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
			fields[name] = true
			prop, ok := def.Properties[name]
			if !ok {
				t.Errorf("%s.%s: %q is not a property of %s", rt.Name(), f.Name, name, ty.def)
				continue
			}
			prop, err := spec.resolve(prop)
			if err != nil {
				t.Fatal(err)
			}
			wantKind := map[string][]reflect.Kind{
				"string":  {reflect.String},
				"boolean": {reflect.Bool},
				"integer": {reflect.Int, reflect.Int32, reflect.Int64, reflect.Uint32, reflect.Uint64},
			}[prop.Type]
			if !contains(wantKind, f.Type.Kind()) {
				t.Errorf("%s.%s is %s; %s.%s is %q", rt.Name(), f.Name, f.Type.Kind(), ty.def, name, prop.Type)
			}
			if ty.request && contains(def.Required, name) && strings.Contains(opts, "omitempty") {
				t.Errorf("%s.%s: required property %q must not be omitempty", rt.Name(), f.Name, name)
			}
		}
		for _, r := range def.Required {
			if !fields[r] {
				t.Errorf("%s lacks required property %q of %s", rt.Name(), r, ty.def)
			}
		}
	}

	// Constants are enum members, limits match.
	enum := func(def, prop string) []string {
		p, _ := spec.resolve(spec.definition(def).Properties[prop])
		var out []string
		for _, e := range p.Enum {
			out = append(out, e.(string))
		}
		return out
	}
	for _, c := range []struct {
		def, prop string
		vals      []string
	}{
		{"InstanceActionInfo", "action_type", []string{ActionFlushMetrics, ActionInstanceStart, ActionSendCtrlAltDel}},
		{"InstanceInfo", "state", []string{StateNotStarted, StateRunning, StatePaused}},
		{"Drive", "cache_type", []string{CacheUnsafe, CacheWriteback}},
	} {
		have := enum(c.def, c.prop)
		for _, v := range c.vals {
			if !contains(have, v) {
				t.Errorf("%q is not in %s.%s's enum %q", v, c.def, c.prop, have)
			}
		}
	}
	if max := spec.definition("MachineConfiguration").Properties["vcpu_count"].Maximum; max == nil || int(*max) != MaxVCPU {
		t.Errorf("MaxVCPU %d, definition maximum %v", MaxVCPU, max)
	}
	if min := spec.definition("Vsock").Properties["guest_cid"].Minimum; min == nil || *min > 3 {
		t.Errorf("default guest CID 3 below the definition's minimum %v", min)
	}
}

func contains[T comparable](s []T, v T) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// The validator is not vacuous: it catches each kind of violation.
func TestValidatorCatchesViolations(t *testing.T) {
	spec, _ := loadSpec(t)
	const ct = "application/json"
	cases := []struct {
		name, method, path, ctype, body string
		want                            string // "" = valid
	}{
		{"valid drive", "PUT", "/drives/root", ct, `{"drive_id":"root","path_on_host":"/r","is_root_device":false,"is_read_only":false,"cache_type":"Writeback"}`, ""},
		{"valid mmds contents (additionalProperties)", "PUT", "/mmds", ct, `{"anything":{"goes":[1,2]}}`, ""},
		{"valid machine-config without body (not required)", "PUT", "/machine-config", "", ``, ""},
		{"unknown path", "PUT", "/drive/root", ct, `{}`, "path /drive/root is not in the API definition"},
		{"unknown method", "DELETE", "/drives/root", ct, ``, "allows only PATCH, PUT"},
		{"query string", "GET", "/?x=1", "", ``, ""},
		{"body on GET", "GET", "/", ct, `{}`, "describeInstance takes no body"},
		{"missing body", "PUT", "/drives/root", ct, ``, "body body is required"},
		{"wrong content type", "PUT", "/vsock", "text/plain", `{"guest_cid":3,"uds_path":"/v"}`, `content type "text/plain"`},
		{"not JSON", "PUT", "/vsock", ct, `{"guest_cid":3,`, "body: unexpected EOF"},
		{"trailing data", "PUT", "/vsock", ct, `{"guest_cid":3,"uds_path":"/v"} {}`, "trailing data"},
		{"missing required", "PUT", "/drives/root", ct, `{"drive_id":"root","path_on_host":"/r"}`, `body: required property "is_root_device" is missing`},
		{"unknown property", "PUT", "/drives/root", ct, `{"drive_id":"root","is_root_device":false,"path":"/r"}`, "body.path: unknown property"},
		{"wrong type", "PUT", "/machine-config", ct, `{"vcpu_count":"2","mem_size_mib":128}`, "body.vcpu_count: want integer, got a string"},
		{"not an integer", "PUT", "/machine-config", ct, `{"vcpu_count":2.5,"mem_size_mib":128}`, "want an integer, got 2.5"},
		{"below minimum", "PUT", "/machine-config", ct, `{"vcpu_count":0,"mem_size_mib":128}`, "body.vcpu_count: 0 is below the minimum 1"},
		{"above maximum", "PUT", "/machine-config", ct, `{"vcpu_count":33,"mem_size_mib":128}`, "33 is above the maximum 32"},
		{"enum", "PUT", "/drives/root", ct, `{"drive_id":"root","is_root_device":false,"cache_type":"WriteThrough"}`, "body.cache_type: WriteThrough is not one of [Unsafe Writeback]"},
		{"enum via $ref", "PUT", "/machine-config", ct, `{"vcpu_count":1,"mem_size_mib":128,"cpu_template":"T3"}`, "body.cpu_template: T3 is not one of"},
		{"nested $ref minimum", "PUT", "/network-interfaces/eth0", ct, `{"iface_id":"eth0","host_dev_name":"t","rx_rate_limiter":{"bandwidth":{"size":-1,"refill_time":10}}}`, "body.rx_rate_limiter.bandwidth.size: -1 is below the minimum 0"},
		{"nested $ref required", "PUT", "/network-interfaces/eth0", ct, `{"iface_id":"eth0","host_dev_name":"t","tx_rate_limiter":{"ops":{"size":1}}}`, `body.tx_rate_limiter.ops: required property "refill_time" is missing`},
		{"nested unknown", "PUT", "/network-interfaces/eth0", ct, `{"iface_id":"eth0","host_dev_name":"t","rx_rate_limiter":{"bandwith":{}}}`, "body.rx_rate_limiter.bandwith: unknown property"},
		{"array items", "PUT", "/mmds/config", ct, `{"network_interfaces":["eth0",1]}`, "body.network_interfaces[1]: want a string, got a number"},
		{"int32 format", "PUT", "/cpu-config", ct, `{"cpuid_modifiers":[{"leaf":"0x1","subleaf":"0x0","flags":4294967296,"modifiers":[]}]}`, "out of int32 range"},
		{"vsock cid minimum", "PUT", "/vsock", ct, `{"guest_cid":2,"uds_path":"/v"}`, "body.guest_cid: 2 is below the minimum 3"},
		{"path/body id mismatch", "PUT", "/drives/root", ct, `{"drive_id":"work","is_root_device":false}`, "body.drive_id work differs from path parameter drive_id=root"},
		{"action enum", "PUT", "/actions", ct, `{"action_type":"Reboot"}`, "body.action_type: Reboot is not one of"},
		{"valid balloon", "PUT", "/balloon", ct, `{"amount_mib":0,"deflate_on_oom":true,"free_page_reporting":true}`, ""},
		{"balloon without deflate_on_oom", "PUT", "/balloon", ct, `{"amount_mib":0,"free_page_reporting":true}`, `body: required property "deflate_on_oom" is missing`},
		{"balloon misspelt reporting", "PUT", "/balloon", ct, `{"amount_mib":0,"deflate_on_oom":true,"free_page_reports":true}`, "body.free_page_reports: unknown property"},
	}
	for _, c := range cases {
		path, query, _ := strings.Cut(c.path, "?")
		_, v := spec.checkRequest(c.method, path, query, c.ctype, []byte(c.body))
		got := strings.Join(v, "; ")
		if c.name == "query string" {
			c.want = "query parameters are not defined"
		}
		switch {
		case c.want == "" && got != "":
			t.Errorf("%s: unexpected violations: %s", c.name, got)
		case c.want != "" && !strings.Contains(got, c.want):
			t.Errorf("%s: violations %q, want %q", c.name, got, c.want)
		}
	}

	// readOnly: fault_message may come back, never go out.
	errDef := &schema{Ref: "#/definitions/Error"}
	var body any
	json.Unmarshal([]byte(`{"fault_message":"x"}`), &body)
	if v := spec.validate(body, errDef, "body", true); len(v) != 1 || !strings.Contains(v[0], "read-only") {
		t.Errorf("readOnly in a request: %q", v)
	}
	if v := spec.validate(body, errDef, "response", false); len(v) != 0 {
		t.Errorf("readOnly in a response: %q", v)
	}

	// Responses are checked too (the fake's own answers).
	op := spec.Paths["/"]["get"]
	if v := spec.checkResponse(op, 200, []byte(`{"app_name":"Firecracker","id":"x","state":"Started","vmm_version":"1"}`)); len(v) == 0 {
		t.Error("bad InstanceInfo state accepted")
	}
	if v := spec.checkResponse(spec.Paths["/vsock"]["put"], 204, []byte(`{}`)); len(v) == 0 {
		t.Error("body on a 204 accepted")
	}
}

// Every definition and operation loads with the validator's keywords,
// and the operations the driver uses exist with the expected shape.
func TestSpecOperationsUsed(t *testing.T) {
	spec, path := loadSpec(t)
	t.Logf("validated against %s (%d paths, %d definitions)", path, len(spec.Paths), len(spec.Definitions))
	for _, u := range []struct{ method, path, op, body string }{
		{"get", "/", "describeInstance", ""},
		{"put", "/machine-config", "putMachineConfiguration", "MachineConfiguration"},
		{"put", "/boot-source", "putGuestBootSource", "BootSource"},
		{"put", "/serial", "putSerialDevice", "SerialDevice"},
		{"put", "/drives/{drive_id}", "putGuestDriveByID", "Drive"},
		{"put", "/network-interfaces/{iface_id}", "putGuestNetworkInterfaceByID", "NetworkInterface"},
		{"put", "/vsock", "putGuestVsock", "Vsock"},
		{"put", "/balloon", "putBalloon", "Balloon"},
		{"put", "/actions", "createSyncAction", "InstanceActionInfo"},
		{"patch", "/vm", "patchVm", "Vm"},
		{"put", "/snapshot/create", "createSnapshot", "SnapshotCreateParams"},
		{"put", "/snapshot/load", "loadSnapshot", "SnapshotLoadParams"},
	} {
		op, ok := spec.Paths[u.path][u.method]
		if !ok {
			t.Errorf("%s %s is not in the definition", u.method, u.path)
			continue
		}
		if op.OperationID != u.op {
			t.Errorf("%s %s is operation %q, want %q", u.method, u.path, op.OperationID, u.op)
		}
		var ref string
		for _, p := range op.Parameters {
			if p.In == "body" && p.Schema != nil {
				ref = p.Schema.Ref
			}
		}
		if want := "#/definitions/" + u.body; u.body != "" && ref != want {
			t.Errorf("%s %s takes %q, want %q", u.method, u.path, ref, want)
		}
	}
}
