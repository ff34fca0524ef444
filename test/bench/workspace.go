package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// wsSample is one workspace measurement: wall time, and the bytes that
// crossed the daemon's API socket from the CLI (up) and to it (down).
type wsSample struct {
	d        time.Duration
	up, down int64
}

// benchWorkspace times a workspace prepare of a generated repository
// (10,000 files of 10 KiB) against `git archive HEAD | banger vm exec NAME
// -- tar x` on the same repository and VM, once the guest has finished
// booting: rounds times each, interleaved (the side going first
// alternates), each into an emptied directory, each checked for the
// number of files that arrived.
func benchWorkspace(ctx context.Context, e *env, rounds int) error {
	const files, size = 10000, 10 << 10
	repo := filepath.Join(e.root, "wsrepo")
	for i := 0; i < files; i++ {
		p := filepath.Join(repo, fmt.Sprintf("d%02d/f%05d.dat", i%100, i))
		os.MkdirAll(filepath.Dir(p), 0o755)
		b := make([]byte, size)
		rand.Read(b)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return err
		}
	}
	git := func(args ...string) error {
		cmd := exec.CommandContext(ctx, "git", append([]string{"-C", repo}, args...)...)
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=b", "GIT_AUTHOR_EMAIL=b@b", "GIT_COMMITTER_NAME=b", "GIT_COMMITTER_EMAIL=b@b")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("git %v: %v %s", args, err, out)
		}
		return nil
	}
	for _, args := range [][]string{{"init", "-q"}, {"add", "."}, {"commit", "-qm", "bench"}} {
		if err := git(args...); err != nil {
			return err
		}
	}
	if _, _, err := e.banger(ctx, "vm", "create", "--name", "wsbench", "--disk-size", "2G"); err != nil {
		return err
	}
	defer e.banger(context.Background(), "vm", "delete", "wsbench")
	// The guest's boot must be over: a measurement must not share the
	// CPUs with systemd starting services.
	// The agent answers before systemd has set itself up (it then says
	// "offline"): ask again until it says the boot is over.
	bctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	out, _, _ := e.banger(bctx, "vm", "exec", "wsbench", "--", "sh", "-c",
		"for i in $(seq 600); do s=$(systemctl is-system-running --wait 2>/dev/null); case $s in running|degraded) break;; esac; sleep 1; done; echo $s")
	cancel()
	if st := strings.TrimSpace(out); st != "running" && st != "degraded" {
		return fmt.Errorf("wsbench guest did not finish booting: systemctl is-system-running says %q", st)
	}

	// The measured commands reach the daemon through a counting proxy.
	px, err := newProxy(filepath.Join(e.root, "proxy"), filepath.Join(e.root, "run/banger/bangerd.sock"))
	if err != nil {
		return err
	}
	defer px.close()
	penv := append(append([]string{}, e.environ...), "BANGER_RUNTIME_DIR="+px.dir, "BANGER_NO_AUTOSTART=1")
	bangerBin := filepath.Join(e.bin, "banger")

	count := func(dir string) (int, error) {
		out, _, err := e.banger(ctx, "vm", "exec", "wsbench", "--", "sh", "-c",
			"find "+dir+" -path "+dir+"/.git -prune -o -type f -print | wc -l")
		if err != nil {
			return 0, err
		}
		return strconv.Atoi(strings.TrimSpace(out))
	}
	measure := func(reset string, dir string, cmd *exec.Cmd) (wsSample, error) {
		if _, _, err := e.banger(ctx, "vm", "exec", "wsbench", "--", "sh", "-c", reset+" && sync"); err != nil {
			return wsSample{}, err
		}
		px.reset()
		cmd.Env = penv
		t0 := time.Now()
		out, err := cmd.CombinedOutput()
		d := time.Since(t0)
		if err != nil {
			return wsSample{}, fmt.Errorf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, out)
		}
		up, down := px.counts()
		if n, err := count(dir); err != nil || n != files {
			return wsSample{}, fmt.Errorf("%s: %d files arrived in %s, want %d (%v)", strings.Join(cmd.Args, " "), n, dir, files, err)
		}
		return wsSample{d, up, down}, nil
	}
	var prep, tarx []wsSample
	for i := 0; i < rounds; i++ {
		sides := []func() error{
			func() error {
				s, err := measure("rm -rf /root/repo", "/root/repo",
					exec.CommandContext(ctx, bangerBin, "vm", "workspace", "prepare", "wsbench", repo))
				prep = append(prep, s)
				return err
			},
			func() error {
				s, err := measure("rm -rf /root/archive && mkdir -p /root/archive", "/root/archive",
					exec.CommandContext(ctx, "bash", "-c", fmt.Sprintf("set -o pipefail; git -C '%s' archive HEAD | '%s' vm exec wsbench -- tar x -C /root/archive", repo, bangerBin)))
				tarx = append(tarx, s)
				return err
			},
		}
		if i%2 == 1 {
			sides[0], sides[1] = sides[1], sides[0]
		}
		for _, f := range sides {
			if err := f(); err != nil {
				return err
			}
		}
	}
	mib := float64(files*size) / (1 << 20)
	medPrep := medianOf(prep, func(s wsSample) float64 { return float64(s.d) })
	medTar := medianOf(tarx, func(s wsSample) float64 { return float64(s.d) })
	fmt.Printf("workspace: %d files, %.0f MiB of file data, guest booted; %d runs per side, interleaved; medians:\n", files, mib, rounds)
	for _, side := range []struct {
		name string
		s    []wsSample
	}{{"workspace prepare", prep}, {"git archive | vm exec tar x", tarx}} {
		d := medianOf(side.s, func(s wsSample) float64 { return float64(s.d) })
		up := medianOf(side.s, func(s wsSample) float64 { return float64(s.up) })
		down := medianOf(side.s, func(s wsSample) float64 { return float64(s.down) })
		var all []time.Duration
		for _, s := range side.s {
			all = append(all, s.d.Round(10*time.Millisecond))
		}
		sec := time.Duration(d).Seconds()
		fmt.Printf("  %-28s %v = %.0f files/s, %.1f MiB/s of file data; on the API socket %.1f MiB up, %.1f KiB down (all: %v)\n",
			side.name, time.Duration(d).Round(time.Millisecond), files/sec, mib/sec, up/(1<<20), down/(1<<10), all)
	}
	fmt.Printf("ratio workspace prepare speed / git archive pipe speed %.2fx (archive median / prepare median; target >= 0.9)\n", medTar/medPrep)
	return nil
}

