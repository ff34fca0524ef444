package guest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// vsockDevice is the vsock core's control device; its GET_LOCAL_CID
// ioctl answers with the guest's CID once a guest transport has a device.
const vsockDevice = "/dev/vsock"

// LocalVsockCID returns this machine's vsock context id as the kernel
// reports it: the guest CID when a virtio-vsock device is present,
// VMADDR_CID_ANY (0xffffffff) when a transport is loaded without one.
func LocalVsockCID() (uint32, error) {
	f, err := os.Open(vsockDevice)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	cid, err := unix.IoctlGetUint32(int(f.Fd()), unix.IOCTL_VM_SOCKETS_GET_LOCAL_CID)
	if err != nil {
		return 0, fmt.Errorf("get local vsock cid: %w", err)
	}
	return cid, nil
}

// VsockAvailable reports whether the guest has a usable vsock device: the
// kernel reports a guest CID (3 or more). /dev/vsock alone is not enough:
// it exists as soon as the vsock modules are loaded, with or without a
// device (e.g. under QEMU without vhost-vsock).
func VsockAvailable() bool {
	cid, err := LocalVsockCID()
	return err == nil && cid > unix.VMADDR_CID_HOST && cid != unix.VMADDR_CID_ANY
}

// ServeAuto serves the host over vsock port vsockPort when the guest has a
// vsock device (Firecracker), and over the virtio-serial port portName
// otherwise (QEMU). It returns when ctx ends or serving fails.
func (s *Server) ServeAuto(ctx context.Context, portName string, vsockPort uint32) error {
	if VsockAvailable() {
		return s.ServeVsock(ctx, vsockPort)
	}
	s.Log.Printf("no vsock device; using virtio-serial port %s", portName)
	return s.ServePort(ctx, portName)
}

// ServeVsock listens on AF_VSOCK port (any local CID) and serves every
// host connection with ServeConn, concurrently, until ctx ends. Unlike a
// virtio-serial port, vsock gives each host client a stream of its own, so
// a new daemon can connect while an old connection lingers.
func (s *Server) ServeVsock(ctx context.Context, port uint32) error {
	ln, err := listenVsock(port)
	if err != nil {
		return err
	}
	s.Log.Printf("serving on vsock port %d", port)
	if s.bound != nil {
		s.bound()
	}
	return s.serveListener(ctx, ln)
}

// serveListener accepts connections on ln until ctx ends, serving each in
// its own goroutine. It closes ln.
func (s *Server) serveListener(ctx context.Context, ln net.Listener) error {
	defer ln.Close()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if isTransientAccept(err) {
				s.Log.Printf("accept: %v", err)
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(100 * time.Millisecond):
				}
				continue
			}
			return fmt.Errorf("accept host connection: %w", err)
		}
		go func() {
			defer conn.Close()
			if err := s.ServeConn(ctx, conn); err != nil && !errors.Is(err, io.EOF) && ctx.Err() == nil {
				s.Log.Printf("session from %s ended: %v", conn.RemoteAddr(), err)
			}
		}()
	}
}

func isTransientAccept(err error) bool {
	for _, e := range []error{unix.ECONNABORTED, unix.EINTR, unix.EMFILE, unix.ENFILE, unix.ENOBUFS, unix.ENOMEM, unix.EPROTO} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// listenVsock returns a listener on AF_VSOCK VMADDR_CID_ANY:port. Go's net
// package has no vsock support, so the socket is driven through os.File,
// whose non-blocking mode parks Accept in the runtime poller (and lets
// Close interrupt it).
func listenVsock(port uint32) (net.Listener, error) {
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("vsock socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrVM{CID: unix.VMADDR_CID_ANY, Port: port}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind vsock port %d: %w", port, err)
	}
	if err := unix.Listen(fd, 16); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("listen on vsock port %d: %w", port, err)
	}
	f := os.NewFile(uintptr(fd), "vsock:"+strconv.FormatUint(uint64(port), 10))
	return &vsockListener{f: f, addr: vsockAddr{cid: unix.VMADDR_CID_ANY, port: port}}, nil
}

// vsockListener is a net.Listener on an AF_VSOCK socket.
type vsockListener struct {
	f    *os.File
	addr vsockAddr
}

// Accept waits for the next connection.
func (l *vsockListener) Accept() (net.Conn, error) {
	rc, err := l.f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var (
		nfd  int
		sa   unix.Sockaddr
		aerr error
	)
	err = rc.Read(func(fd uintptr) bool {
		nfd, sa, aerr = unix.Accept4(int(fd), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		// false parks the goroutine in the poller until readable.
		return !errors.Is(aerr, unix.EAGAIN)
	})
	if err != nil {
		return nil, err
	}
	if aerr != nil {
		return nil, aerr
	}
	remote := vsockAddr{}
	if vm, ok := sa.(*unix.SockaddrVM); ok {
		remote = vsockAddr{cid: vm.CID, port: vm.Port}
	}
	return &vsockConn{
		File:   os.NewFile(uintptr(nfd), "vsock:"+remote.String()),
		local:  l.addr,
		remote: remote,
	}, nil
}

// Close stops the listener; a blocked Accept returns an error.
func (l *vsockListener) Close() error { return l.f.Close() }

// Addr is the listening address.
func (l *vsockListener) Addr() net.Addr { return l.addr }

// vsockConn is one accepted vsock stream. *os.File provides Read, Write,
// Close and the deadlines (through the runtime poller).
type vsockConn struct {
	*os.File
	local, remote vsockAddr
}

func (c *vsockConn) LocalAddr() net.Addr  { return c.local }
func (c *vsockConn) RemoteAddr() net.Addr { return c.remote }

// vsockAddr is a vsock address: context id and port.
type vsockAddr struct{ cid, port uint32 }

func (a vsockAddr) Network() string { return "vsock" }
func (a vsockAddr) String() string {
	return strconv.FormatUint(uint64(a.cid), 10) + ":" + strconv.FormatUint(uint64(a.port), 10)
}
