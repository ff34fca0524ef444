package updater

import (
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/mod/semver"
)

// Version is a parsed release version vMAJOR.MINOR.PATCH[-PRERELEASE].
type Version struct {
	Major, Minor, Patch uint64
	// Pre holds the dot-separated pre-release identifiers; empty for a
	// final release.
	Pre []string
}

// ParseVersion parses vMAJOR.MINOR.PATCH[-PRERELEASE] following semantic
// versioning 2.0.0 (no leading zeros, identifiers of [0-9A-Za-z-]), as
// golang.org/x/mod/semver reads it, with two refusals of banger's own:
// build metadata ("+...") is not accepted, since precedence ignores it and
// two different releases would then compare equal, and neither are the
// shorthands vMAJOR and vMAJOR.MINOR that semver allows. The leading "v"
// is required.
func ParseVersion(s string) (Version, error) {
	var v Version
	if !strings.HasPrefix(s, "v") {
		return v, fmt.Errorf("version %q does not start with \"v\"", s)
	}
	if !semver.IsValid(s) {
		return v, fmt.Errorf("version %q is not a semantic version vMAJOR.MINOR.PATCH[-PRERELEASE]", s)
	}
	if semver.Build(s) != "" {
		return v, fmt.Errorf("version %q: build metadata is not accepted", s)
	}
	if semver.Canonical(s) != s {
		return v, fmt.Errorf("version %q is not vMAJOR.MINOR.PATCH", s)
	}
	pre := semver.Prerelease(s)
	core := strings.Split(strings.TrimSuffix(s[1:], pre), ".")
	nums := make([]uint64, 3)
	for i, p := range core {
		n, err := strconv.ParseUint(p, 10, 64)
		if err != nil {
			return Version{}, fmt.Errorf("version %q: %w", s, err)
		}
		nums[i] = n
	}
	v.Major, v.Minor, v.Patch = nums[0], nums[1], nums[2]
	if pre != "" {
		v.Pre = strings.Split(pre[1:], ".")
	}
	return v, nil
}

// String formats v as vMAJOR.MINOR.PATCH[-PRERELEASE].
func (v Version) String() string {
	s := fmt.Sprintf("v%d.%d.%d", v.Major, v.Minor, v.Patch)
	if len(v.Pre) > 0 {
		s += "-" + strings.Join(v.Pre, ".")
	}
	return s
}

// Compare orders versions by semantic versioning precedence: -1 when v is
// older than w, 0 when equal, +1 when newer. A pre-release is older than
// its final release.
func (v Version) Compare(w Version) int {
	return semver.Compare(v.String(), w.String())
}

// CompareVersions orders two version strings like Version.Compare. A
// string that is not a release version - "dev", a git describe such as
// "27736fe-dirty", "" - is older than every release version; two such
// strings are equal when identical and otherwise ordered bytewise, which
// only keeps the order total.
func CompareVersions(a, b string) int {
	va, errA := ParseVersion(a)
	vb, errB := ParseVersion(b)
	switch {
	case errA == nil && errB == nil:
		return va.Compare(vb)
	case errA == nil:
		return 1
	case errB == nil:
		return -1
	}
	return strings.Compare(a, b)
}