func medianOf(ss []wsSample, f func(wsSample) float64) float64 {
	v := make([]float64, len(ss))
	for i, s := range ss {
		v[i] = f(s)
	}
	sort.Float64s(v)
	return v[len(v)/2]
}

// proxy forwards connections from a socket in dir to the daemon's socket,
// counting the bytes in each direction.
type proxy struct {
	dir      string
	ln       net.Listener
	up, down atomic.Int64
	wg       sync.WaitGroup
}

func newProxy(dir, target string) (*proxy, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	ln, err := net.Listen("unix", filepath.Join(dir, "bangerd.sock"))
	if err != nil {
		return nil, fmt.Errorf("proxy listen: %w", err)
	}
	p := &proxy{dir: dir, ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Add(1)
			go p.serve(c.(*net.UnixConn), target)
		}
	}()
	return p, nil
}

func (p *proxy) serve(c *net.UnixConn, target string) {
	defer p.wg.Done()
	defer c.Close()
	d, err := net.Dial("unix", target)
	if err != nil {
		return
	}
	dc := d.(*net.UnixConn)
	defer dc.Close()
	var wg sync.WaitGroup
	pipe := func(dst, src *net.UnixConn, n *atomic.Int64) {
		defer wg.Done()
		buf := make([]byte, 256<<10)
		for {
			k, err := src.Read(buf)
			if k > 0 {
				n.Add(int64(k))
				if _, werr := dst.Write(buf[:k]); werr != nil {
					c.Close()
					dc.Close()
					return
				}
			}
			if err != nil {
				if errors.Is(err, io.EOF) {
					dst.CloseWrite() // pass half-closes on
				} else {
					c.Close()
					dc.Close()
				}
				return
			}
		}
	}
	wg.Add(2)
	go pipe(dc, c, &p.up)
	go pipe(c, dc, &p.down)
	wg.Wait()
}

func (p *proxy) reset() { p.up.Store(0); p.down.Store(0) }

func (p *proxy) counts() (int64, int64) { return p.up.Load(), p.down.Load() }

func (p *proxy) close() { p.ln.Close() }
