package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/protocol"
)

// A plan's pre and post commands ("hooks") run on this machine as the
// agent's user, each with /bin/sh -c in its own process group, so that a
// timeout or a cancel stops everything the command started.
const (
	// defaultCommandTimeout bounds a command when the job does not say.
	defaultCommandTimeout = 10 * time.Minute
	// commandOutputTail is how many bytes of each of a command's output
	// streams are kept (the last ones) for the log and the error message.
	commandOutputTail = 4 << 10
	// commandMessageTail is how much of that an error message quotes.
	commandMessageTail = 1 << 10
	// commandKillGrace is how long a command has to exit after SIGTERM
	// before its process group gets SIGKILL.
	commandKillGrace = 5 * time.Second
	// commandWaitDelay bounds the wait for a command's output once it has
	// exited: a process it left running in the background may hold the
	// output open.
	commandWaitDelay = 2 * time.Second
)

// errCommandsRefused fails a backup whose plan has commands on an agent
// that refuses them.
var errCommandsRefused = errors.New("this agent refuses pre/post commands (--allow-commands=false): " +
	"remove them from the plan or restart the agent with --allow-commands=true")

// commandRunner runs one shell command at a time with a timeout, keeping
// the tail of its output.
type commandRunner struct {
	killGrace time.Duration // default commandKillGrace
	waitDelay time.Duration // default commandWaitDelay
	tail      int           // bytes kept of each stream; default commandOutputTail
}

// commandResult is how one command ended.
type commandResult struct {
	phase        string // "pre" or "post"
	index, count int    // 1-based position among the phase's commands
	command      string
	exitCode     int    // -1 when it did not exit by itself
	signal       string // the signal that ended it, if one did
	timedOut     bool
	canceled     bool
	timeout      time.Duration
	startErr     error
	stdout       string // the tails of its output
	stderr       string
	duration     time.Duration
}

// failed reports whether the command did not exit with status 0.
func (r *commandResult) failed() bool {
	return r.startErr != nil || r.timedOut || r.canceled || r.signal != "" || r.exitCode != 0
}

// Error says which command failed, how, and the end of what it printed
// on stderr (or stdout, when stderr is empty).
func (r *commandResult) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s-command %d of %d (“%s”) ", r.phase, r.index, r.count, oneLine(r.command, 200))
	switch {
	case r.startErr != nil:
		fmt.Fprintf(&b, "could not be started: %v", r.startErr)
	case r.timedOut:
		fmt.Fprintf(&b, "ran longer than its timeout of %s and was killed", r.timeout)
	case r.canceled:
		b.WriteString("was stopped: the backup was canceled")
	case r.signal != "":
		fmt.Fprintf(&b, "was killed by signal %s", r.signal)
	default:
		fmt.Fprintf(&b, "exited with status %d", r.exitCode)
	}
	if out := lastBytes(strings.TrimSpace(r.stderr), commandMessageTail); out != "" {
		fmt.Fprintf(&b, "; stderr ends with: %s", out)
	} else if out := lastBytes(strings.TrimSpace(r.stdout), commandMessageTail); out != "" {
		fmt.Fprintf(&b, "; stdout ends with: %s", out)
	}
	return b.String()
}

// run runs line with /bin/sh -c in env, from the root directory, with no
// input, for at most timeout. When timeout passes or ctx ends, the
// command's whole process group gets SIGTERM, then SIGKILL after the
// grace period.
func (cr commandRunner) run(ctx context.Context, line string, env []string, timeout time.Duration) commandResult {
	if cr.killGrace <= 0 {
		cr.killGrace = commandKillGrace
	}
	if cr.waitDelay <= 0 {
		cr.waitDelay = commandWaitDelay
	}
	if cr.tail <= 0 {
		cr.tail = commandOutputTail
	}
	if timeout <= 0 {
		timeout = defaultCommandTimeout
	}
	res := commandResult{command: line, exitCode: -1, timeout: timeout}
	stdout, stderr := &tailBuffer{max: cr.tail}, &tailBuffer{max: cr.tail}
	cmd := exec.Command("/bin/sh", "-c", line)
	cmd.Env, cmd.Dir = env, "/"
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = cr.waitDelay
	began := time.Now()
	if err := ctx.Err(); err != nil {
		res.canceled = true
		return res
	}
	if err := cmd.Start(); err != nil {
		res.startErr = err
		return res
	}
	pgid := cmd.Process.Pid
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()

	timer := time.NewTimer(timeout)
	defer timer.Stop()
	var err error
	select {
	case err = <-waited:
	case <-timer.C:
		res.timedOut, err = cr.stop(pgid, waited)
	case <-ctx.Done():
		res.canceled, err = cr.stop(pgid, waited)
	}
	res.duration = time.Since(began)
	res.stdout, res.stderr = stdout.String(), stderr.String()
	var exit *exec.ExitError
	switch {
	case err == nil, errors.Is(err, exec.ErrWaitDelay):
		// Exited with status 0 (maybe leaving a process that holds its
		// output open).
		res.exitCode = 0
	case errors.As(err, &exit):
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			res.signal = ws.Signal().String()
		} else {
			res.exitCode = exit.ExitCode()
		}
	default:
		res.startErr = err
	}
	return res
}

