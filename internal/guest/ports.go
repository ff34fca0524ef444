package guest

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// PortInfo describes one socket that accepts traffic in the guest: a TCP
// socket in LISTEN state or an unconnected, bound UDP socket.
type PortInfo struct {
	Proto string `json:"proto"` // "tcp" or "udp"
	// Addr is the local address: "0.0.0.0" or "::" for every address
	// (a "::" socket usually accepts IPv4 too), else one address. IPv4
	// addresses bound through an IPv6 socket (::ffff:a.b.c.d) are given
	// as plain IPv4.
	Addr string `json:"addr"`
	Port int    `json:"port"`
	// PID and Process (its comm) own the socket; when several processes
	// share it (a forking server), the lowest PID. Zero and empty when no
	// process could be found (a kernel socket, or one held only by a
	// process the agent cannot inspect).
	PID     int    `json:"pid,omitempty"`
	Process string `json:"process,omitempty"`
}

// Socket states of /proc/net/{tcp,udp}: include/net/tcp_states.h.
const (
	tcpListen = 0x0A
	udpBound  = 0x07 // TCP_CLOSE: an unconnected UDP socket
)

// procSocket is one line of a /proc/net/tcp-style table.
type procSocket struct {
	Addr  netip.Addr
	Port  uint16
	State uint8
	Inode uint64
}

// ListeningPorts lists the guest's listening TCP and bound UDP sockets
// (IPv4 and IPv6, in the agent's network namespace) with the processes
// that own them, sorted by protocol, port and address.
func ListeningPorts() ([]PortInfo, error) {
	return listeningPorts("/proc")
}

// listeningPorts does the work of ListeningPorts on a procfs mounted at
// proc.
func listeningPorts(proc string) ([]PortInfo, error) {
	type sock struct {
		proto string
		procSocket
	}
	var socks []sock
	for _, t := range []struct {
		file, proto string
		state       uint8
	}{
		{"net/tcp", "tcp", tcpListen},
		{"net/tcp6", "tcp", tcpListen},
		{"net/udp", "udp", udpBound},
		{"net/udp6", "udp", udpBound},
	} {
		data, err := os.ReadFile(filepath.Join(proc, t.file))
		if errors.Is(err, fs.ErrNotExist) {
			continue // no IPv6 in this kernel
		}
		if err != nil {
			return nil, fmt.Errorf("list ports: %w", err)
		}
		for _, s := range parseProcNet(data, binary.NativeEndian) {
			if s.State == t.state && s.Port != 0 {
				socks = append(socks, sock{t.proto, s})
			}
		}
	}
	inodes := map[uint64]bool{}
	for _, s := range socks {
		inodes[s.Inode] = true
	}
	owners := socketOwners(proc, inodes)
	ports := make([]PortInfo, 0, len(socks))
	for _, s := range socks {
		p := PortInfo{Proto: s.proto, Addr: s.Addr.String(), Port: int(s.Port)}
		if o, ok := owners[s.Inode]; ok {
			p.PID, p.Process = o.PID, o.Process
		}
		ports = append(ports, p)
	}
	slices.SortFunc(ports, func(a, b PortInfo) int {
		return cmp.Or(cmp.Compare(a.Proto, b.Proto), cmp.Compare(a.Port, b.Port),
			cmp.Compare(a.Addr, b.Addr), cmp.Compare(a.PID, b.PID))
	})
	// SO_REUSEPORT groups show up once per socket: once is enough.
	return slices.Compact(ports), nil
}

// parseProcNet parses a /proc/net/{tcp,tcp6,udp,udp6} table, written by a
// kernel with byte order order (addresses are printed as native 32-bit
// words). The header and malformed lines are skipped.
func parseProcNet(data []byte, order binary.ByteOrder) []procSocket {
	var out []procSocket
	for line := range bytes.Lines(data) {
		// sl local_address rem_address st tx_queue:rx_queue tr:tm->when
		// retrnsmt uid timeout inode ...
		f := strings.Fields(string(line))
		if len(f) < 10 || !strings.HasSuffix(f[0], ":") {
			continue
		}
		hexAddr, hexPort, ok := strings.Cut(f[1], ":")
		if !ok {
			continue
		}
		addr, ok := parseProcAddr(hexAddr, order)
		if !ok {
			continue
		}
		port, err1 := strconv.ParseUint(hexPort, 16, 16)
		state, err2 := strconv.ParseUint(f[3], 16, 8)
		inode, err3 := strconv.ParseUint(f[9], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil {
			continue
		}
		out = append(out, procSocket{Addr: addr, Port: uint16(port), State: uint8(state), Inode: inode})
	}
	return out
}

// parseProcAddr decodes an address of a /proc/net table: 8 hex digits for
// IPv4, 32 for IPv6, each group of 8 a 32-bit word in the kernel's byte
// order. IPv4-mapped IPv6 addresses are returned as IPv4.
func parseProcAddr(s string, order binary.ByteOrder) (netip.Addr, bool) {
	if len(s) != 8 && len(s) != 32 {
		return netip.Addr{}, false
	}
	raw, err := hex.DecodeString(s)
	if err != nil {
		return netip.Addr{}, false
	}
	b := make([]byte, len(raw))
	for i := 0; i < len(raw); i += 4 {
		order.PutUint32(b[i:], binary.BigEndian.Uint32(raw[i:]))
	}
	a, ok := netip.AddrFromSlice(b)
	return a.Unmap(), ok
}

type socketOwner struct {
	PID     int
	Process string
}

// socketOwners maps the socket inodes in want to the lowest PID that has
// them open, by reading every process's fd links under proc. Processes
// that vanish or cannot be inspected are skipped.
func socketOwners(proc string, want map[uint64]bool) map[uint64]socketOwner {
	owners := map[uint64]socketOwner{}
	if len(want) == 0 {
		return owners
	}
	entries, err := os.ReadDir(proc)
	if err != nil {
		return owners
	}
	var pids []int
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil && pid > 0 {
			pids = append(pids, pid)
		}
	}
	slices.Sort(pids)
	for _, pid := range pids {
		dir := filepath.Join(proc, strconv.Itoa(pid))
		fds, err := os.ReadDir(filepath.Join(dir, "fd"))
		if err != nil {
			continue
		}
		var comm string
		for _, fd := range fds {
			link, err := os.Readlink(filepath.Join(dir, "fd", fd.Name()))
			if err != nil {
				continue
			}
			num, ok := strings.CutPrefix(link, "socket:[")
			if !ok {
				continue
			}
			inode, err := strconv.ParseUint(strings.TrimSuffix(num, "]"), 10, 64)
			if err != nil || !want[inode] {
				continue
			}
			if _, seen := owners[inode]; seen {
				continue
			}
			if comm == "" {
				b, _ := os.ReadFile(filepath.Join(dir, "comm"))
				comm = strings.TrimSpace(string(b))
			}
			owners[inode] = socketOwner{PID: pid, Process: comm}
		}
		if len(owners) == len(want) {
			break
		}
	}
	return owners
}
