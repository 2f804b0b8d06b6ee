package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/agent"
	"github.com/cofferhq/coffer/internal/apiclient"
)

// stateDirFlag is the --state-dir of every command that acts as this
// machine's agent.
type stateDirFlag struct {
	StateDir string `help:"The agent's state directory: its credential and change cache (default: /var/lib/coffer-agent as root, else $XDG_STATE_HOME/coffer-agent or ~/.local/state/coffer-agent)." env:"COFFER_STATE_DIR" type:"path" placeholder:"DIR"`
}

// dir is the state directory the flag or the defaults name.
func (f stateDirFlag) dir() string {
	if f.StateDir != "" {
		return f.StateDir
	}
	return agent.DefaultStateDir()
}

// openAgent loads the enrolled agent of the state directory, for a
// command that works as this machine's client; workers 0 is the agent's
// default. configure, if given, adjusts the agent's options.
func (f stateDirFlag) openAgent(logger *slog.Logger, workers int, configure ...func(*agent.Options)) (*agent.Agent, error) {
	if workers < 0 {
		return nil, fmt.Errorf("--workers %d: give a number of workers, or 0 for the default", workers)
	}
	dir := f.dir()
	st, err := agent.LoadState(dir)
	if err != nil {
		return nil, err
	}
	v, _, _ := buildInfo()
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(agentMemoryLimit)
	}
	opts := agent.Options{StateDir: dir, State: st, Logger: logger, Version: v, Workers: workers}
	for _, fn := range configure {
		fn(&opts)
	}
	return agent.New(opts)
}

// agentMemoryLimit is the Go runtime's soft memory limit for the agent and
// the commands that back up or restore this machine (GOMEMLIMIT overrides
// it). The agent runs beside the machine's real work, and without a limit
// the collector lets the heap grow to twice the live data (chunks and
// uploads in flight, the chunkers' windows, the compressors' state). A
// soft limit never fails an allocation; past it the collector just runs
// more often.
const agentMemoryLimit = 112 << 20

// workersFlag is the --workers of the commands that back up or restore.
type workersFlag struct {
	Workers int `help:"How many files a backup reads and compresses at once, and a restore writes (default: one per CPU core for backups, twice that for restores)." env:"COFFER_AGENT_WORKERS" default:"0" placeholder:"N"`
}

// agentCmd groups the agent's own commands.
type agentCmd struct {
	Enroll agentEnrollCmd `cmd:"" help:"Enroll this machine with a Coffer server, using a one-time enrollment token."`
	Run    agentRunCmd    `cmd:"" help:"Run the agent in the foreground: heartbeats, and the backups, restores and listings the server asks for."`
	Plans  agentPlansCmd  `cmd:"" help:"List this machine's backup plans as the server has them (the last known ones when it is unreachable)."`
}

type agentEnrollCmd struct {
	stateDirFlag
	Server string `help:"URL of the Coffer server, e.g. https://coffer.example.com." required:"" env:"COFFER_SERVER" placeholder:"URL"`
	Token  string `help:"One-time enrollment token (cfr_e_…), made with POST /api/v1/enrollment-tokens. The variable keeps it out of the process list and shell history." required:"" env:"COFFER_ENROLL_TOKEN" placeholder:"TOKEN"`
	Name   string `help:"Name of this client on the server (default: the token's name, else the hostname)."`
}

// Run exchanges the token for a client credential, which the agent keeps
// in its state directory. The credential is never printed.
func (c *agentEnrollCmd) Run(g *globals) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	dir := c.dir()
	v, _, _ := buildInfo()
	st, err := agent.Enroll(ctx, agent.EnrollOptions{Server: c.Server, Token: c.Token, Name: c.Name, StateDir: dir, Version: v})
	if err != nil {
		return describeError(err)
	}
	printEnrolled(g, st, dir)
	return nil
}

// printEnrolled tells what enrolling did and what to do next.
func printEnrolled(g *globals, st *agent.State, dir string) {
	fmt.Fprintf(g.stdout, "Enrolled this machine as client %q (id %s) on %s.\n", st.Name, st.ClientID, st.Server)
	fmt.Fprintf(g.stdout, "Its credential is stored in the state directory %s, readable by its owner only.\n", dir)
	fmt.Fprintf(g.stdout, "Start the agent with:  coffer agent run --state-dir %s\n", shellQuote(dir))
}

type agentRunCmd struct {
	stateDirFlag
	workersFlag
	AllowCommands bool `help:"Run the pre and post commands of backup plans. With --allow-commands=false the agent refuses them: the backup of a plan that has any fails, saying so." default:"true" negatable:"" env:"COFFER_ALLOW_COMMANDS"`
}

// Run runs the daemon until SIGINT or SIGTERM: it reports to the server,
// waits for its commands and runs them. Logs go to stderr. It ends with an
// error only when it cannot go on, e.g. when the client was deleted on the
// server.
func (c *agentRunCmd) Run(g *globals) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	a, err := c.openAgent(g.logger, c.Workers, func(o *agent.Options) { o.RefuseCommands = !c.AllowCommands })
	if err != nil {
		return err
	}
	if !c.AllowCommands {
		g.logger.Info("this agent refuses the pre and post commands of plans (--allow-commands=false): backups of plans that have any fail")
	}
	return describeError(a.Run(ctx))
}

// describeError makes sure an error the server answered says its stable
// code, which a person can look up and a script branch on, and, for a
// server-side failure, the correlation id under which the server logged
// the details.
func describeError(err error) error {
	if err == nil {
		return nil
	}
	var ae *apiclient.Error
	if errors.As(err, &ae) {
		if ae.Code != "" && !strings.Contains(err.Error(), ae.Code) {
			err = fmt.Errorf("%w (code %s)", err, ae.Code)
		}
		if ae.Status >= 500 && ae.CorrelationID != "" {
			err = fmt.Errorf("%w; the server logged the details under correlation id %s", err, ae.CorrelationID)
		}
		return err
	}
	var ce *coffer.Error
	if errors.As(err, &ce) && ce.Code != "" && !strings.Contains(err.Error(), ce.Code) {
		return fmt.Errorf("%w (code %s)", err, ce.Code)
	}
	return err
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-+=:,@%", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
