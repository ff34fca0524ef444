package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	"banger/internal/model"
)

func openTest(t *testing.T) *Store {
	t.Helper()
	s, err := Open(context.Background(), filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func testVM(id, name string) *model.VM {
	return &model.VM{
		ID:        id,
		Name:      name,
		Image:     "debian",
		Kernel:    "6.1",
		VCPU:      2,
		MemoryMiB: 1024,
		DiskSize:  8 << 30,
		State:     model.StateCreated,
	}
}

// fullVM sets every field to a non-zero value, with times in a non-UTC zone
// and nanosecond precision.
func fullVM() *model.VM {
	zone := time.FixedZone("X", -7*3600)
	return &model.VM{
		ID:         "0f8e2c3a9b7d4e1f",
		Name:       "web-1",
		Image:      "alpine",
		Kernel:     "6.6.1",
		VCPU:       4,
		MemoryMiB:  2048,
		DiskSize:   10<<30 + 7,
		State:      model.StateRunning,
		PID:        12345,
		Accel:      "kvm",
		AutoRemove: true,
		LastError:  "it's \"fine\"\nreally",
		CreatedAt:  time.Date(2024, 2, 29, 23, 59, 59, 123456789, zone),
		UpdatedAt:  time.Date(2024, 3, 1, 0, 0, 0, 1, zone),
		StartedAt:  time.Date(2024, 3, 1, 0, 0, 1, 0, zone),
	}
}

func assertUTC(t *testing.T, what string, ts ...time.Time) {
	t.Helper()
	for _, tm := range ts {
		if !tm.IsZero() && tm.Location() != time.UTC {
			t.Errorf("%s: time %v is in %v, want UTC", what, tm, tm.Location())
		}
	}
}

// equalVM compares VMs field by field, times with Equal.
func equalVM(a, b *model.VM) bool {
	x, y := *a, *b
	if !x.CreatedAt.Equal(y.CreatedAt) || !x.UpdatedAt.Equal(y.UpdatedAt) || !x.StartedAt.Equal(y.StartedAt) {
		return false
	}
	x.CreatedAt, x.UpdatedAt, x.StartedAt = time.Time{}, time.Time{}, time.Time{}
	y.CreatedAt, y.UpdatedAt, y.StartedAt = time.Time{}, time.Time{}, time.Time{}
	return reflect.DeepEqual(x, y)
}

func TestVMRoundTrip(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	want := fullVM()
	in := *want
	if err := s.CreateVM(ctx, &in); err != nil {
		t.Fatalf("CreateVM: %v", err)
	}
	if !in.CreatedAt.Equal(want.CreatedAt) || !in.UpdatedAt.Equal(want.UpdatedAt) {
		t.Errorf("CreateVM changed explicit timestamps: %v %v", in.CreatedAt, in.UpdatedAt)
	}
	for _, key := range []string{want.ID, want.Name} {
		got, err := s.GetVM(ctx, key)
		if err != nil {
			t.Fatalf("GetVM(%q): %v", key, err)
		}
		if !equalVM(got, want) {
			t.Errorf("GetVM(%q) =\n%+v\nwant\n%+v", key, got, want)
		}
		assertUTC(t, "GetVM", got.CreatedAt, got.UpdatedAt, got.StartedAt)
	}
	list, err := s.ListVMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || !equalVM(list[0], want) {
		t.Errorf("ListVMs = %+v", list)
	}
}

func TestVMZeroValuesAndDefaults(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	before := time.Now()
	vm := &model.VM{ID: "id", Name: "bare", State: model.StateCreated}
	if err := s.CreateVM(ctx, vm); err != nil {
		t.Fatalf("CreateVM: %v", err)
	}
	if vm.CreatedAt.IsZero() || vm.UpdatedAt.IsZero() || vm.CreatedAt.Before(before.Add(-time.Second)) {
		t.Errorf("CreateVM did not set timestamps: %v %v", vm.CreatedAt, vm.UpdatedAt)
	}
	if !vm.StartedAt.IsZero() {
		t.Errorf("StartedAt = %v, want zero", vm.StartedAt)
	}
	got, err := s.GetVM(ctx, "bare")
	if err != nil {
		t.Fatal(err)
	}
	if !got.StartedAt.IsZero() {
		t.Errorf("zero StartedAt came back as %v", got.StartedAt)
	}
	if !equalVM(got, vm) {
		t.Errorf("GetVM =\n%+v\nwant\n%+v", got, vm)
	}
	// reflect.DeepEqual also checks the zero StartedAt is the canonical zero
	// time, not merely IsZero with some location.
	if !reflect.DeepEqual(got.StartedAt, time.Time{}) {
		t.Errorf("StartedAt = %#v, want time.Time{}", got.StartedAt)
	}
}

func TestVMUpdate(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	created := time.Date(2020, 1, 2, 3, 4, 5, 6, time.UTC)
	vm := testVM("id-1", "one")
	vm.CreatedAt, vm.UpdatedAt = created, created
	if err := s.CreateVM(ctx, vm); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateVM(ctx, testVM("id-2", "two")); err != nil {
		t.Fatal(err)
	}

	upd := fullVM()
	upd.ID = "id-1"
	upd.Name = "renamed"
	upd.CreatedAt = time.Date(1999, 1, 1, 0, 0, 0, 0, time.UTC) // ignored
	upd.UpdatedAt = time.Time{}
	if err := s.UpdateVM(ctx, upd); err != nil {
		t.Fatalf("UpdateVM: %v", err)
	}
	if !upd.CreatedAt.Equal(created) {
		t.Errorf("UpdateVM: CreatedAt = %v, want stored %v", upd.CreatedAt, created)
	}
	if !upd.UpdatedAt.After(created) {
		t.Errorf("UpdateVM did not bump UpdatedAt: %v", upd.UpdatedAt)
	}
	got, err := s.GetVM(ctx, "id-1")
	if err != nil {
		t.Fatal(err)
	}
	if !equalVM(got, upd) {
		t.Errorf("after update GetVM =\n%+v\nwant\n%+v", got, upd)
	}
	if _, err := s.GetVM(ctx, "one"); !errors.Is(err, ErrNotFound) {
		t.Errorf("old name still resolves: %v", err)
	}

	// Clearing StartedAt stores NULL again.
	got.StartedAt = time.Time{}
	prev := got.UpdatedAt
	if err := s.UpdateVM(ctx, got); err != nil {
		t.Fatal(err)
	}
	if got.UpdatedAt.Before(prev) {
		t.Errorf("UpdatedAt went backwards: %v -> %v", prev, got.UpdatedAt)
	}
	again, err := s.GetVM(ctx, "id-1")
	if err != nil {
		t.Fatal(err)
	}
	if !again.StartedAt.IsZero() {
		t.Errorf("StartedAt = %v after clearing", again.StartedAt)
	}

	// Renaming onto another VM's name.
	clash := *again
	clash.Name = "two"
	if err := s.UpdateVM(ctx, &clash); !errors.Is(err, ErrExists) {
		t.Errorf("rename onto existing name: err = %v, want ErrExists", err)
	}
	// Unknown ID.
	missing := testVM("nope", "nope")
	if err := s.UpdateVM(ctx, missing); !errors.Is(err, ErrNotFound) {
		t.Errorf("UpdateVM(missing): err = %v, want ErrNotFound", err)
	}
}

func TestVMDuplicates(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	if err := s.CreateVM(ctx, testVM("id-1", "one")); err != nil {
		t.Fatal(err)
	}
	for _, vm := range []*model.VM{testVM("id-2", "one"), testVM("id-1", "other")} {
		orig := *vm
		err := s.CreateVM(ctx, vm)
		if !errors.Is(err, ErrExists) {
			t.Errorf("CreateVM(%s/%s): err = %v, want ErrExists", vm.ID, vm.Name, err)
		}
		if !reflect.DeepEqual(*vm, orig) {
			t.Errorf("failed CreateVM modified its argument")
		}
	}
	if err := s.CreateVM(ctx, testVM("", "x")); err == nil {
		t.Error("CreateVM with empty ID succeeded")
	}
	if err := s.CreateVM(ctx, testVM("x", "")); err == nil {
		t.Error("CreateVM with empty name succeeded")
	}
	if err := s.CreateVM(ctx, nil); err == nil {
		t.Error("CreateVM(nil) succeeded")
	}
}

func TestVMNotFound(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	if _, err := s.GetVM(ctx, "ghost"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetVM: err = %v, want ErrNotFound", err)
	}
	if err := s.DeleteVM(ctx, "ghost"); !errors.Is(err, ErrNotFound) {
		t.Errorf("DeleteVM: err = %v, want ErrNotFound", err)
	}
	if err := s.CreateVM(ctx, testVM("id-1", "one")); err != nil {
		t.Fatal(err)
	}
	// DeleteVM takes an ID, not a name.
	if err := s.DeleteVM(ctx, "one"); !errors.Is(err, ErrNotFound) {
		t.Errorf("DeleteVM(name): err = %v, want ErrNotFound", err)
	}
	if err := s.DeleteVM(ctx, "id-1"); err != nil {
		t.Fatalf("DeleteVM: %v", err)
	}
	if _, err := s.GetVM(ctx, "id-1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetVM after delete: err = %v, want ErrNotFound", err)
	}
	if err := s.DeleteVM(ctx, "id-1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second DeleteVM: err = %v, want ErrNotFound", err)
	}
}

