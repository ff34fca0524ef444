package updater

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"banger/internal/fetch"
	"banger/internal/fsutil"
	"banger/internal/hosttools"
)

// Stage names a step of Update or Rollback for progress reports.
type Stage string

// The stages in the order Update goes through them. StageRollback only
// happens when the swap, restart or health check fails.
const (
	StageResolve   Stage = "resolve"   // fetch the manifest, pick the release
	StagePreflight Stage = "preflight" // check the install directory is writable
	StageSignature Stage = "signature" // fetch and verify SHA256SUMS
	StageDownload  Stage = "download"  // fetch the archive, check its sha256
	StageExtract   Stage = "extract"   // unpack the binaries into staging
	StageVerify    Stage = "verify"    // staged binaries report the version
	StageSwap      Stage = "swap"      // rename the staged binaries into place
	StageRestart   Stage = "restart"   // Options.Restart
	StageHealth    Stage = "health"    // Options.Health
	StageRollback  Stage = "rollback"  // put the previous binaries back
	StageDone      Stage = "done"
)

// PreviousSuffix is appended to a binary's name for the copy an update
// keeps of the binary it replaced.
const PreviousSuffix = ".previous"

// Prefixes of the temporary entries an update makes in the install
// directory.
const (
	stagingPattern = ".banger-update-"
	probePattern   = ".banger-write-probe-"
)

// Timeouts of steps that do not depend on the caller.
const (
	versionCheckTimeout = 30 * time.Second
	// rollbackTimeout bounds the restart and health check after a rollback,
	// which run even when the caller's context is done.
	rollbackTimeout = 2 * time.Minute
)

// Options configures Check, Update and Rollback. Only ManifestURL (for
// Check and Update) is required.
type Options struct {
	// ManifestURL is where the release manifest is served.
	ManifestURL string
	// HTTPClient sends the requests; nil means a default *http.Client.
	HTTPClient Doer
	// CurrentVersion is the version running now ("dev" or a git describe
	// for a development build, which every release is newer than).
	CurrentVersion string
	// Version is the release to install; "" or "latest" is the manifest's
	// latest_stable.
	Version string
	// BinDir is the directory holding the four binaries; "" means the
	// directory of the running executable (symlinks resolved).
	BinDir string
	// PublicKeyPEM verifies signatures; "" means ReleasePublicKey.
	PublicKeyPEM string
	// Force installs the target even when it is the current version, or
	// when "latest" is older than the current version.
	Force bool
	// DryRun verifies everything and then stops before changing BinDir.
	DryRun bool

	// Progress, if set, is told when each stage starts.
	Progress func(stage Stage, detail string)
	// Restart, if set, restarts the services (the helper and the daemon)
	// so that they run the binaries now in BinDir. An automatic rollback
	// calls it again once the previous binaries are back.
	Restart func(ctx context.Context) error
	// Health, if set, waits until the restarted daemon answers, reports
	// version and is otherwise healthy (its migrations check passed); an
	// empty version means any. After an automatic rollback it is called
	// with CurrentVersion.
	Health func(ctx context.Context, version string) error
	// RunVersion runs a binary with --version and returns its output;
	// nil means RunVersion.
	RunVersion func(ctx context.Context, path string) (string, error)
	// CheckWritable reports whether this process may replace files in a
	// directory; nil means ProbeWritable.
	CheckWritable func(dir string) error
}

// CheckResult compares the current version with a release.
type CheckResult struct {
	Current string
	// Latest is the manifest's latest_stable.
	Latest string
	// Target is the release asked for (Options.Version), by default the
	// latest stable one.
	Target Release
	// UpdateAvailable is true when Target is newer than Current.
	UpdateAvailable bool
}

// Result describes a finished Update or Rollback.
type Result struct {
	From, To string
	BinDir   string
	// DryRun is true when nothing was changed on purpose.
	DryRun bool
	// Installed lists the paths written, in order.
	Installed []string
}

// UpToDateError is returned by Update, unless forced, when the target is
// the current version or "latest" is older than the current version.
type UpToDateError struct{ Current, Target string }

