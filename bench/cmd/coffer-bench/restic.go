package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// resticPassword encrypts the throwaway restic repositories.
const resticPassword = "coffer-bench"

// restic runs the restic side: a fresh repository and cache a run, default
// settings (repository format 2, compression auto: zstd's default level).
type restic struct {
	bin    string
	corpus string
	repo   string
	cache  string
	run    *runner
}

func newRestic(bin, corpus, dir string, r *runner) *restic {
	return &restic{bin: bin, corpus: corpus, repo: filepath.Join(dir, "restic-repo"), cache: filepath.Join(dir, "restic-cache"), run: r}
}

func (t *restic) name() string    { return "restic" }
func (t *restic) repoDir() string { return t.repo }

func (t *restic) command(name string, args ...string) command {
	return command{name: "restic-" + name, args: append([]string{t.bin}, args...),
		env: []string{"RESTIC_REPOSITORY=" + t.repo, "RESTIC_PASSWORD=" + resticPassword, "RESTIC_CACHE_DIR=" + t.cache}}
}

func (t *restic) start(ctx context.Context) error {
	_, _, err := t.run.run(ctx, t.command("init", "init"))
	return err
}

func (t *restic) backup(ctx context.Context, step string) (measurement, error) {
	m, _, err := t.run.run(ctx, t.command(step, "backup", t.corpus))
	return m, err
}

func (t *restic) restore(ctx context.Context, target string) (measurement, string, error) {
	m, _, err := t.run.run(ctx, t.command("restore", "restore", "latest", "--target", target))
	return m, restoredRoot(target, t.corpus), err
}

// repoFormat says which format and compression the repository has.
func (t *restic) repoFormat(ctx context.Context) (string, error) {
	_, out, err := t.run.run(ctx, t.command("config", "cat", "config"))
	if err != nil {
		return "", err
	}
	var cfg struct {
		Version int `json:"version"`
	}
	if err := json.Unmarshal(out, &cfg); err != nil {
		return "", fmt.Errorf("read restic's repository config: %w", err)
	}
	if cfg.Version >= 2 {
		return fmt.Sprintf("repository format %d, default compression auto = zstd", cfg.Version), nil
	}
	return fmt.Sprintf("repository format %d, no compression", cfg.Version), nil
}

// findRestic returns the restic binary to use. When the default name is
// not on the PATH it installs the Debian package as root, and otherwise
// says how to get it.
func findRestic(ctx context.Context, bin string, log func(string, ...any)) (string, error) {
	if p, err := exec.LookPath(bin); err == nil {
		return filepath.Abs(p)
	}
	if bin != "restic" {
		return "", fmt.Errorf("-restic %s: no such executable", bin)
	}
	if os.Geteuid() != 0 {
		return "", errors.New("restic is not installed: install the Debian package (sudo apt-get install restic) or pass -restic PATH")
	}
	log("restic is not installed: installing the Debian package (apt-get install restic)")
	install := func() error {
		cmd := exec.CommandContext(ctx, "apt-get", "install", "-y", "--no-install-recommends", "restic")
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("apt-get install restic: %w\n%s", err, tail(out, 8<<10))
		}
		return nil
	}
	if err := install(); err != nil {
		log("apt-get install failed; updating the package lists and trying again")
		if out, uerr := exec.CommandContext(ctx, "apt-get", "update").CombinedOutput(); uerr != nil {
			return "", fmt.Errorf("apt-get update: %w\n%s", uerr, tail(out, 8<<10))
		}
		if err := install(); err != nil {
			return "", err
		}
	}
	p, err := exec.LookPath("restic")
	if err != nil {
		return "", fmt.Errorf("restic is still not on the PATH after installing it: %w", err)
	}
	return p, nil
}

// version runs BIN version (or --version) and returns its first line.
func version(ctx context.Context, bin string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s %s: %w\n%s", bin, strings.Join(args, " "), err, tail(out, 4<<10))
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line, nil
}