func TestGetVMPrefersID(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	a := testVM("aaaa", "bbbb") // name equals b's ID
	b := testVM("bbbb", "cccc")
	for _, vm := range []*model.VM{a, b} {
		if err := s.CreateVM(ctx, vm); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.GetVM(ctx, "bbbb")
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != "bbbb" {
		t.Errorf("GetVM(bbbb) = VM %s, want the one whose ID matches", got.ID)
	}
}

func TestListVMsOrder(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	if list, err := s.ListVMs(ctx); err != nil || list == nil || len(list) != 0 {
		t.Fatalf("ListVMs on empty store = %#v, %v; want empty non-nil", list, err)
	}
	base := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	// Whole seconds, fractions, ties and a non-UTC zone: text order must be
	// time order.
	vms := []struct {
		name string
		at   time.Time
	}{
		{"d", base.Add(time.Second)},
		{"c", base.Add(500 * time.Millisecond)},
		{"b", base},
		{"a", base},
		{"e", base.Add(2 * time.Second).In(time.FixedZone("E", 5*3600))},
		{"f", base.Add(time.Nanosecond)},
	}
	for i, v := range vms {
		vm := testVM(fmt.Sprintf("id-%d", i), v.name)
		vm.CreatedAt = v.at
		if err := s.CreateVM(ctx, vm); err != nil {
			t.Fatal(err)
		}
	}
	list, err := s.ListVMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, vm := range list {
		got = append(got, vm.Name)
	}
	want := []string{"a", "b", "f", "c", "d", "e"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ListVMs order = %v, want %v", got, want)
	}
}

func TestCountVMsUsing(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	mk := func(id, image, kernel string) {
		t.Helper()
		vm := testVM(id, "vm-"+id)
		vm.Image, vm.Kernel = image, kernel
		if err := s.CreateVM(ctx, vm); err != nil {
			t.Fatal(err)
		}
	}
	mk("1", "debian", "6.1")
	mk("2", "debian", "6.6")
	mk("3", "alpine", "6.6")
	for _, tt := range []struct {
		image string
		want  int
	}{{"debian", 2}, {"alpine", 1}, {"arch", 0}, {"", 0}} {
		if n, err := s.CountVMsUsingImage(ctx, tt.image); err != nil || n != tt.want {
			t.Errorf("CountVMsUsingImage(%q) = %d, %v; want %d", tt.image, n, err, tt.want)
		}
	}
	for _, tt := range []struct {
		kernel string
		want   int
	}{{"6.1", 1}, {"6.6", 2}, {"5.10", 0}} {
		if n, err := s.CountVMsUsingKernel(ctx, tt.kernel); err != nil || n != tt.want {
			t.Errorf("CountVMsUsingKernel(%q) = %d, %v; want %d", tt.kernel, n, err, tt.want)
		}
	}
	if err := s.DeleteVM(ctx, "1"); err != nil {
		t.Fatal(err)
	}
	if n, err := s.CountVMsUsingImage(ctx, "debian"); err != nil || n != 1 {
		t.Errorf("after delete CountVMsUsingImage(debian) = %d, %v; want 1", n, err)
	}
}

func TestKernelCRUD(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	want := &model.Kernel{
		Name:      "6.6.1",
		Version:   "6.6.1-banger",
		Vmlinux:   "/var/lib/banger/kernels/6.6.1/vmlinux",
		Initramfs: "/var/lib/banger/kernels/6.6.1/initramfs.cpio.gz",
		SHA256:    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
		Source:    "https://example.com/vmlinux",
		CreatedAt: time.Date(2024, 1, 1, 1, 1, 1, 999999999, time.FixedZone("Y", 3600)),
	}
	in := *want
	if err := s.CreateKernel(ctx, &in); err != nil {
		t.Fatalf("CreateKernel: %v", err)
	}
	got, err := s.GetKernel(ctx, want.Name)
	if err != nil {
		t.Fatalf("GetKernel: %v", err)
	}
	assertUTC(t, "GetKernel", got.CreatedAt)
	if !got.CreatedAt.Equal(want.CreatedAt) || got.Name != want.Name || got.Version != want.Version ||
		got.Vmlinux != want.Vmlinux || got.Initramfs != want.Initramfs || got.SHA256 != want.SHA256 ||
		got.Source != want.Source {
		t.Errorf("GetKernel =\n%+v\nwant\n%+v", got, want)
	}

	if err := s.CreateKernel(ctx, &model.Kernel{Name: want.Name}); !errors.Is(err, ErrExists) {
		t.Errorf("duplicate CreateKernel: err = %v, want ErrExists", err)
	}
	bare := &model.Kernel{Name: "5.10"}
	if err := s.CreateKernel(ctx, bare); err != nil {
		t.Fatal(err)
	}
	if bare.CreatedAt.IsZero() {
		t.Error("CreateKernel did not set CreatedAt")
	}
	list, err := s.ListKernels(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Name != "5.10" || list[1].Name != "6.6.1" {
		t.Errorf("ListKernels = %+v, want 5.10, 6.6.1", list)
	}

	if _, err := s.GetKernel(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetKernel(missing): err = %v, want ErrNotFound", err)
	}
	if err := s.DeleteKernel(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("DeleteKernel(missing): err = %v, want ErrNotFound", err)
	}
	if err := s.DeleteKernel(ctx, want.Name); err != nil {
		t.Fatalf("DeleteKernel: %v", err)
	}
	if _, err := s.GetKernel(ctx, want.Name); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetKernel after delete: err = %v, want ErrNotFound", err)
	}
}

func TestImageCRUD(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	want := &model.Image{
		Name:      "debian",
		Rootfs:    "/var/lib/banger/images/debian/rootfs.ext4",
		Kernel:    "6.6.1",
		SizeBytes: 2<<30 + 3,
		Source:    "docker.io/library/debian:bookworm",
		CreatedAt: time.Date(2023, 12, 31, 23, 59, 59, 5, time.UTC),
	}
	in := *want
	if err := s.CreateImage(ctx, &in); err != nil {
		t.Fatalf("CreateImage: %v", err)
	}
	got, err := s.GetImage(ctx, want.Name)
	if err != nil {
		t.Fatalf("GetImage: %v", err)
	}
	assertUTC(t, "GetImage", got.CreatedAt)
	if *got != *want {
		t.Errorf("GetImage =\n%+v\nwant\n%+v", got, want)
	}

	if err := s.CreateImage(ctx, &model.Image{Name: want.Name}); !errors.Is(err, ErrExists) {
		t.Errorf("duplicate CreateImage: err = %v, want ErrExists", err)
	}
	bare := &model.Image{Name: "alpine"}
	if err := s.CreateImage(ctx, bare); err != nil {
		t.Fatal(err)
	}
	if bare.CreatedAt.IsZero() {
		t.Error("CreateImage did not set CreatedAt")
	}
	list, err := s.ListImages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Name != "alpine" || list[1].Name != "debian" {
		t.Errorf("ListImages = %+v, want alpine, debian", list)
	}

	if _, err := s.GetImage(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetImage(missing): err = %v, want ErrNotFound", err)
	}
	if err := s.DeleteImage(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("DeleteImage(missing): err = %v, want ErrNotFound", err)
	}
	if err := s.DeleteImage(ctx, want.Name); err != nil {
		t.Fatalf("DeleteImage: %v", err)
	}
	if _, err := s.GetImage(ctx, want.Name); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetImage after delete: err = %v, want ErrNotFound", err)
	}
}

