package cli

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"

	"banger/internal/api"
	"banger/internal/cli/style"
)

// Progress rendering limits.
const (
	progressRedrawEvery = 100 * time.Millisecond // at most ~10 redraws a second
	progressBarWidth    = 18
	progressRateAfter   = 200 * time.Millisecond // no rate before this much of a transfer
)

// progressRenderer shows a long operation's progress events.
//
// Each stage ends with one line, "  STAGE  DURATION" (plus the bytes
// moved, for a transfer). On a terminal, a stage that reports bytes
// (Current, and Total when known) first gets a line redrawn in place with
// \r: a bar and a percentage when the total is known, the bytes so far and
// the rate. Off a terminal nothing is ever redrawn: only the final lines
// are printed. Stage lines are shown only when show is set (on a terminal,
// verbose commands, BANGER_PROGRESS=1); warnings are always printed.
type progressRenderer struct {
	w     io.Writer
	st    style.Style
	tty   bool // redraw transfer lines in place
	show  bool // print stage lines at all
	cols  int  // terminal width; 0 when unknown
	now   func() time.Time
	every time.Duration

	mu       sync.Mutex
	line     string // the stage whose unfinished line is on screen; "" when none
	width    int    // that line's width
	lastDraw time.Time
	xfers    map[string]*transfer
}

// transfer is what is known of one stage's bytes.
type transfer struct {
	start          time.Time // first event
	base           int64     // Current at the first event
	current, total int64
}

func newProgressRenderer(w io.Writer, st style.Style, tty, show bool, now func() time.Time) *progressRenderer {
	return &progressRenderer{w: w, st: st, tty: tty, show: show, now: now, every: progressRedrawEvery, xfers: map[string]*transfer{}}
}

// progress returns the renderer for a command's stream of events on
// Stderr; call its Done when the stream is over. verbose commands show
// stages even off a terminal.
func (a *App) progress(verbose bool) *progressRenderer {
	tty := isTTY(a.Stderr)
	show := verbose || tty || a.getenv("BANGER_PROGRESS") == "1"
	r := newProgressRenderer(a.Stderr, a.errStyle(), tty, show, time.Now)
	if f, ok := a.Stderr.(interface{ Fd() uintptr }); ok && tty {
		if w, _, err := term.GetSize(int(f.Fd())); err == nil {
			r.cols = w
		}
	}
	a.live = r
	return r
}

// progressPrinter is progress(verbose).Event, for call sites that do not
// call Done themselves: Main ends the line before it prints.
func (a *App) progressPrinter(verbose bool) func(api.Progress) {
	return a.progress(verbose).Event
}

// endProgress ends the last renderer's unfinished line, if any.
func (a *App) endProgress() {
	if a.live != nil {
		a.live.Done()
	}
}

// Event renders one progress event.
func (r *progressRenderer) Event(p api.Progress) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	if p.Stage == "warning" {
		r.clearLine()
		fmt.Fprintf(r.w, "banger: %s %s\n", r.st.Warn("warning:"), p.Detail)
		return
	}
	if p.Stage == api.StageOutput {
		// A command's own output (image build --run): always shown, as
		// it comes.
		r.clearLine()
		io.WriteString(r.w, p.Detail)
		return
	}
	if r.line != "" && r.line != p.Stage {
		// Another stage (or the command's output) follows: leave the
		// unfinished line as it is.
		r.endLine()
	}
	if !r.show || p.Stage == "vm" || p.Stage == "exec" {
		return
	}
	if p.DurationMS == 0 && (p.Current > 0 || p.Total > 0) {
		x := r.xfers[p.Stage]
		if x == nil {
			x = &transfer{start: now, base: p.Current}
			r.xfers[p.Stage] = x
		}
		x.current, x.total = p.Current, p.Total
		if !r.tty || (r.line == p.Stage && now.Sub(r.lastDraw) < r.every) {
			return
		}
		r.draw(p.Stage, r.transferLine(p.Stage, x, now), now)
		return
	}

	// The stage ended.
	text := fmt.Sprintf("  %-16s %s", p.Stage, time.Duration(p.DurationMS)*time.Millisecond)
	moved := p.Current
	if x := r.xfers[p.Stage]; x != nil {
		delete(r.xfers, p.Stage)
		moved = max(moved, x.current)
	}
	if moved > 0 {
		text += "  " + humanSize(moved)
	}
	if r.line == p.Stage {
		r.draw(p.Stage, text, now)
		r.endLine()
		return
	}
	fmt.Fprintln(r.w, text)
}

// Done ends an unfinished line; call it when the stream is over.
func (r *progressRenderer) Done() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.endLine()
}

// transferLine is the in-place line of a stage moving bytes.
func (r *progressRenderer) transferLine(stage string, x *transfer, now time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "  %-16s ", stage)
	if x.total > 0 {
		frac := min(max(float64(x.current)/float64(x.total), 0), 1)
		fmt.Fprintf(&b, "%s %3d%% %s / %s", progressBar(frac, progressBarWidth), int(frac*100), humanSize(x.current), humanSize(x.total))
	} else {
		b.WriteString(humanSize(x.current))
	}
	if el := now.Sub(x.start); el >= progressRateAfter && x.current > x.base {
		fmt.Fprintf(&b, "  %s/s", humanSize(int64(float64(x.current-x.base)/el.Seconds())))
	}
	return b.String()
}

// progressBar draws frac (0 to 1) as [=====>    ] with width cells inside.
func progressBar(frac float64, width int) string {
	filled := int(frac * float64(width))
	if filled >= width {
		return "[" + strings.Repeat("=", width) + "]"
	}
	return "[" + strings.Repeat("=", filled) + ">" + strings.Repeat(" ", width-filled-1) + "]"
}

// draw replaces the unfinished line with text (blanking what is left of a
// longer previous one); it stays unfinished.
func (r *progressRenderer) draw(stage, text string, now time.Time) {
	if r.cols > 1 && len(text) > r.cols-1 {
		text = text[:r.cols-1] // a wrapped line could not be redrawn
	}
	pad := ""
	if r.line != "" && r.width > len(text) {
		pad = strings.Repeat(" ", r.width-len(text))
	}
	fmt.Fprint(r.w, "\r"+text+pad)
	r.line, r.width, r.lastDraw = stage, len(text), now
}

// endLine finishes the unfinished line, leaving it on screen.
func (r *progressRenderer) endLine() {
	if r.line == "" {
		return
	}
	fmt.Fprint(r.w, "\n")
	r.line, r.width = "", 0
}

// clearLine blanks the unfinished line and puts the cursor at its start;
// the stage's next event draws it again.
func (r *progressRenderer) clearLine() {
	if r.line == "" {
		return
	}
	fmt.Fprint(r.w, "\r"+strings.Repeat(" ", r.width)+"\r")
	r.line, r.width = "", 0
}