// stop ends the process group pgid: SIGTERM, then SIGKILL if the command
// has not exited after the grace period. It returns the command's Wait
// error, and stopped false if the command had ended by itself meanwhile.
func (cr commandRunner) stop(pgid int, waited <-chan error) (stopped bool, err error) {
	select {
	case err := <-waited: // it ended just now, by itself; its group may be gone
		return false, err
	default:
	}
	syscall.Kill(-pgid, syscall.SIGTERM)
	grace := time.NewTimer(cr.killGrace)
	defer grace.Stop()
	select {
	case err := <-waited:
		// The shell is gone; make sure what it started is too.
		syscall.Kill(-pgid, syscall.SIGKILL)
		return true, err
	case <-grace.C:
		syscall.Kill(-pgid, syscall.SIGKILL)
		return true, <-waited
	}
}

// tailBuffer is an io.Writer that keeps the last max bytes written.
type tailBuffer struct {
	mu      sync.Mutex
	max     int
	buf     []byte
	dropped int64
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(p)
	if len(p) >= t.max {
		t.dropped += int64(len(t.buf) + len(p) - t.max)
		t.buf = append(t.buf[:0], p[len(p)-t.max:]...)
		return n, nil
	}
	if over := len(t.buf) + len(p) - t.max; over > 0 {
		t.dropped += int64(over)
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	t.buf = append(t.buf, p...)
	return n, nil
}

// String returns the kept bytes as valid UTF-8, starting with "…" when
// earlier output was dropped.
func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.buf
	if t.dropped > 0 {
		// Do not start in the middle of a character.
		for len(b) > 0 && !utf8.RuneStart(b[0]) {
			b = b[1:]
		}
		return "…" + strings.ToValidUTF8(string(b), "\uFFFD")
	}
	return strings.ToValidUTF8(string(b), "\uFFFD")
}

// lastBytes returns about the last n bytes of s, not splitting a
// character, marked with "…" when shortened.
func lastBytes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[len(s)-n:]
	for len(s) > 0 && !utf8.RuneStart(s[0]) {
		s = s[1:]
	}
	return "…" + s
}

// oneLine shortens a command for messages: newlines become spaces, and
// at most n bytes are kept.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		return truncate(s, n) + "…"
	}
	return s
}

// commandEnvKeep are the variables of the agent's environment a command
// inherits; everything else (COFFER_* settings included) is left out.
var commandEnvKeep = []string{"PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR"}

// defaultPath is the PATH of a command when the agent has none.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// commandEnv is the environment of a backup's commands: a few variables of
// the agent's own (commandEnvKeep and LC_*), and what the command may
// want to know about the backup.
func commandEnv(base []string, clientID string, job protocol.BackupJob, phase string, state coffer.JobState) []string {
	var env []string
	hasPath := false
	for _, kv := range base {
		k, _, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		if strings.HasPrefix(k, "LC_") || slices.Contains(commandEnvKeep, k) {
			env = append(env, kv)
			hasPath = hasPath || k == "PATH"
		}
	}
	if !hasPath {
		env = append(env, "PATH="+defaultPath)
	}
	env = append(env, "COFFER_BACKUP_ID="+job.ID, "COFFER_PLAN_ID="+job.PlanID, "COFFER_CLIENT_ID="+clientID,
		"COFFER_COMMAND_PHASE="+phase)
	if phase == "post" {
		env = append(env, "COFFER_BACKUP_STATE="+string(state))
	}
	return env
}

// backupHooks runs one backup's pre and post commands.
type backupHooks struct {
	run      func(ctx context.Context, line string, env []string, timeout time.Duration) commandResult
	log      *slog.Logger
	clientID string
	job      protocol.BackupJob
	timeout  time.Duration
	environ  []string

	mu       sync.Mutex
	armed    bool // the pre phase began: post commands must run
	postDone bool
}

// newHooks returns the hooks of a started backup.
func (a *Agent) newHooks(job protocol.BackupJob, log *slog.Logger) *backupHooks {
	return &backupHooks{run: a.commands.run, log: log, clientID: a.state.ClientID, job: job,
		timeout: time.Duration(job.CommandTimeoutSeconds) * time.Second, environ: os.Environ()}
}

// hasCommands reports whether the backup has commands.
func (h *backupHooks) hasCommands() bool {
	return len(h.job.PreCommands) > 0 || len(h.job.PostCommands) > 0
}

