package doctor

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"

	"banger/internal/paths"
)

// Command is `bangerd doctor [--probe]`: it runs every check and writes
// them to stdout as a JSON array of report.Check, for `banger doctor` to
// print. It returns the process exit code: 0 when the checks ran (failed
// checks are in the report), 2 for bad arguments.
func Command(ctx context.Context, l paths.Layout, args []string, stdout, stderr io.Writer) int {
	return command(ctx, l, args, stdout, stderr, Run)
}

func command(ctx context.Context, l paths.Layout, args []string, stdout, stderr io.Writer,
	run func(context.Context, paths.Layout, Options) []Check) int {
	fs := flag.NewFlagSet("bangerd doctor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var opts Options
	fs.BoolVar(&opts.Probe, "probe", false, "boot a throwaway guest under KVM to learn whether KVM works")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "bangerd doctor: unexpected arguments %q\n", fs.Args())
		return 2
	}
	checks := run(ctx, l, opts)
	if checks == nil {
		checks = []Check{}
	}
	if err := json.NewEncoder(stdout).Encode(checks); err != nil {
		fmt.Fprintf(stderr, "bangerd doctor: write report: %v\n", err)
		return 1
	}
	return 0
}
