package main

import (
	"regexp"
	"strings"
	"testing"
)

const passingRun = `{"Action":"start","Package":"p/a"}
{"Action":"run","Package":"p/a","Test":"TestOK"}
{"Action":"output","Package":"p/a","Test":"TestOK","Output":"=== RUN   TestOK\n"}
{"Action":"pass","Package":"p/a","Test":"TestOK","Elapsed":0}
{"Action":"run","Package":"p/a","Test":"TestNoVsock"}
{"Action":"output","Package":"p/a","Test":"TestNoVsock","Output":"=== RUN   TestNoVsock\n"}
{"Action":"output","Package":"p/a","Test":"TestNoVsock","Output":"    a_test.go:9: skipping: no vsock here\n"}
{"Action":"output","Package":"p/a","Test":"TestNoVsock","Output":"--- SKIP: TestNoVsock (0.00s)\n"}
{"Action":"skip","Package":"p/a","Test":"TestNoVsock","Elapsed":0}
{"Action":"output","Package":"p/a","Output":"PASS\n"}
{"Action":"output","Package":"p/a","Output":"contract: 21 tests validated\n"}
{"Action":"output","Package":"p/a","Output":"ok  \tp/a\t0.1s\n"}
{"Action":"pass","Package":"p/a","Elapsed":0.1}
{"Action":"skip","Package":"p/empty","Elapsed":0}
`

func run(t *testing.T, in string, want ...string) (bool, string) {
	t.Helper()
	var w wants
	for _, p := range want {
		w = append(w, regexp.MustCompile(p))
	}
	var out strings.Builder
	ok, err := report(strings.NewReader(in), &out, w)
	if err != nil {
		t.Fatal(err)
	}
	return ok, out.String()
}

func TestReportPassing(t *testing.T) {
	ok, out := run(t, passingRun, "^TestOK$")
	for _, s := range []string{"ok  \tp/a\t0.100s\n", "    \tcontract: 21 tests validated\n", "?   \tp/empty\t[no test files]\n",
		"skipped tests (1): not run here, with their reasons\n  p/a TestNoVsock: a_test.go:9: skipping: no vsock here\n"} {
		if !strings.Contains(out, s) {
			t.Errorf("output lacks %q:\n%s", s, out)
		}
	}
	if !ok || strings.Contains(out, "PASS\n") {
		t.Errorf("ok=%v:\n%s", ok, out)
	}
	// A wanted test that did not pass fails the report.
	if ok, out := run(t, passingRun, "^TestNoVsock$"); ok || !strings.Contains(out, `no passing test matches "^TestNoVsock$"`) {
		t.Errorf("skipped wanted test: ok=%v\n%s", ok, out)
	}
}

func TestReportFailures(t *testing.T) {
	failing := `{"Action":"output","Package":"p/b","Test":"TestBad","Output":"    b_test.go:3: boom\n"}
{"Action":"fail","Package":"p/b","Test":"TestBad","Elapsed":0}
{"Action":"fail","Package":"p/b","Elapsed":0}
`
	ok, out := run(t, failing)
	if ok || !strings.Contains(out, "--- FAIL: TestBad (p/b)\n        b_test.go:3: boom\n") || !strings.Contains(out, "FAIL\tp/b\n") {
		t.Errorf("ok=%v:\n%s", ok, out)
	}
	build := `{"ImportPath":"p/c [p/c.test]","Action":"build-output","Output":"c_test.go:3: undefined: x\n"}
{"ImportPath":"p/c [p/c.test]","Action":"build-fail"}
{"Action":"fail","Package":"p/c","Elapsed":0,"FailedBuild":"p/c [p/c.test]"}
`
	ok, out = run(t, build)
	if ok || !strings.Contains(out, "undefined: x") {
		t.Errorf("build failure: ok=%v:\n%s", ok, out)
	}
	if ok, out := run(t, ""); ok || !strings.Contains(out, "no package was tested") {
		t.Errorf("empty input: ok=%v:\n%s", ok, out)
	}
}