// pre runs the pre commands in order and stops at the first that fails,
// returning its error. From then on post runs the post commands once.
func (h *backupHooks) pre(ctx context.Context) error {
	h.mu.Lock()
	h.armed = true
	h.mu.Unlock()
	for i, line := range h.job.PreCommands {
		if r := h.one(ctx, "pre", i, len(h.job.PreCommands), line, ""); r.failed() {
			return &r
		}
	}
	return nil
}

// post runs the post commands in order, all of them even when some fail,
// once per backup and only if the pre phase began. state is how the
// backup is going to end (succeeded, partial) or ended (failed,
// canceled), for COFFER_BACKUP_STATE. It returns the failures.
func (h *backupHooks) post(ctx context.Context, state coffer.JobState) []error {
	h.mu.Lock()
	due := h.armed && !h.postDone
	h.postDone = true
	h.mu.Unlock()
	if !due {
		return nil
	}
	var failed []error
	for i, line := range h.job.PostCommands {
		if r := h.one(ctx, "post", i, len(h.job.PostCommands), line, state); r.failed() {
			failed = append(failed, &r)
		}
	}
	return failed
}

// one runs one command and logs how it went, with the tails of its output.
func (h *backupHooks) one(ctx context.Context, phase string, i, n int, line string, state coffer.JobState) commandResult {
	log := h.log.With("phase", phase, "command_index", i+1, "commands", n)
	log.Info("running a "+phase+"-command", "command", oneLine(line, 200))
	r := h.run(ctx, line, commandEnv(h.environ, h.clientID, h.job, phase, state), h.timeout)
	r.phase, r.index, r.count = phase, i+1, n
	attrs := []any{"exit_code", r.exitCode, "duration", r.duration.Round(time.Millisecond), "stdout", r.stdout, "stderr", r.stderr}
	if r.failed() {
		log.Warn(phase+"-command failed", append(attrs, "err", r.Error())...)
	} else {
		log.Info(phase+"-command succeeded", attrs...)
	}
	return r
}

// runPre runs a backup's pre commands, reporting to the server meanwhile
// (so that it does not take the backup for stale, and so that a cancel
// reaches it). The first failure fails the backup.
func (a *Agent) runPre(ctx context.Context, cancel context.CancelCauseFunc, id string, hooks *backupHooks) error {
	if len(hooks.job.PreCommands) == 0 {
		hooks.pre(ctx) // arms the post commands
		return nil
	}
	stop := a.monitor(ctx, cancel, a.log.With("backup_id", id), a.reportStats(id, coffer.BackupStats{}), nil)
	err := hooks.pre(ctx)
	stop()
	return err
}

// runPost runs a backup's post commands once its data is uploaded and
// returns those that failed as entries of the backup's error list (the
// backup ends partial). A cancel while they run cancels the backup.
func (a *Agent) runPost(ctx context.Context, cancel context.CancelCauseFunc, id string, hooks *backupHooks, res *BackupResult) ([]coffer.PathError, error) {
	if len(hooks.job.PostCommands) == 0 {
		hooks.post(ctx, "")
		return nil, nil
	}
	state := coffer.JobSucceeded
	if len(res.Errors) > 0 {
		state = coffer.JobPartial
	}
	stop := a.monitor(ctx, cancel, a.log.With("backup_id", id), a.reportStats(id, res.Stats), nil)
	failed := hooks.post(ctx, state)
	stop()
	if ctx.Err() != nil {
		return nil, fmt.Errorf("post-commands: %w", context.Cause(ctx))
	}
	out := make([]coffer.PathError, len(failed))
	for i, err := range failed {
		out[i] = coffer.PathError{Message: truncate(err.Error(), 4096)}
	}
	return out, nil
}

// cleanup runs the post commands of a backup that failed or was canceled
// before they ran, if its pre phase began: they may have to undo what the
// pre commands did. Their failures are only logged: the backup already
// ended. They run to their end (or timeout) even when the backup was
// canceled.
func (a *Agent) cleanup(ctx context.Context, hooks *backupHooks, state coffer.JobState) {
	if ctx.Err() != nil {
		ctx = context.WithoutCancel(ctx)
	}
	if failed := hooks.post(ctx, state); len(failed) > 0 {
		hooks.log.Warn("post-commands failed after the backup ended; the backup's record does not list them", "failed", len(failed))
	}
}

// reportStats returns a progress report of fixed statistics, for the
// phases when the backup runs commands.
func (a *Agent) reportStats(id string, stats coffer.BackupStats) func(context.Context) (*protocol.ProgressResponse, error) {
	return func(ctx context.Context) (*protocol.ProgressResponse, error) {
		return a.api.BackupProgress(ctx, id, protocol.BackupProgress{Stats: stats})
	}
}
