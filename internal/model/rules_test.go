package model

import (
	"strings"
	"testing"
)

func TestCheckVCPU(t *testing.T) {
	for _, c := range []struct {
		n   int
		err string
	}{
		{1, ""}, {2, ""}, {64, ""},
		{0, "--vcpu must be between 1 and 64, got 0"},
		{-1, "--vcpu must be between 1 and 64, got -1"},
		{65, "--vcpu must be between 1 and 64, got 65"},
	} {
		checkErr(t, "vcpu", c.n, CheckVCPU("--vcpu", c.n), c.err)
	}
}

func TestCheckMemoryMiB(t *testing.T) {
	for _, c := range []struct {
		n   int
		err string
	}{
		{128, ""}, {4096, ""},
		{127, "memory_mib must be at least 128 MiB, got 127"},
		{0, "memory_mib must be at least 128 MiB, got 0"},
		{-5, "memory_mib must be at least 128 MiB, got -5"},
	} {
		checkErr(t, "memory", c.n, CheckMemoryMiB("memory_mib", c.n), c.err)
	}
}

func TestParseDiskSize(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
		err  string
	}{
		{"64M", 64 << 20, ""}, {"8G", 8 << 30, ""}, {"1t", 1 << 40, ""}, {"67108864", 64 << 20, ""},
		{"63M", 0, "disk size 63M is too small (minimum 64M)"},
		{"lots", 0, `disk size: invalid size "lots"`},
		{"", 0, `disk size: invalid size ""`},
		{"-8G", 0, "invalid size"},
		{"NaN", 0, "invalid size"},
		{"Inf", 0, "invalid size"},
		{"1e30T", 0, "invalid size"},
	} {
		got, err := ParseDiskSize("disk size", c.in)
		checkErr(t, "disk", c.in, err, c.err)
		if got != c.want {
			t.Errorf("ParseDiskSize(%q) = %d, want %d", c.in, got, c.want)
		}
	}
}

func TestCheckNetworkMode(t *testing.T) {
	for _, c := range []struct {
		mode string
		auto bool
		err  string
	}{
		{"bridge", false, ""}, {"user", false, ""}, {"none", false, ""},
		{"auto", true, ""}, {"user", true, ""},
		{"auto", false, `--network must be bridge, user or none, got "auto"`},
		{"", false, `--network must be bridge, user or none, got ""`},
		{"tap", false, `--network must be bridge, user or none, got "tap"`},
		{"Bridge", true, `--network must be auto, bridge, user or none, got "Bridge"`},
	} {
		field := "--network"
		checkErr(t, "network", c.mode, CheckNetworkMode(field, c.mode, c.auto), c.err)
	}
}

func TestCheckNetworkOptions(t *testing.T) {
	const needNet = "--nat and --publish need a network (bridge or user)"
	for _, c := range []struct {
		mode    string
		nat     bool
		publish int
		err     string
	}{
		{"bridge", true, 2, ""}, {"user", true, 1, ""}, {"none", false, 0, ""},
		{"none", true, 0, needNet}, {"none", false, 1, needNet},
	} {
		checkErr(t, "network options", c, CheckNetworkOptions(c.mode, c.nat, c.publish), c.err)
	}
}

func checkErr(t *testing.T, what string, in any, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Errorf("%s %v refused: %v", what, in, err)
	case want != "" && err == nil:
		t.Errorf("%s %v accepted", what, in)
	case want != "" && !strings.Contains(err.Error(), want):
		t.Errorf("%s %v: error %q lacks %q", what, in, err, want)
	}
}
