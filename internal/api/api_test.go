package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"
)

func TestError(t *testing.T) {
	err := Errorf(CodeNotFound, "vm %q not found", "x")
	if err.Code != CodeNotFound || err.Error() != `vm "x" not found` || err.OpID != "" {
		t.Errorf("Errorf: %+v", err)
	}
	var ae *Error
	if !errors.As(fmt.Errorf("start: %w", err), &ae) || ae != err {
		t.Error("a wrapped *Error is not found by errors.As")
	}
	b, _ := json.Marshal(err)
	if string(b) != `{"code":"not_found","message":"vm \"x\" not found"}` {
		t.Errorf("without op id: %s", b)
	}
	err.OpID = "abcd1234"
	b, _ = json.Marshal(err)
	var back Error
	if json.Unmarshal(b, &back) != nil || back != *err {
		t.Errorf("round trip: %s -> %+v", b, back)
	}
}

// The wire names are the API: a renamed field breaks every older client.
func TestWireNames(t *testing.T) {
	for _, c := range []struct {
		v    any
		want string
	}{
		{Event{Progress: &Progress{Stage: "boot", DurationMS: 5}}, `{"progress":{"stage":"boot","duration_ms":5}}`},
		{Event{Error: &Error{Code: CodeConflict, Message: "m", OpID: "01"}}, `{"error":{"code":"conflict","message":"m","op_id":"01"}}`},
		{Event{Result: 1}, `{"result":1}`},
		{WorkspaceParams{Path: "/r", Mode: "copy", IncludeUntracked: true, Files: 2, Bytes: 3}, `{"path":"/r","mode":"copy","include_untracked":true,"files":2,"bytes":3}`},
		{WorkspaceParams{Path: "/r", Mode: "copy"}, `{"path":"/r","mode":"copy","files":0,"bytes":0}`},
		{VMCreateParams{Name: "a", NoWorkDisk: true}, `{"name":"a"}`},
	} {
		b, err := json.Marshal(c.v)
		if err != nil || string(b) != c.want {
			t.Errorf("%T: %s %v; want %s", c.v, b, err, c.want)
		}
	}
}

func TestCheckGuestFiles(t *testing.T) {
	ok := []GuestFile{{Path: "/root/.claude/.credentials.json", Data: []byte("{}")}, {Path: "/root/.claude.json"}}
	if err := CheckGuestFiles(ok); err != nil {
		t.Fatal(err)
	}
	many := make([]GuestFile, GuestFileMaxCount+1)
	for i := range many {
		many[i] = GuestFile{Path: fmt.Sprintf("/root/f%d", i)}
	}
	bigs := make([]GuestFile, GuestFilesMax/GuestFileMaxBytes+1)
	for i := range bigs {
		bigs[i] = GuestFile{Path: fmt.Sprintf("/root/f%d", i), Data: make([]byte, GuestFileMaxBytes)}
	}
	bad := map[string][]GuestFile{
		"outside /root": {{Path: "/etc/passwd"}},
		"/root itself":  {{Path: "/root"}},
		"relative":      {{Path: "root/x"}},
		"unclean":       {{Path: "/root/a/../../etc/x"}},
		"trailing":      {{Path: "/root/x/"}},
		"empty":         {{}},
		"twice":         {{Path: "/root/x"}, {Path: "/root/x"}},
		"too large":     {{Path: "/root/x", Data: make([]byte, GuestFileMaxBytes+1)}},
		"too many":      many,
		"too much":      bigs,
	}
	for name, fs := range bad {
		if err := CheckGuestFiles(fs); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
}
