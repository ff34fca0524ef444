package daemon

import (
	"context"
	"slices"
	"testing"
	"time"

	"banger/internal/api"
)

func (f *fakeVMs) Readiness(ctx context.Context, ref string) (api.Readiness, error) {
	if _, err := f.vm(ref); err != nil {
		return api.Readiness{}, err
	}
	return api.Readiness{Agent: true, SSHD: true, SystemState: "starting"}, nil
}

// WaitReady records the wait it was asked for among the opened streams.
func (f *fakeVMs) WaitReady(ctx context.Context, ref, level string, timeout time.Duration) (api.Readiness, error) {
	f.mu.Lock()
	f.opened = append(f.opened, "wait:"+level+" "+timeout.String())
	f.mu.Unlock()
	return api.Readiness{Agent: true, SSH: true, SSHD: true}, nil
}

func TestReadinessRoutes(t *testing.T) {
	ts := startServer(t)
	ctx := context.Background()
	var rd api.Readiness
	if err := ts.c.Do(ctx, "GET", "/vms/box/readiness", nil, &rd); err != nil || !rd.Agent || rd.SSH || rd.SystemState != "starting" {
		t.Errorf("readiness: %+v %v", rd, err)
	}
	if err := ts.c.Do(ctx, "POST", "/vms/box/wait", api.VMWaitParams{For: api.WaitSSH, TimeoutMS: 1500}, &rd); err != nil || !rd.SSH {
		t.Errorf("wait: %+v %v", rd, err)
	}
	for _, body := range []string{`{}`, `{"for":"ssh","timeout_ms":-1}`, `{"for":"ssh","timeout_ms":999999999999}`} {
		if status, ae := ts.raw(t, "POST", "/v1/vms/box/wait", body); status != 400 || ae.Code != api.CodeBadRequest {
			t.Errorf("wait %s: %d %+v", body, status, ae)
		}
	}
	if status, ae := ts.raw(t, "GET", "/v1/vms/nope/readiness", ""); status != 404 || ae.Code != api.CodeNotFound {
		t.Errorf("readiness of a missing vm: %d %+v", status, ae)
	}
	ts.vms.mu.Lock()
	defer ts.vms.mu.Unlock()
	if !slices.Equal(ts.vms.opened, []string{"wait:ssh 1.5s"}) {
		t.Errorf("waits that reached the manager: %v", ts.vms.opened)
	}
}