func TestEmptyListsAreNonNil(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	k, err := s.ListKernels(ctx)
	if err != nil || k == nil {
		t.Errorf("ListKernels = %#v, %v", k, err)
	}
	i, err := s.ListImages(ctx)
	if err != nil || i == nil {
		t.Errorf("ListImages = %#v, %v", i, err)
	}
}

func TestDataPersistsAcrossReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	want := fullVM()
	if err := s.CreateVM(ctx, want); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.GetVM(ctx, want.Name)
	if err != nil {
		t.Fatal(err)
	}
	if !equalVM(got, want) {
		t.Errorf("after reopen GetVM =\n%+v\nwant\n%+v", got, want)
	}
}

func TestCanceledContext(t *testing.T) {
	s := openTest(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.GetVM(ctx, "x"); !errors.Is(err, context.Canceled) {
		t.Errorf("GetVM with canceled context: err = %v, want context.Canceled", err)
	}
	if err := s.CreateVM(ctx, testVM("x", "x")); err == nil {
		t.Error("CreateVM with canceled context succeeded")
	}
}

func TestTimeOutOfRange(t *testing.T) {
	s := openTest(t)
	vm := testVM("x", "x")
	vm.CreatedAt = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := s.CreateVM(context.Background(), vm); err == nil {
		t.Error("CreateVM with year 10000 succeeded")
	}
}

const workers = 8

func TestConcurrentCreateDistinctNames(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.db")
	// Two handles on the same file, as two processes would have.
	stores := make([]*Store, 2)
	for i := range stores {
		s, err := Open(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		stores[i] = s
	}
	const perWorker = 10
	var wg sync.WaitGroup
	errs := make(chan error, workers*perWorker)
	start := make(chan struct{})
	for w := range workers {
		wg.Go(func() {
			<-start
			s := stores[w%len(stores)]
			for j := range perWorker {
				id := fmt.Sprintf("vm-%d-%d", w, j)
				if err := s.CreateVM(ctx, testVM(id, id)); err != nil {
					errs <- fmt.Errorf("%s: %w", id, err)
				}
				// Interleave reads with the writes.
				if _, err := s.ListVMs(ctx); err != nil {
					errs <- fmt.Errorf("list: %w", err)
				}
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	list, err := stores[0].ListVMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != workers*perWorker {
		t.Errorf("ListVMs has %d VMs, want %d", len(list), workers*perWorker)
	}
}

func TestConcurrentCreateSameName(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	var wg sync.WaitGroup
	errs := make([]error, workers)
	start := make(chan struct{})
	for w := range workers {
		wg.Go(func() {
			<-start
			errs[w] = s.CreateVM(ctx, testVM(fmt.Sprintf("id-%d", w), "contested"))
		})
	}
	close(start)
	wg.Wait()
	ok := 0
	for w, err := range errs {
		switch {
		case err == nil:
			ok++
		case errors.Is(err, ErrExists):
		default:
			t.Errorf("worker %d: unexpected error %v", w, err)
		}
	}
	if ok != 1 {
		t.Errorf("%d creates succeeded, want exactly 1", ok)
	}
	list, err := s.ListVMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 {
		t.Errorf("ListVMs has %d VMs, want 1", len(list))
	}
}

func TestVMWorkspaceFields(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	vm := &model.VM{ID: "ws1", Name: "ws", State: model.StateCreated}
	if err := s.CreateVM(ctx, vm); err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetVM(ctx, "ws"); err != nil || got.WorkspaceIncludeUntracked {
		t.Errorf("fresh vm: %+v %v", got, err)
	}
	vm.WorkspacePath, vm.WorkspaceMode, vm.WorkspaceHead = "/home/u/repo", "full_copy", "abc123"
	vm.WorkspaceIncludeUntracked = true
	if err := s.UpdateVM(ctx, vm); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetVM(ctx, "ws")
	if err != nil || got.WorkspacePath != "/home/u/repo" || got.WorkspaceMode != "full_copy" || got.WorkspaceHead != "abc123" || !got.WorkspaceIncludeUntracked {
		t.Errorf("workspace fields: %+v %v", got, err)
	}
	// Created with the option set, too.
	vm2 := &model.VM{ID: "ws2", Name: "ws2", State: model.StateCreated, WorkspacePath: "/r", WorkspaceMode: "copy", WorkspaceIncludeUntracked: true}
	if err := s.CreateVM(ctx, vm2); err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetVM(ctx, "ws2"); err != nil || !got.WorkspaceIncludeUntracked {
		t.Errorf("created with untracked: %+v %v", got, err)
	}
}

func TestVMNetworkFields(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	a := &model.VM{ID: "n1", Name: "a", State: model.StateCreated, Network: "bridge", IP: "172.16.0.2", NAT: true,
		Publish: []model.PortMap{{HostIP: "127.0.0.1", HostPort: 8080, GuestPort: 80}}, SSHPort: 0}
	if err := s.CreateVM(ctx, a); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetVM(ctx, "a")
	if err != nil || got.Network != "bridge" || got.IP != "172.16.0.2" || !got.NAT || len(got.Publish) != 1 || got.Publish[0].GuestPort != 80 {
		t.Fatalf("network fields: %+v %v", got, err)
	}
	// One address, one VM.
	b := &model.VM{ID: "n2", Name: "b", State: model.StateCreated, Network: "bridge", IP: "172.16.0.2"}
	if err := s.CreateVM(ctx, b); !errors.Is(err, ErrExists) {
		t.Errorf("duplicate address: %v", err)
	}
	b.IP = ""
	c := &model.VM{ID: "n3", Name: "c", State: model.StateCreated}
	if err := s.CreateVM(ctx, b); err != nil {
		t.Errorf("empty address is not unique-constrained: %v", err)
	}
	if err := s.CreateVM(ctx, c); err != nil {
		t.Errorf("second empty address: %v", err)
	}
}