func (e *UpToDateError) Error() string {
	if e.Current == e.Target {
		return fmt.Sprintf("%s is already installed", e.Current)
	}
	return fmt.Sprintf("installed %s is newer than the latest release %s", e.Current, e.Target)
}

// PermissionError reports an install directory this process may not
// change.
type PermissionError struct {
	Dir string
	Err error
}

func (e *PermissionError) Error() string {
	return fmt.Sprintf("no permission to replace binaries in %s: run with sudo", e.Dir)
}

func (e *PermissionError) Unwrap() error { return e.Err }

// UpdateError reports an update that failed after the binaries were
// swapped, and what the rollback achieved.
type UpdateError struct {
	// Version is the release the update tried to install; Previous the
	// version it rolled back to.
	Version, Previous string
	// Stage is where the update failed: swap, restart or health.
	Stage Stage
	Err   error
	// RollbackErr is set when the previous binaries could not all be put
	// back; Left then describes every binary's state on disk.
	RollbackErr error
	Left        []string
	// RecoverErr is set when the files were restored but restarting the
	// previous services, or their health check, failed.
	RecoverErr error
}

func (e *UpdateError) Error() string {
	s := fmt.Sprintf("update to %s failed: %s: %v", e.Version, e.Stage, e.Err)
	prev := e.Previous
	if prev == "" {
		prev = "the previous binaries"
	}
	switch {
	case e.RollbackErr != nil:
		s += fmt.Sprintf("; ROLLBACK FAILED: %v; on disk now: %s", e.RollbackErr, strings.Join(e.Left, "; "))
	case e.RecoverErr != nil:
		s += fmt.Sprintf("; rolled back to %s on disk, but the previous services did not come back: %v", prev, e.RecoverErr)
	default:
		s += "; rolled back to " + prev
	}
	return s
}

func (e *UpdateError) Unwrap() error { return e.Err }

// settings is Options with the defaults filled in.
type settings struct {
	Options
	key []byte
}

func (o Options) settings(needManifest bool) (*settings, error) {
	s := &settings{Options: o}
	if needManifest && s.ManifestURL == "" {
		return nil, errors.New("no manifest url")
	}
	if s.HTTPClient == nil {
		s.HTTPClient = &http.Client{}
	}
	s.key = []byte(s.PublicKeyPEM)
	if s.PublicKeyPEM == "" {
		s.key = []byte(ReleasePublicKey)
	}
	if _, err := ParsePublicKey(s.key); err != nil {
		return nil, err
	}
	if s.RunVersion == nil {
		s.RunVersion = RunVersion
	}
	if s.CheckWritable == nil {
		s.CheckWritable = ProbeWritable
	}
	if s.BinDir == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("locate the running executable: %w", err)
		}
		if exe, err = filepath.EvalSymlinks(exe); err != nil {
			return nil, fmt.Errorf("locate the running executable: %w", err)
		}
		s.BinDir = filepath.Dir(exe)
	}
	dir, err := filepath.Abs(s.BinDir)
	if err != nil {
		return nil, fmt.Errorf("install directory: %w", err)
	}
	s.BinDir = dir
	return s, nil
}

func (s *settings) progress(stage Stage, format string, args ...any) {
	if s.Progress != nil {
		s.Progress(stage, fmt.Sprintf(format, args...))
	}
}

// Check fetches the manifest and compares the current version with the
// release Options.Version names (by default the latest stable one).
func Check(ctx context.Context, opts Options) (CheckResult, error) {
	if opts.ManifestURL == "" {
		return CheckResult{}, errors.New("no manifest url")
	}
	hc := opts.HTTPClient
	if hc == nil {
		hc = &http.Client{}
	}
	m, err := FetchManifest(ctx, hc, opts.ManifestURL)
	if err != nil {
		return CheckResult{}, err
	}
	rel, err := m.Find(opts.Version)
	if err != nil {
		return CheckResult{}, err
	}
	return CheckResult{
		Current:         opts.CurrentVersion,
		Latest:          m.LatestStable,
		Target:          rel,
		UpdateAvailable: CompareVersions(rel.Version, opts.CurrentVersion) > 0,
	}, nil
}

