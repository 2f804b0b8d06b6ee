package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"
)

// adminPassword is the throwaway server's admin password.
const adminPassword = "coffer-bench-admin"

// coffer runs the Coffer side: a server on a fresh data directory (SQLite,
// the default local repository), one enrolled agent, and the CLI, which
// runs each job in its own process as that agent.
type coffer struct {
	bin      string
	corpus   string
	dataDir  string
	stateDir string
	run      *runner

	server     *exec.Cmd
	serverLogs string
	exited     chan error // the server's Wait result
	url        string
	backupID   string // the latest backup
	peak       int64  // the server's VmHWM, read before stopping it
}

func newCoffer(bin, corpus, dir string, r *runner) *coffer {
	return &coffer{bin: bin, corpus: corpus, dataDir: filepath.Join(dir, "coffer-data"),
		stateDir: filepath.Join(dir, "coffer-agent"), run: r}
}

func (t *coffer) name() string    { return "coffer" }
func (t *coffer) repoDir() string { return filepath.Join(t.dataDir, "repository") }

// runningAt matches the line the server prints when it is ready.
var runningAt = regexp.MustCompile(`Coffer is running at (\S+)`)

// start starts the server, waits for its URL, and enrolls the agent.
func (t *coffer) start(ctx context.Context) error {
	if err := t.startServer(ctx); err != nil {
		return err
	}
	token, err := t.enrollmentToken(ctx)
	if err != nil {
		return err
	}
	_, _, err = t.run.run(ctx, command{name: "coffer-enroll",
		args: []string{t.bin, "agent", "enroll", "--server", t.url, "--token", token, "--state-dir", t.stateDir}})
	return err
}

