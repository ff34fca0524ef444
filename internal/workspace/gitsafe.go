package workspace

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"banger/internal/hosttools"
)

// The repository's own configuration (.git/config and what it includes)
// is hostile input: git would run commands it names while banger only
// reads the repository. gitCommand therefore runs git with, on top of
// every other setting (GIT_CONFIG_COUNT has command-line precedence and
// passes keys and values apart, so no name can smuggle an '='):
//   - core.fsmonitor=false: `git status` and `ls-files` would run the
//     fsmonitor hook the repository names;
//   - every filter driver's clean, smudge and process emptied: status
//     runs clean filters on files whose index entry is stale;
//   - core.hooksPath=/dev/null and --no-optional-locks (status would
//     otherwise rewrite the index).

// maxFilterConfig bounds what is read of git's filter settings.
const maxFilterConfig = 1 << 20

// gitCommand is `git -C dir args...` with the repository's commands
// neutralised (see above).
func gitCommand(ctx context.Context, dir string, args ...string) (*exec.Cmd, error) {
	env, err := safeGitEnv(ctx, dir)
	if err != nil {
		return nil, err
	}
	cmd, err := hosttools.Command(ctx, hosttools.Git, append([]string{"--no-optional-locks", "-C", dir}, args...)...)
	if err != nil {
		return nil, err
	}
	cmd.Env = append(os.Environ(), env...)
	return cmd, nil
}

// safeGitEnv returns the GIT_CONFIG_* variables that override what the
// repository at dir could make git run. Reading the configuration runs
// nothing.
func safeGitEnv(ctx context.Context, dir string) ([]string, error) {
	kv := [][2]string{{"core.fsmonitor", "false"}, {"core.hooksPath", os.DevNull}}
	cmd, err := hosttools.Command(ctx, hosttools.Git, "-C", dir, "config", "--null", "--name-only", "--get-regexp", `^filter\.`)
	if err != nil {
		return nil, err
	}
	var stdout bytes.Buffer
	out := &limitedBuffer{buf: &stdout, max: maxFilterConfig}
	cmd.Stdout = out
	// Exit 1 means no filter is configured. Other failures (a broken
	// config file) make the caller's own git call fail as well; only a
	// cut list would be unsafe, and it is refused.
	_ = cmd.Run()
	if out.over {
		return nil, fmt.Errorf("git filter settings of %s: more than %d bytes", dir, maxFilterConfig)
	}
	seen := map[string]bool{}
	for _, key := range strings.Split(stdout.String(), "\x00") {
		// filter.<name>.<setting>; <name> may hold dots.
		if !strings.HasPrefix(key, "filter.") {
			continue
		}
		i := strings.LastIndexByte(key, '.')
		if i <= len("filter.") {
			continue
		}
		name := key[len("filter."):i]
		if seen[name] {
			continue
		}
		seen[name] = true
		for _, setting := range []string{"clean", "smudge", "process"} {
			kv = append(kv, [2]string{"filter." + name + "." + setting, ""})
		}
	}
	env := []string{fmt.Sprintf("GIT_CONFIG_COUNT=%d", len(kv))}
	for i, p := range kv {
		env = append(env, fmt.Sprintf("GIT_CONFIG_KEY_%d=%s", i, p[0]), fmt.Sprintf("GIT_CONFIG_VALUE_%d=%s", i, p[1]))
	}
	return env, nil
}

// limitedBuffer keeps at most max bytes; past that it fails the write
// and records it.
type limitedBuffer struct {
	buf  *bytes.Buffer
	max  int
	over bool
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if l.buf.Len()+len(p) > l.max {
		l.over = true
		return 0, fmt.Errorf("more than %d bytes", l.max)
	}
	return l.buf.Write(p)
}