// Update installs a release: it resolves the target, checks the install
// directory is writable, verifies the signature and the archive, stages
// and checks the binaries, swaps them in (keeping NAME.previous), restarts
// the services and waits for them to be healthy. Nothing in BinDir changes
// before every check has passed. When the swap, restart or health check
// fails it puts the previous binaries back, restarts them and returns an
// *UpdateError.
func Update(ctx context.Context, opts Options) (Result, error) {
	s, err := opts.settings(true)
	if err != nil {
		return Result{}, err
	}

	// 1. Resolve the target release.
	s.progress(StageResolve, "fetching %s", s.ManifestURL)
	m, err := FetchManifest(ctx, s.HTTPClient, s.ManifestURL)
	if err != nil {
		return Result{}, err
	}
	rel, err := m.Find(s.Version)
	if err != nil {
		return Result{}, err
	}
	latest := s.Version == "" || s.Version == "latest"
	if c := CompareVersions(rel.Version, s.CurrentVersion); !s.Force && (c == 0 || c < 0 && latest) {
		return Result{}, &UpToDateError{Current: s.CurrentVersion, Target: rel.Version}
	}
	var archiveURL, sumsURL, sigURL string
	for _, u := range []struct {
		dst *string
		ref string
	}{{&archiveURL, rel.Archive}, {&sumsURL, rel.SHA256Sums}, {&sigURL, rel.Signature}} {
		if *u.dst, err = m.ResolveURL(u.ref); err != nil {
			return Result{}, fmt.Errorf("release %s: %w", rel.Version, err)
		}
	}
	archiveName, err := fileName(archiveURL)
	if err != nil {
		return Result{}, fmt.Errorf("release %s: archive: %w", rel.Version, err)
	}
	res := Result{From: s.CurrentVersion, To: rel.Version, BinDir: s.BinDir}

	// 2. The install directory must be writable by this process.
	s.progress(StagePreflight, "checking %s", s.BinDir)
	unlock, err := s.preflight()
	if err != nil {
		return Result{}, err
	}
	defer unlock()

	// 3. The signature of SHA256SUMS.
	s.progress(StageSignature, "verifying %s", sumsURL)
	sums, err := getBytes(ctx, s.HTTPClient, sumsURL, MaxSumsSize)
	if err != nil {
		return Result{}, fmt.Errorf("fetch SHA256SUMS: %w", err)
	}
	sig, err := getBytes(ctx, s.HTTPClient, sigURL, MaxSumsSize)
	if err != nil {
		return Result{}, fmt.Errorf("fetch signature: %w", err)
	}
	if err := VerifySignature(s.key, sums, sig); err != nil {
		return Result{}, fmt.Errorf("signature check failed: %w", err)
	}
	wantSum, err := ChecksumFor(sums, archiveName)
	if err != nil {
		return Result{}, err
	}

	// 4. The archive, staged inside BinDir so the swap is a rename.
	s.progress(StageDownload, "downloading %s", archiveURL)
	removeStale(s.BinDir)
	staging, err := os.MkdirTemp(s.BinDir, stagingPattern)
	if err != nil {
		return Result{}, fmt.Errorf("create staging directory: %w", err)
	}
	// 10. The staging directory goes in every case.
	defer os.RemoveAll(staging)
	// A fixed name: the one from the URL only serves to find the checksum.
	archivePath := filepath.Join(staging, "archive.tar.gz")
	fc := &fetch.Client{HTTP: s.HTTPClient}
	gotSum, err := fc.File(ctx, archiveURL, archivePath, fetch.Want{SHA256: wantSum, MaxSize: MaxArchiveSize, Mode: 0o600})
	if errors.Is(err, fetch.ErrMismatch) {
		return Result{}, fmt.Errorf("archive checksum mismatch: %s has sha256 %s, SHA256SUMS says %s", archiveName, gotSum, wantSum)
	}
	if err != nil {
		return Result{}, fmt.Errorf("download archive: %w", err)
	}

	// 5. Unpack and ask the staged binaries their version.
	s.progress(StageExtract, "unpacking %s", archiveName)
	if err := extractArchive(ctx, archivePath, staging); err != nil {
		return Result{}, err
	}
	if err := os.Remove(archivePath); err != nil {
		return Result{}, fmt.Errorf("remove archive: %w", err)
	}
	s.progress(StageVerify, "checking the staged binaries report %s", rel.Version)
	for _, name := range []string{BinDaemon, BinCLI} {
		if err := s.checkVersion(ctx, filepath.Join(staging, name), rel.Version); err != nil {
			return Result{}, err
		}
	}

	// 6. A dry run stops here.
	if s.DryRun {
		res.DryRun = true
		s.progress(StageDone, "dry run: %s verified, nothing changed", rel.Version)
		return res, nil
	}

	// 7. Swap.
	s.progress(StageSwap, "installing %s into %s", rel.Version, s.BinDir)
	j, err := swap(s.BinDir, staging)
	if err != nil {
		return Result{}, s.rollback(ctx, rel.Version, StageSwap, err, j, false)
	}
	res.Installed = j.installed(s.BinDir)

	// 8. Restart and health check.
	if s.Restart != nil {
		s.progress(StageRestart, "restarting the services")
		if err := s.Restart(ctx); err != nil {
			return Result{}, s.rollback(ctx, rel.Version, StageRestart, err, j, true)
		}
	}
	if s.Health != nil {
		s.progress(StageHealth, "waiting for the daemon to report %s", rel.Version)
		if err := s.Health(ctx, rel.Version); err != nil {
			return Result{}, s.rollback(ctx, rel.Version, StageHealth, err, j, true)
		}
	}
	s.progress(StageDone, "updated to %s", rel.Version)
	return res, nil
}

