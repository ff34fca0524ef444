package cli

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
)

// Uninstall refuses while VMs run: activeVMs names them; a daemon that
// does not answer runs none that it knows of.
func TestActiveVMs(t *testing.T) {
	f := startFakeDaemon(t, map[string]string{
		"GET /vms": `[{"name":"a","state":"running"},{"name":"b","state":"stopped"},{"name":"c","state":"starting"},{"name":"d","state":"created"}]`,
	})
	got, err := activeVMs(context.Background(), f.layout.Socket())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []string{"a", "c"}) {
		t.Errorf("active VMs %v, want [a c]", got)
	}
	got, err = activeVMs(context.Background(), filepath.Join(t.TempDir(), "absent.sock"))
	if err != nil || len(got) != 0 {
		t.Errorf("no daemon: %v %v", got, err)
	}
}
