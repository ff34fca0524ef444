// Command testreport reads `go test -json` on stdin and prints what a
// plain `go test` would hide: the result line of each package, the output
// of every failed test, whatever a passing package printed outside its
// tests (such as the firecracker contract line), and every skipped test
// with its reason. It exits 1 when a test or a build failed, when no
// package was tested, or when a -want pattern matched no passing test.
//
//	go test -json ./... | go run ./test/testreport [-want REGEX]...
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"
)

// event is one line of `go test -json` (see `go doc test2json`).
type event struct {
	Action     string
	Package    string
	ImportPath string
	Test       string
	Output     string
	Elapsed    float64
}

type wants []*regexp.Regexp

func (w *wants) String() string { return fmt.Sprint(*w) }
func (w *wants) Set(s string) error {
	re, err := regexp.Compile(s)
	if err != nil {
		return err
	}
	*w = append(*w, re)
	return nil
}

func main() {
	var want wants
	flag.Var(&want, "want", "fail unless a passing test's name matches this pattern (repeatable)")
	flag.Parse()
	ok, err := report(os.Stdin, os.Stdout, want)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testreport:", err)
		os.Exit(1)
	}
	if !ok {
		os.Exit(1)
	}
}

type key struct{ pkg, test string }

func report(in io.Reader, out io.Writer, want wants) (bool, error) {
	output := map[key][]string{}
	var skipped []key
	var passed []string
	packages, failed := 0, false
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var ev event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			// Not JSON: go itself printing (e.g. a build error).
			fmt.Fprintln(out, sc.Text())
			continue
		}
		k := key{ev.Package, ev.Test}
		switch ev.Action {
		case "output":
			output[k] = append(output[k], ev.Output)
		case "build-output":
			k = key{ev.ImportPath, "build"}
			output[k] = append(output[k], ev.Output)
		case "skip":
			if ev.Test != "" {
				skipped = append(skipped, k)
			} else {
				fmt.Fprintf(out, "?   \t%s\t[no test files]\n", ev.Package)
			}
		case "pass":
			if ev.Test != "" {
				passed = append(passed, ev.Test)
				delete(output, k)
				continue
			}
			packages++
			fmt.Fprintf(out, "ok  \t%s\t%.3fs\n", ev.Package, ev.Elapsed)
			for _, l := range output[k] {
				if !standardLine(l) {
					fmt.Fprintf(out, "    \t%s", l)
				}
			}
		case "fail", "build-fail":
			failed = true
			if ev.Test != "" {
				fmt.Fprintf(out, "--- FAIL: %s (%s)\n", ev.Test, ev.Package)
				for _, l := range output[k] {
					fmt.Fprintf(out, "    %s", l)
				}
				continue
			}
			if ev.Action == "fail" {
				packages++
				name := ev.Package
				if name == "" {
					name = ev.ImportPath
				}
				for _, l := range output[k] {
					if !standardLine(l) {
						fmt.Fprintf(out, "    \t%s", l)
					}
				}
				fmt.Fprintf(out, "FAIL\t%s\n", name)
			} else {
				for _, l := range output[key{ev.ImportPath, "build"}] {
					fmt.Fprint(out, l)
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		return false, err
	}
	if len(skipped) > 0 {
		sort.Slice(skipped, func(i, j int) bool {
			if skipped[i].pkg != skipped[j].pkg {
				return skipped[i].pkg < skipped[j].pkg
			}
			return skipped[i].test < skipped[j].test
		})
		fmt.Fprintf(out, "\nskipped tests (%d): not run here, with their reasons\n", len(skipped))
		for _, k := range skipped {
			fmt.Fprintf(out, "  %s %s: %s\n", k.pkg, k.test, skipReason(output[k]))
		}
	}
	for _, re := range want {
		found := false
		for _, p := range passed {
			if re.MatchString(p) {
				found = true
				break
			}
		}
		if !found {
			fmt.Fprintf(out, "FAIL: no passing test matches %q\n", re)
			failed = true
		}
	}
	if packages == 0 {
		fmt.Fprintln(out, "FAIL: no package was tested")
		failed = true
	}
	return !failed, nil
}

// standardLine reports the lines go test prints for every package.
func standardLine(l string) bool {
	t := strings.TrimSpace(l)
	return t == "PASS" || t == "FAIL" || strings.HasPrefix(t, "ok ") || strings.HasPrefix(t, "ok\t") ||
		strings.HasPrefix(t, "FAIL\t") || strings.HasPrefix(t, "=== ") || strings.HasPrefix(t, "--- ") ||
		strings.HasPrefix(t, "coverage:") || t == "testing: warning: no tests to run"
}

// skipReason is what the test logged, without the run/skip markers.
func skipReason(lines []string) string {
	var parts []string
	for _, l := range lines {
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "=== ") || strings.HasPrefix(t, "--- SKIP") {
			continue
		}
		parts = append(parts, t)
	}
	if len(parts) == 0 {
		return "(no reason given)"
	}
	return strings.Join(parts, " / ")
}
