package doctor

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	"banger/internal/paths"
)

func TestCommand(t *testing.T) {
	l := paths.Layout{State: "/s", Config: "/c", Runtime: "/r"}
	var got []Options
	run := func(_ context.Context, gl paths.Layout, o Options) []Check {
		if gl != l {
			t.Errorf("layout %+v", gl)
		}
		got = append(got, o)
		return []Check{{Name: "qemu", Status: Pass, Detail: "7.2"}, {Name: "kvm", Status: Fail, Detail: "no", Fix: "load kvm"}}
	}
	var out, errOut bytes.Buffer
	if code := command(context.Background(), l, []string{"--probe"}, &out, &errOut, run); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	var checks []Check
	if err := json.Unmarshal(out.Bytes(), &checks); err != nil || len(checks) != 2 || checks[1].Fix != "load kvm" || checks[1].Status != Fail {
		t.Fatalf("report %q: %+v %v", out.String(), checks, err)
	}
	if len(got) != 1 || !got[0].Probe {
		t.Errorf("options %+v", got)
	}
	for _, bad := range [][]string{{"--nope"}, {"extra"}} {
		out.Reset()
		if code := command(context.Background(), l, bad, &out, &errOut, run); code != 2 || out.Len() != 0 {
			t.Errorf("%q: exit %d, out %q", bad, code, out.String())
		}
	}
	if len(got) != 1 {
		t.Errorf("checks ran for bad arguments: %d runs", len(got))
	}
}
