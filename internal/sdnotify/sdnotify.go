// Package sdnotify tells systemd that a Type=notify service is ready: one
// datagram ("READY=1") on the socket named by $NOTIFY_SOCKET. Outside
// systemd (no NOTIFY_SOCKET) it does nothing.
package sdnotify

import (
	"fmt"
	"net"
	"os"
)

// Ready reports readiness to systemd. It returns false, nil when not
// running under a notify-type service.
func Ready() (bool, error) { return notify(os.Getenv("NOTIFY_SOCKET"), "READY=1") }

func notify(socket, state string) (bool, error) {
	if socket == "" {
		return false, nil
	}
	// A leading '@' names an abstract socket.
	if socket[0] == '@' {
		socket = "\x00" + socket[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: socket, Net: "unixgram"})
	if err != nil {
		return false, fmt.Errorf("sd_notify: %w", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return false, fmt.Errorf("sd_notify: %w", err)
	}
	return true, nil
}
