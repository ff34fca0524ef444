package firecracker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// This file is a small typed client for the part of Firecracker's HTTP API
// (swagger 2.0, firecracker-api.yaml) that the driver uses. Type names
// follow the spec's definitions and method names its operationIds, so both
// can be checked against the spec mechanically (see the package tests).

// MachineConfiguration is the spec's MachineConfiguration (PUT
// /machine-config): vCPUs (1..32) and memory. Unset optional properties
// take Firecracker's defaults: no SMT, no dirty page tracking, no CPU
// template, no huge pages.
type MachineConfiguration struct {
	VCPUCount  int `json:"vcpu_count"`
	MemSizeMiB int `json:"mem_size_mib"`
}

// BootSource is the spec's BootSource (PUT /boot-source).
type BootSource struct {
	KernelImagePath string `json:"kernel_image_path"`
	InitrdPath      string `json:"initrd_path,omitempty"`
	BootArgs        string `json:"boot_args,omitempty"`
}

// Drive cache types (Drive.CacheType).
const (
	// CacheUnsafe, Firecracker's default, ignores the guest's flush
	// requests.
	CacheUnsafe = "Unsafe"
	// CacheWriteback turns a guest flush into an fsync of the host file.
	CacheWriteback = "Writeback"
)

// Drive is the spec's Drive (PUT /drives/{drive_id}) for a virtio-block
// device backed by a raw host file. IsReadOnly is optional in the schema
// but documented as required for virtio-block, so it is always sent.
type Drive struct {
	DriveID      string `json:"drive_id"`
	PathOnHost   string `json:"path_on_host"`
	IsRootDevice bool   `json:"is_root_device"`
	IsReadOnly   bool   `json:"is_read_only"`
	CacheType    string `json:"cache_type,omitempty"`
}

// NetworkInterface is the spec's NetworkInterface (PUT
// /network-interfaces/{iface_id}): a virtio-net device on a host tap.
type NetworkInterface struct {
	IfaceID     string `json:"iface_id"`
	HostDevName string `json:"host_dev_name"`
	GuestMAC    string `json:"guest_mac,omitempty"`
}

// Vsock is the spec's Vsock (PUT /vsock): a hybrid vsock device whose host
// side is the Unix socket UDSPath.
type Vsock struct {
	GuestCID uint32 `json:"guest_cid"`
	UDSPath  string `json:"uds_path"`
}

// Balloon is the spec's Balloon (PUT /balloon): a virtio balloon device.
// AmountMiB is how much memory the balloon holds (taken from the guest);
// banger starts it empty. FreePageReporting makes the guest report pages
// it frees, which Firecracker then discards (the VMM's RSS falls);
// DeflateOnOOM lets a guest under memory pressure deflate the balloon.
// The free_page_reporting property appeared in Firecracker's API in 1.14
// (the definition banger validates against, 1.17.0-dev, has it).
type Balloon struct {
	AmountMiB         int  `json:"amount_mib"`
	DeflateOnOOM      bool `json:"deflate_on_oom"`
	FreePageReporting bool `json:"free_page_reporting,omitempty"`
}

// SerialDevice is the spec's SerialDevice (PUT /serial): where the guest's
// ttyS0 output goes instead of Firecracker's stdout.
type SerialDevice struct {
	SerialOutPath string `json:"serial_out_path,omitempty"`
}

// Action types (InstanceActionInfo.ActionType).
const (
	ActionFlushMetrics   = "FlushMetrics"
	ActionInstanceStart  = "InstanceStart"
	ActionSendCtrlAltDel = "SendCtrlAltDel"
)

// InstanceActionInfo is the spec's InstanceActionInfo (PUT /actions).
type InstanceActionInfo struct {
	ActionType string `json:"action_type"`
}

// Instance states (InstanceInfo.State).
const (
	StateNotStarted = "Not started"
	StateRunning    = "Running"
	StatePaused     = "Paused"
)

// VM states a PATCH /vm asks for (Vm.State).
const (
	VMPaused  = "Paused"
	VMResumed = "Resumed"
)

// VM is the spec's Vm (PATCH /vm): the state the microVM should be in.
type VM struct {
	State string `json:"state"`
}

// Snapshot types (SnapshotCreateParams.SnapshotType).
const (
	SnapshotFull = "Full"
	SnapshotDiff = "Diff"
)

// SnapshotCreateParams is the spec's SnapshotCreateParams (PUT
// /snapshot/create): where Firecracker writes the guest memory and the
// microVM state. The microVM must be paused.
type SnapshotCreateParams struct {
	MemFilePath  string `json:"mem_file_path"`
	SnapshotPath string `json:"snapshot_path"`
	SnapshotType string `json:"snapshot_type,omitempty"`
}

// SnapshotLoadParams is the part of the spec's SnapshotLoadParams (PUT
// /snapshot/load) banger uses: the state and memory files, and whether to
// resume at once.
type SnapshotLoadParams struct {
	SnapshotPath    string `json:"snapshot_path"`
	MemFilePath     string `json:"mem_file_path,omitempty"`
	TrackDirtyPages bool   `json:"track_dirty_pages,omitempty"`
	ResumeVM        bool   `json:"resume_vm,omitempty"`
}

// InstanceInfo is the spec's InstanceInfo (GET /).
type InstanceInfo struct {
	AppName    string `json:"app_name"`
	ID         string `json:"id"`
	State      string `json:"state"`
	VMMVersion string `json:"vmm_version"`
}

// faultBody is the spec's Error: the body of every failed request.
type faultBody struct {
	FaultMessage string `json:"fault_message"`
}

