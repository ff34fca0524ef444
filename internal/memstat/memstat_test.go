package memstat

import (
	"os"
	"strings"
	"testing"
)

const realMeminfo = `MemTotal:         983628 kB
MemFree:          850068 kB
MemAvailable:     880112 kB
Buffers:            2524 kB
Cached:            52040 kB
SwapCached:            0 kB
HugePages_Total:       0
Hugepagesize:       2048 kB
DirectMap4k:       55160 kB
`

func TestParseMeminfo(t *testing.T) {
	m, err := ParseMeminfo(strings.NewReader(realMeminfo))
	if err != nil {
		t.Fatal(err)
	}
	if m.TotalKiB != 983628 || m.FreeKiB != 850068 || m.AvailableKiB != 880112 || m.UsedKiB() != 133560 {
		t.Errorf("got %+v, used %d", m, m.UsedKiB())
	}
}

// What a hostile guest could send instead of /proc/meminfo.
func TestParseMeminfoRefusesHostileInput(t *testing.T) {
	cases := []struct{ name, text, want string }{
		{"empty", "", "no MemTotal line"},
		{"oversize", realMeminfo + strings.Repeat("Filler:  1 kB\n", MaxMeminfo/14+1), "more than 16384 bytes"},
		{"endless line", "MemTotal: " + strings.Repeat("9", 4096) + " kB\n", "line is over 512 bytes"},
		{"no newline at all", strings.Repeat("x", MaxMeminfo+10), "more than"},
		{"duplicate key", realMeminfo + "MemFree: 1 kB\n", "MemFree appears twice"},
		{"negative", strings.Replace(realMeminfo, "850068", "-5", 1), `"-5" is not a number`},
		{"plus sign", strings.Replace(realMeminfo, "850068", "+5", 1), "not a number"},
		{"huge", strings.Replace(realMeminfo, "983628", "99999999999999999999", 1), "out of range"},
		{"above a pebibyte", strings.Replace(realMeminfo, "983628", "1099511627777", 1), "out of range"},
		{"wrong unit", strings.Replace(realMeminfo, "983628 kB", "983628 MB", 1), `is not "N kB"`},
		{"extra field", strings.Replace(realMeminfo, "983628 kB", "983628 kB 7", 1), `is not "N kB"`},
		{"missing available", strings.Replace(realMeminfo, "MemAvailable", "MemAvail", 1), "no MemAvailable line"},
		{"free above total", strings.Replace(realMeminfo, "850068", "983629", 1), "inconsistent"},
		{"zero total", "MemTotal: 0 kB\nMemFree: 0 kB\nMemAvailable: 0 kB\n", "inconsistent"},
	}
	for _, c := range cases {
		_, err := ParseMeminfo(strings.NewReader(c.text))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %q", c.name, err, c.want)
		}
	}
}

func TestParseStatusRSS(t *testing.T) {
	status := "Name:\tqemu-system-x86\nVmPeak:\t 2000000 kB\nVmRSS:\t  181234 kB\nRssAnon:\t  170000 kB\n"
	if n, err := parseStatusRSS(strings.NewReader(status)); err != nil || n != 181234 {
		t.Errorf("got %d, %v", n, err)
	}
	for _, bad := range []string{
		"Name:\tzombie\n",
		status + "VmRSS:\t1 kB\n",
		"VmRSS:\tlots kB\n",
		strings.Repeat("Name:\tx\n", maxStatus),
	} {
		if _, err := parseStatusRSS(strings.NewReader(bad)); err == nil {
			t.Errorf("accepted %.40q", bad)
		}
	}
}

func TestProcessRSS(t *testing.T) {
	n, err := ProcessRSS(os.Getpid())
	if err != nil || n <= 0 {
		t.Errorf("own rss: %d, %v", n, err)
	}
	if _, err := ProcessRSS(0); err == nil {
		t.Error("pid 0 accepted")
	}
}
