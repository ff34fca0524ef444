package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/cli/style"
)

// fakeClock is a settable clock for the renderer.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newTestRenderer(tty, show bool) (*progressRenderer, *bytes.Buffer, *fakeClock) {
	var b bytes.Buffer
	clk := &fakeClock{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	return newProgressRenderer(&b, style.Plain(), tty, show, clk.now), &b, clk
}

const mib = 1 << 20

// pull feeds a 270 MiB transfer in steps of step over n events, then the
// stage's end.
func pull(r *progressRenderer, clk *fakeClock, step time.Duration, n int) {
	total := int64(270 * mib)
	for i := 0; i <= n; i++ {
		r.Event(api.Progress{Stage: "pull_image", Current: total * int64(i) / int64(n), Total: total})
		clk.advance(step)
	}
	r.Event(api.Progress{Stage: "pull_image", DurationMS: int64(step/time.Millisecond) * int64(n), Current: total, Total: total})
}

func TestProgressTTYRedrawsABar(t *testing.T) {
	t.Parallel()
	r, b, clk := newTestRenderer(true, true)
	r.Event(api.Progress{Stage: "resolve", DurationMS: 1200})
	pull(r, clk, 150*time.Millisecond, 20)
	r.Event(api.Progress{Stage: "boot", DurationMS: 800})
	r.Done()
	out := b.String()
	if !strings.HasPrefix(out, "  resolve          1.2s\n") {
		t.Errorf("a stage without bytes prints as before: %q", out)
	}
	if n := strings.Count(out, "\r"); n < 10 {
		t.Errorf("%d redraws, want one per event past the rate limit: %q", n, out)
	}
	for _, want := range []string{"[", "]", "%", "MiB / 270.0 MiB", "MiB/s", "[==================]", "100%"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in %q", want, out)
		}
	}
	// Halfway: the bar is half full.
	if !strings.Contains(out, "[=========>        ]  50% 135.0 MiB / 270.0 MiB") {
		t.Errorf("no half-full bar in %q", out)
	}
	// The redrawn line ends with the stage's duration and size, then the
	// next stage starts on its own line.
	last := out[strings.LastIndex(out, "\r")+1:]
	if !strings.HasPrefix(last, "  pull_image       3s  270.0 MiB") || !strings.HasSuffix(last, "\n  boot             800ms\n") {
		t.Errorf("final line: %q", last)
	}
}

func TestProgressTTYRateLimit(t *testing.T) {
	t.Parallel()
	r, b, clk := newTestRenderer(true, true)
	// 1000 events over 1s: at most ~10 redraws, plus the final line.
	pull(r, clk, time.Millisecond, 1000)
	if n := strings.Count(b.String(), "\r"); n < 9 || n > 12 {
		t.Errorf("%d redraws for 1000 events in 1s, want about 10", n)
	}
}

func TestProgressTTYUnknownTotal(t *testing.T) {
	t.Parallel()
	r, b, clk := newTestRenderer(true, true)
	for i := int64(1); i <= 5; i++ {
		r.Event(api.Progress{Stage: "download", Current: i * 10 * mib})
		clk.advance(time.Second)
	}
	r.Done()
	out := b.String()
	if strings.Contains(out, "[") || strings.Contains(out, "%") {
		t.Errorf("a bar without a total: %q", out)
	}
	if !strings.Contains(out, "\r  download         50.0 MiB  10.0 MiB/s") {
		t.Errorf("want bytes and rate: %q", out)
	}
	if !strings.HasSuffix(out, "\n") {
		t.Errorf("Done leaves the line unfinished: %q", out)
	}
}

func TestProgressNonTTY(t *testing.T) {
	t.Parallel()
	r, b, clk := newTestRenderer(false, true) // verbose
	r.Event(api.Progress{Stage: "resolve", DurationMS: 1200})
	pull(r, clk, 150*time.Millisecond, 20)
	r.Event(api.Progress{Stage: "vm"})
	r.Event(api.Progress{Stage: "warning", Detail: "slow disk"})
	r.Done()
	want := "  resolve          1.2s\n" +
		"  pull_image       3s  270.0 MiB\n" +
		"banger: warning: slow disk\n"
	if got := b.String(); got != want {
		t.Errorf("got %q, want %q", got, want)
	}

	r, b, clk = newTestRenderer(false, false) // not verbose: warnings only
	r.Event(api.Progress{Stage: "resolve", DurationMS: 1200})
	pull(r, clk, 150*time.Millisecond, 20)
	r.Event(api.Progress{Stage: "warning", Detail: "slow disk"})
	r.Done()
	if got := b.String(); got != "banger: warning: slow disk\n" {
		t.Errorf("quiet: got %q", got)
	}
}

func TestProgressWarningClearsTheBar(t *testing.T) {
	t.Parallel()
	r, b, clk := newTestRenderer(true, true)
	r.Event(api.Progress{Stage: "pull_image", Current: mib, Total: 10 * mib})
	clk.advance(time.Millisecond)
	r.Event(api.Progress{Stage: "warning", Detail: "retrying"})
	r.Event(api.Progress{Stage: "pull_image", Current: 2 * mib, Total: 10 * mib}) // redrawn at once
	out := b.String()
	i := strings.Index(out, "banger: warning: retrying\n")
	if i < 0 || !strings.HasSuffix(out[:i], "\r") || !strings.Contains(out[i:], "\r  pull_image") {
		t.Errorf("warning over a bar: %q", out)
	}
}

func TestProgressBar(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		frac float64
		want string
	}{
		{0, "[>         ]"}, {0.5, "[=====>    ]"}, {0.99, "[=========>]"}, {1, "[==========]"},
	} {
		if got := progressBar(c.frac, 10); got != c.want {
			t.Errorf("%v: got %q, want %q", c.frac, got, c.want)
		}
	}
}

// A command's output (image build --run) is always written as it comes,
// on a terminal after clearing a half-drawn bar, and in pipes as is.
func TestProgressOutputStage(t *testing.T) {
	t.Parallel()
	r, b, _ := newTestRenderer(false, false)
	r.Event(api.Progress{Stage: api.StageOutput, Detail: "+ apt-get install jq\n"})
	r.Event(api.Progress{Stage: api.StageOutput, Detail: "Setting up jq\n"})
	r.Event(api.Progress{Stage: "run", DurationMS: 1500})
	r.Done()
	if got := b.String(); got != "+ apt-get install jq\nSetting up jq\n" {
		t.Errorf("non-TTY output: %q", got)
	}

	r, b, clk := newTestRenderer(true, true)
	r.Event(api.Progress{Stage: "pull_image", Current: 10 * mib, Total: 100 * mib})
	clk.advance(time.Second)
	r.Event(api.Progress{Stage: api.StageOutput, Detail: "hello\n"})
	r.Done()
	out := b.String()
	if !strings.Contains(out, " \rhello\n") {
		t.Errorf("TTY output should follow a cleared bar line: %q", out)
	}
}