// preflight locks BinDir against a concurrent update or rollback and
// checks it is a directory this process may write.
func (s *settings) preflight() (unlock func(), err error) {
	st, err := os.Stat(s.BinDir)
	if err != nil {
		return nil, fmt.Errorf("install directory: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("install directory %s is not a directory", s.BinDir)
	}
	unlock, err = lockDir(s.BinDir)
	if err != nil {
		return nil, err
	}
	if err := s.CheckWritable(s.BinDir); err != nil {
		unlock()
		return nil, err
	}
	return unlock, nil
}

// checkVersion runs a staged binary with --version and checks that the
// output names version as one of its words.
func (s *settings) checkVersion(ctx context.Context, path, version string) error {
	out, err := s.RunVersion(ctx, path)
	if err != nil {
		return fmt.Errorf("staged %s: %w", filepath.Base(path), err)
	}
	for _, f := range strings.Fields(out) {
		if f == version {
			return nil
		}
	}
	return fmt.Errorf("staged %s reports %q, want %s", filepath.Base(path), firstLine(out), version)
}

// rollback undoes a swap after a failure at stage and returns the
// *UpdateError describing both.
func (s *settings) rollback(ctx context.Context, version string, stage Stage, cause error, j *journal, restarted bool) error {
	s.progress(StageRollback, "%s failed, restoring the previous binaries", stage)
	ue := &UpdateError{Version: version, Previous: s.CurrentVersion, Stage: stage, Err: cause}
	// The rollback runs even when ctx is what failed.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
	defer cancel()
	if err := j.undo(s.BinDir); err != nil {
		ue.RollbackErr = err
		ue.Left = j.describe(s.BinDir)
		return ue
	}
	if !restarted || s.Restart == nil {
		return ue
	}
	if err := s.Restart(rctx); err != nil {
		ue.RecoverErr = fmt.Errorf("restart: %w", err)
		return ue
	}
	if s.Health != nil {
		if err := s.Health(rctx, s.CurrentVersion); err != nil {
			ue.RecoverErr = fmt.Errorf("health: %w", err)
		}
	}
	return ue
}

// Rollback puts back the binaries the last update replaced (NAME.previous
// over NAME; the replaced binaries are gone afterwards), then restarts the
// services and waits for them to be healthy.
func Rollback(ctx context.Context, opts Options) (Result, error) {
	s, err := opts.settings(false)
	if err != nil {
		return Result{}, err
	}
	s.progress(StagePreflight, "checking %s", s.BinDir)
	unlock, err := s.preflight()
	if err != nil {
		return Result{}, err
	}
	defer unlock()

	var names []string
	for _, name := range Binaries() {
		st, err := os.Lstat(filepath.Join(s.BinDir, name+PreviousSuffix))
		switch {
		case errors.Is(err, fs.ErrNotExist):
			continue
		case err != nil:
			return Result{}, fmt.Errorf("rollback: %w", err)
		case st.IsDir():
			return Result{}, fmt.Errorf("rollback: %s%s is a directory", name, PreviousSuffix)
		}
		names = append(names, name)
	}
	if len(names) == 0 {
		return Result{}, fmt.Errorf("no previous binaries (*%s) in %s to roll back to", PreviousSuffix, s.BinDir)
	}
	res := Result{From: s.CurrentVersion, BinDir: s.BinDir}
	if out, err := s.RunVersion(ctx, filepath.Join(s.BinDir, BinDaemon+PreviousSuffix)); err == nil {
		res.To = versionIn(out)
	}

	s.progress(StageRollback, "restoring %s in %s", strings.Join(names, ", "), s.BinDir)
	for _, name := range names {
		dst := filepath.Join(s.BinDir, name)
		if err := os.Rename(dst+PreviousSuffix, dst); err != nil {
			return res, fmt.Errorf("rollback: %w (restored so far: %s)", err, strings.Join(res.Installed, ", "))
		}
		res.Installed = append(res.Installed, dst)
	}
	if err := fsutil.SyncDir(s.BinDir); err != nil {
		return res, fmt.Errorf("rollback: %w", err)
	}
	if s.Restart != nil {
		s.progress(StageRestart, "restarting the services")
		if err := s.Restart(ctx); err != nil {
			return res, fmt.Errorf("rolled back the binaries, but restart failed: %w", err)
		}
	}
	if s.Health != nil {
		s.progress(StageHealth, "waiting for the daemon")
		if err := s.Health(ctx, res.To); err != nil {
			return res, fmt.Errorf("rolled back the binaries, but the health check failed: %w", err)
		}
	}
	s.progress(StageDone, "rolled back to %s", orUnknown(res.To))
	return res, nil
}

// RunVersion runs path --version and returns what it printed.
func RunVersion(ctx context.Context, path string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, versionCheckTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "--version").CombinedOutput()
	if err != nil {
		return "", hosttools.OutputError(path+" --version", err, []byte(firstLine(string(out))))
	}
	return string(out), nil
}