func (t *coffer) startServer(ctx context.Context) error {
	t.serverLogs = filepath.Join(t.run.logs, "coffer-server")
	stderr, err := os.Create(t.serverLogs + ".stderr")
	if err != nil {
		return err
	}
	defer stderr.Close() // the child has its own copy
	cmd := exec.Command(t.bin, "server", "--data-dir", t.dataDir, "--listen", "127.0.0.1:0",
		"--admin-password", adminPassword, "--log-format", "json")
	cmd.Env = t.run.env
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start the coffer server: %w", err)
	}
	t.server = cmd
	t.run.helpers = append(t.run.helpers, cmd.Process.Pid)
	urls := make(chan string, 1)
	t.exited = make(chan error, 1)
	go func() {
		// Keep the server's stdout in the logs, and read its URL from it.
		out, _ := os.Create(t.serverLogs + ".stdout")
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			if out != nil {
				fmt.Fprintln(out, line)
			}
			if m := runningAt.FindStringSubmatch(line); m != nil {
				select {
				case urls <- m[1]:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		if out != nil {
			out.Close()
		}
		t.exited <- cmd.Wait()
	}()
	wait := time.NewTimer(2 * time.Minute)
	defer wait.Stop()
	select {
	case t.url = <-urls:
		return nil
	case err := <-t.exited:
		t.server = nil
		return t.serverError(fmt.Errorf("the coffer server exited before it was ready: %v", err))
	case <-wait.C:
		return t.serverError(errors.New("the coffer server did not print \"Coffer is running at URL\" within 2 minutes"))
	case <-ctx.Done():
		return ctx.Err()
	}
}

// serverError adds the server's stderr to err.
func (t *coffer) serverError(err error) error {
	b, _ := os.ReadFile(t.serverLogs + ".stderr")
	return &commandError{cmd: t.bin + " server", err: err, stderr: tail(b, 64<<10)}
}

// enrollmentToken logs in as the admin and makes a one-time enrollment token.
func (t *coffer) enrollmentToken(ctx context.Context) (string, error) {
	var login struct {
		AccessToken string `json:"access_token"`
	}
	if err := t.post(ctx, "/api/v1/auth/login", "", map[string]string{"username": "admin", "password": adminPassword}, &login); err != nil {
		return "", err
	}
	var tok struct {
		Secret string `json:"secret"`
	}
	if err := t.post(ctx, "/api/v1/enrollment-tokens", login.AccessToken, map[string]string{"name": "bench"}, &tok); err != nil {
		return "", err
	}
	if tok.Secret == "" {
		return "", errors.New("POST /api/v1/enrollment-tokens answered without a secret")
	}
	return tok.Secret, nil
}

func (t *coffer) post(ctx context.Context, path, bearer string, body, out any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return t.serverError(fmt.Errorf("POST %s: %w", path, err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("POST %s: read the answer: %w", path, err)
	}
	if resp.StatusCode/100 != 2 {
		return t.serverError(fmt.Errorf("POST %s: %s: %s", path, resp.Status, strings.TrimSpace(string(data))))
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("POST %s: decode the answer: %w", path, err)
	}
	return nil
}

// jobSummary is the last JSON line of `coffer backup --json` and
// `coffer restore --json`.
type jobSummary struct {
	Type      string `json:"type"`
	BackupID  string `json:"backup_id"`
	RestoreID string `json:"restore_id"`
	State     string `json:"state"`
	Error     string `json:"error"`
}

// summary reads the job's summary from its output and insists it succeeded.
func summary(what string, out []byte) (*jobSummary, error) {
	line := lastLine(out)
	var s jobSummary
	if err := json.Unmarshal(line, &s); err != nil {
		return nil, fmt.Errorf("coffer %s --json: the last line of its output is not a JSON summary (%v): %s", what, err, tail(line, 2<<10))
	}
	if s.Type != "summary" {
		return nil, fmt.Errorf("coffer %s --json: the last line is a %q line, not the summary: %s", what, s.Type, tail(line, 2<<10))
	}
	if s.State != "succeeded" {
		return nil, fmt.Errorf("coffer %s ended %q (%s): %s", what, s.State, s.Error, tail(line, 8<<10))
	}
	return &s, nil
}

func (t *coffer) backup(ctx context.Context, step string) (measurement, error) {
	m, out, err := t.run.run(ctx, command{name: "coffer-" + step,
		args: []string{t.bin, "backup", "--json", "--state-dir", t.stateDir, t.corpus}})
	if err != nil {
		return m, err
	}
	s, err := summary("backup", out)
	if err != nil {
		return m, err
	}
	if s.BackupID == "" {
		return m, errors.New("coffer backup --json: the summary has no backup_id")
	}
	t.backupID = s.BackupID
	return m, nil
}

func (t *coffer) restore(ctx context.Context, target string) (measurement, string, error) {
	if t.backupID == "" {
		return measurement{}, "", errors.New("coffer restore: no backup was made")
	}
	m, out, err := t.run.run(ctx, command{name: "coffer-restore",
		args: []string{t.bin, "restore", "--json", "--state-dir", t.stateDir, t.backupID, "--target", target}})
	if err == nil {
		_, err = summary("restore", out)
	}
	return m, restoredRoot(target, t.corpus), err
}

// stop reads the server's peak memory and stops it with SIGTERM.
func (t *coffer) stop(ctx context.Context) error {
	if t.server == nil {
		return nil
	}
	defer func() { t.server = nil }()
	peak, err := peakRSS(t.server.Process.Pid)
	if err != nil {
		_ = t.server.Process.Kill()
		<-t.exited
		return t.serverError(err)
	}
	t.peak = peak
	if err := t.server.Process.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("stop the coffer server: %w", err)
	}
	wait := time.NewTimer(time.Minute)
	defer wait.Stop()
	select {
	case err := <-t.exited:
		if err != nil {
			return t.serverError(fmt.Errorf("the coffer server did not stop cleanly: %w", err))
		}
		return nil
	case <-wait.C:
		_ = t.server.Process.Kill()
		<-t.exited
		return t.serverError(errors.New("the coffer server did not stop within a minute of SIGTERM; killed it"))
	case <-ctx.Done():
		_ = t.server.Process.Kill()
		<-t.exited
		return ctx.Err()
	}
}
