package agent

import "time"

// SessionRequest carries the parameters of the session operations.
//
//   - session_start: Name (optional; generated when empty), Argv, Cwd, Env,
//     TTY, Rows, Cols, Term. Answers one Response line with Session set,
//     or an error for launch problems (missing cwd, command not found).
//   - session_list: answers Sessions.
//   - session_show: Name; answers Session.
//   - session_logs: Name, Follow, Tail. Answers a Response line, then
//     stdout frames with the retained output (the last Tail bytes; all
//     when 0); with Follow, then live output until the session ends,
//     followed by an exit frame. Without Follow the stream closes after
//     the retained output (plus an exit frame if the session has ended).
//   - session_attach: Name, Tail (default 64 KiB of recent output). Answers
//     a Response line, then output frames (replay, then live); the host
//     sends stdin, resize and signal frames. Closing the stream detaches;
//     the session goes on. Several attachers may be connected at once.
//     When the session ends, an exit frame is sent and the stream closes.
//   - session_stop: Name, Signal (default SIGTERM; SIGKILL follows after
//     a grace period). Answers Session with the final state.
type SessionRequest struct {
	Name   string   `json:"name,omitempty"`
	Argv   []string `json:"argv,omitempty"`
	Cwd    string   `json:"cwd,omitempty"`
	Env    []string `json:"env,omitempty"`
	TTY    bool     `json:"tty,omitempty"`
	Rows   uint16   `json:"rows,omitempty"`
	Cols   uint16   `json:"cols,omitempty"`
	Term   string   `json:"term,omitempty"`
	Follow bool     `json:"follow,omitempty"`
	Tail   int64    `json:"tail,omitempty"`
	Signal int      `json:"signal,omitempty"`
}

// Session states.
const (
	SessionRunning = "running"
	SessionExited  = "exited"
	// SessionLost: the agent restarted and no longer has the process.
	SessionLost = "lost"
)

// SessionInfo describes one guest session.
type SessionInfo struct {
	Name        string      `json:"name"`
	Argv        []string    `json:"argv"`
	Cwd         string      `json:"cwd"`
	TTY         bool        `json:"tty"`
	PID         int         `json:"pid,omitempty"`
	State       string      `json:"state"`
	Exit        *ExitStatus `json:"exit,omitempty"`
	StartedAt   time.Time   `json:"started_at"`
	EndedAt     time.Time   `json:"ended_at,omitempty"`
	OutputBytes int64       `json:"output_bytes"` // total written since start
	Attached    int         `json:"attached"`     // current attachers
}