// ProbeWritable checks this process may create and remove files in dir by
// doing so. It returns a *PermissionError when it may not.
func ProbeWritable(dir string) error {
	f, err := os.CreateTemp(dir, probePattern)
	if err != nil {
		if errors.Is(err, fs.ErrPermission) {
			return &PermissionError{Dir: dir, Err: err}
		}
		if errors.Is(err, syscall.EROFS) {
			return fmt.Errorf("install directory %s is on a read-only file system", dir)
		}
		return fmt.Errorf("check %s is writable: %w", dir, err)
	}
	name := f.Name()
	f.Close()
	if err := os.Remove(name); err != nil {
		return fmt.Errorf("check %s is writable: %w", dir, err)
	}
	return nil
}

// lockDir takes an exclusive advisory lock on dir itself, so no file is
// left behind.
func lockDir(dir string) (func(), error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("another update of %s is in progress", dir)
		}
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return func() { f.Close() }, nil
}

// removeStale removes staging directories and probe files that an update
// killed midway left in dir. The caller holds the lock on dir, so none of
// them belongs to a running update.
func removeStale(dir string) {
	for _, pattern := range []string{stagingPattern + "*", probePattern + "*"} {
		matches, _ := filepath.Glob(filepath.Join(dir, pattern))
		for _, m := range matches {
			os.RemoveAll(m)
		}
	}
}

// versionIn picks the version out of --version output: the first word
// that is a release version, else the last word of the first line.
func versionIn(out string) string {
	for _, f := range strings.Fields(out) {
		if _, err := ParseVersion(f); err == nil {
			return f
		}
	}
	fields := strings.Fields(firstLine(out))
	if len(fields) == 0 {
		return ""
	}
	return fields[len(fields)-1]
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return line
}

func orUnknown(v string) string {
	if v == "" {
		return "the previous binaries"
	}
	return v
}
