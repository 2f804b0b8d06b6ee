// Command coffer is Coffer's single binary: the server, and the command
// line around it. It is the composition root: it reads flags, environment
// and config file, builds the concrete store, services and HTTP server, and
// wires them together. It holds no logic of its own.
package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"runtime/pprof"
	"slices"

	"github.com/alecthomas/kong"
)

// Set at build time with -ldflags "-X main.version=… -X main.commit=…".
var (
	version = "dev"
	commit  = ""
)

// cli is the command line. Every flag also reads a COFFER_* environment
// variable and a key of the --config file (flag > variable > file > default).
type cli struct {
	Config    kong.ConfigFlag `help:"Read settings from this YAML file (keys are flag names, optionally nested under the command)." env:"COFFER_CONFIG" type:"path" placeholder:"FILE"`
	LogFormat string          `help:"Log format: text on a terminal and JSON otherwise (auto), or always text or json." enum:"auto,text,json" default:"auto" env:"COFFER_LOG_FORMAT"`
	LogLevel  string          `help:"Least severe log level written: debug, info, warn or error." enum:"debug,info,warn,error" default:"info" env:"COFFER_LOG_LEVEL"`
	// CPUProfile is for finding where time goes (make bench, a slow backup).
	CPUProfile string `help:"Write a CPU profile of this run to FILE (go tool pprof reads it)." type:"path" hidden:"" env:"COFFER_CPU_PROFILE" placeholder:"FILE"`

	Server  serverCmd  `cmd:"" help:"Run the Coffer server (the default), or one of its maintenance commands."`
	Version versionCmd `cmd:"" help:"Print the version of this binary."`

	Agent   agentCmd   `cmd:"" help:"Enroll this machine with a server, or run its agent."`
	Backup  backupCmd  `cmd:"" help:"Back up files and directories of this machine now."`
	Restore restoreCmd `cmd:"" help:"Restore a backup of this machine into a directory."`
	Backups backupsCmd `cmd:"" help:"List this machine's backups, newest first."`
	Ls      lsCmd      `cmd:"" help:"List a directory of a backup, like ls -l."`
}

// globals are the settings every command gets.
type globals struct {
	logger *slog.Logger
	stdout io.Writer
}

// newParser builds the command-line parser that fills c.
func newParser(c *cli, opts ...kong.Option) (*kong.Kong, error) {
	return kong.New(c, append([]kong.Option{
		kong.Name("coffer"),
		kong.Description("Coffer is a self-hosted backup server for fleets of machines."),
		kong.Configuration(loadConfig),
		kong.UsageOnError(),
		kong.ConfigureHelp(kong.HelpOptions{Compact: true}),
		kong.Help(printHelp),
	}, opts...)...)
}

// printHelp is kong's help, except for a command whose default subcommand
// takes the command's arguments ("coffer server" runs "coffer server
// serve"): its help is the default subcommand's, flags included, followed
// by the other subcommands.
func printHelp(options kong.HelpOptions, ctx *kong.Context) error {
	sel := ctx.Selected()
	if sel == nil || sel.DefaultCmd == nil || sel.DefaultCmd.Tag.Default != "withargs" {
		return kong.DefaultHelpPrinter(options, ctx)
	}
	withDefault := *ctx
	withDefault.Path = append(slices.Clone(ctx.Path), &kong.Path{Parent: sel, Command: sel.DefaultCmd})
	if err := kong.DefaultHelpPrinter(options, &withDefault); err != nil {
		return err
	}
	fmt.Fprintf(ctx.Stdout, "\n%q alone runs %q. Other commands:\n", sel.FullPath(), sel.DefaultCmd.FullPath())
	for _, ch := range sel.Children {
		if ch != sel.DefaultCmd && ch.Type == kong.CommandNode && !ch.Hidden {
			fmt.Fprintf(ctx.Stdout, "  %s\n      %s\n", ch.FullPath(), ch.Help)
		}
	}
	return nil
}

func main() {
	var c cli
	// Usage errors exit 1 like every other failure (kong's own code is 80).
	parser, err := newParser(&c, kong.Exit(func(code int) { os.Exit(min(code, 1)) }))
	if err != nil {
		panic(err) // the cli struct is malformed: a programming error
	}
	ctx, err := parser.Parse(os.Args[1:])
	parser.FatalIfErrorf(err)
	logger, err := newLogger(os.Stderr, c.LogFormat, c.LogLevel)
	if err != nil {
		fmt.Fprintln(os.Stderr, "coffer:", err)
		os.Exit(2)
	}
	slog.SetDefault(logger)
	stopProfile, err := startCPUProfile(c.CPUProfile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "coffer:", err)
		os.Exit(1)
	}
	err = ctx.Run(&globals{logger: logger, stdout: os.Stdout})
	stopProfile()
	if err != nil {
		var st interface{ ExitCode() int }
		if errors.As(err, &st) {
			os.Exit(st.ExitCode()) // the command reported its outcome itself (coffer backup, coffer restore)
		}
		logger.Error(ctx.Command()+" failed", "err", err)
		os.Exit(1)
	}
}

// startCPUProfile profiles the process into path until the returned
// function is called ("" profiles nothing).
func startCPUProfile(path string) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

type versionCmd struct{}

func (versionCmd) Run(g *globals) error {
	v, c, goVersion := buildInfo()
	fmt.Fprintf(g.stdout, "coffer %s (commit %s, %s)\n", v, c, goVersion)
	return nil
}

// buildInfo returns the version, commit and Go version of this binary,
// falling back to what the Go toolchain recorded when -ldflags set none.
func buildInfo() (v, c, goVersion string) {
	v, c = version, commit
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return v, c, "unknown"
	}
	if c == "" {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				c = s.Value[:12]
			}
		}
	}
	if c == "" {
		c = "unknown"
	}
	return v, c, bi.GoVersion
}