// APIError is a request that Firecracker answered with a non-2xx status.
// Its message carries Firecracker's fault_message verbatim.
type APIError struct {
	Method       string
	Path         string
	StatusCode   int
	FaultMessage string // the Error body's fault_message, or the raw body
}

// Error renders "firecracker: PUT /drives/root: 400: <fault_message>".
func (e *APIError) Error() string {
	msg := e.FaultMessage
	if msg == "" {
		msg = strings.ToLower(http.StatusText(e.StatusCode))
	}
	return fmt.Sprintf("firecracker: %s %s: %d: %s", e.Method, e.Path, e.StatusCode, msg)
}

// maxResponse bounds how much of a response body is read.
const maxResponse = 1 << 20

// Client talks to one Firecracker API socket. It is safe for concurrent
// use; every call is bounded by its context only.
type Client struct {
	socket string
	hc     *http.Client
}

// NewClient returns a client for the API socket at socketPath. It does
// not connect until the first call.
func NewClient(socketPath string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socketPath)
		},
		MaxIdleConnsPerHost: 1,
		IdleConnTimeout:     30 * time.Second,
		DisableCompression:  true,
	}
	return &Client{socket: socketPath, hc: &http.Client{Transport: tr}}
}

// Socket is the API socket path.
func (c *Client) Socket() string { return c.socket }

// Close drops idle connections. The client stays usable.
func (c *Client) Close() error {
	c.hc.CloseIdleConnections()
	return nil
}

// DescribeInstance is GET /: the instance's id, state and version.
func (c *Client) DescribeInstance(ctx context.Context) (InstanceInfo, error) {
	var info InstanceInfo
	err := c.do(ctx, http.MethodGet, "/", nil, &info)
	return info, err
}

// PutMachineConfiguration is PUT /machine-config. Pre-boot only.
func (c *Client) PutMachineConfiguration(ctx context.Context, mc MachineConfiguration) error {
	return c.do(ctx, http.MethodPut, "/machine-config", mc, nil)
}

// PutGuestBootSource is PUT /boot-source. Pre-boot only.
func (c *Client) PutGuestBootSource(ctx context.Context, bs BootSource) error {
	return c.do(ctx, http.MethodPut, "/boot-source", bs, nil)
}

// PutGuestDriveByID is PUT /drives/{drive_id}, with d.DriveID as the path
// parameter. Pre-boot only.
func (c *Client) PutGuestDriveByID(ctx context.Context, d Drive) error {
	return c.do(ctx, http.MethodPut, "/drives/"+url.PathEscape(d.DriveID), d, nil)
}

// PutGuestNetworkInterfaceByID is PUT /network-interfaces/{iface_id}, with
// n.IfaceID as the path parameter. Pre-boot only.
func (c *Client) PutGuestNetworkInterfaceByID(ctx context.Context, n NetworkInterface) error {
	return c.do(ctx, http.MethodPut, "/network-interfaces/"+url.PathEscape(n.IfaceID), n, nil)
}

// PutGuestVsock is PUT /vsock. Firecracker binds v.UDSPath at once and
// fails if it exists. Pre-boot only.
func (c *Client) PutGuestVsock(ctx context.Context, v Vsock) error {
	return c.do(ctx, http.MethodPut, "/vsock", v, nil)
}

// PutBalloon is PUT /balloon. banger sends it before boot only.
func (c *Client) PutBalloon(ctx context.Context, b Balloon) error {
	return c.do(ctx, http.MethodPut, "/balloon", b, nil)
}

// PutSerialDevice is PUT /serial.
func (c *Client) PutSerialDevice(ctx context.Context, s SerialDevice) error {
	return c.do(ctx, http.MethodPut, "/serial", s, nil)
}

// CreateSyncAction is PUT /actions: InstanceStart boots the configured
// guest, SendCtrlAltDel presses Ctrl+Alt+Del on its i8042 keyboard.
func (c *Client) CreateSyncAction(ctx context.Context, a InstanceActionInfo) error {
	return c.do(ctx, http.MethodPut, "/actions", a, nil)
}

// PatchVm is PATCH /vm: pause (VMPaused) or resume (VMResumed) the
// microVM's vCPUs. Post-boot only.
func (c *Client) PatchVm(ctx context.Context, v VM) error {
	return c.do(ctx, http.MethodPatch, "/vm", v, nil)
}

// CreateSnapshot is PUT /snapshot/create: Firecracker writes the paused
// microVM's memory and state to the given paths. Post-boot only.
func (c *Client) CreateSnapshot(ctx context.Context, p SnapshotCreateParams) error {
	return c.do(ctx, http.MethodPut, "/snapshot/create", p, nil)
}

// LoadSnapshot is PUT /snapshot/load: a fresh Firecracker (nothing
// configured) takes its microVM from a snapshot. Pre-boot only.
func (c *Client) LoadSnapshot(ctx context.Context, p SnapshotLoadParams) error {
	return c.do(ctx, http.MethodPut, "/snapshot/load", p, nil)
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("firecracker: %s %s: encode request: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://localhost"+path, body)
	if err != nil {
		return fmt.Errorf("firecracker: %s %s: %w", method, path, err)
	}
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		// Unwrap *url.Error: its message repeats the made-up URL.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return fmt.Errorf("firecracker: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return fmt.Errorf("firecracker: %s %s: read response: %w", method, path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		e := &APIError{Method: method, Path: path, StatusCode: resp.StatusCode}
		var f faultBody
		if json.Unmarshal(b, &f) == nil && f.FaultMessage != "" {
			e.FaultMessage = f.FaultMessage
		} else {
			e.FaultMessage = strings.TrimSpace(string(b))
		}
		return e
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("firecracker: %s %s: decode response: %w", method, path, err)
	}
	return nil
}
