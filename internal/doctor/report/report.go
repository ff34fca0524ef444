// Package report holds the result of a doctor run: the checks bangerd
// makes (package doctor, run by `bangerd doctor`) and the banger CLI
// prints. It is the only part of doctor the CLI links, so the CLI does not
// link the engine drivers and the store the checks read.
package report

// Status of one check.
type Status string

// Statuses.
const (
	Pass Status = "PASS"
	Warn Status = "WARN"
	Fail Status = "FAIL"
	// Skip: the check did not run (the detail says why); neither a pass
	// nor a problem.
	Skip Status = "SKIP"
)

// Check is one line of the report. `bangerd doctor` writes the checks as
// a JSON array of these.
type Check struct {
	Name   string `json:"name"`
	Status Status `json:"status"`
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"`
}

// Failed reports whether any check failed.
func Failed(cs []Check) bool {
	for _, c := range cs {
		if c.Status == Fail {
			return true
		}
	}
	return false
}
