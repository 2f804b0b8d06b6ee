// Command coffer-bench times Coffer against restic on the same generated
// corpus, in one run, and prints each figure with its ratio to restic and
// the target for it: first backup, incremental backup after a ~5 %
// mutation, restore (checked byte for byte), repository size, and peak
// memory of the backing-up process and of Coffer's server.
//
//	coffer-bench -coffer bin/coffer [-size 1G] [-dir DIR] [-runs N] [-json FILE] [-keep]
//
// `make bench` builds bin/coffer and runs it; see bench/README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "coffer-bench: %v\n", err)
		os.Exit(1)
	}
}

// options are the command line.
type options struct {
	coffer   string
	restic   string
	size     int64
	dir      string
	seed     uint64
	runs     int
	jsonPath string
	keep     bool
}

// sizeFlag is a byte count written with an optional K, M, G or T suffix
// (powers of 1024), e.g. 1G or 512MiB.
type sizeFlag struct{ n *int64 }

func (s sizeFlag) String() string {
	if s.n == nil {
		return ""
	}
	return formatSize(*s.n)
}

func (s sizeFlag) Set(v string) error {
	n, err := parseSize(v)
	if err != nil {
		return err
	}
	*s.n = n
	return nil
}

// parseSize reads 1073741824, 1G, 1GiB, 1gb, 512M, 1.5G and the like.
func parseSize(v string) (int64, error) {
	s := strings.ToUpper(strings.TrimSpace(v))
	s = strings.TrimSuffix(strings.TrimSuffix(s, "B"), "I")
	mult := int64(1)
	if s != "" {
		switch s[len(s)-1] {
		case 'K':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		case 'T':
			mult = 1 << 40
		}
		if mult > 1 {
			s = s[:len(s)-1]
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f <= 0 || f*float64(mult) >= 1<<62 {
		return 0, fmt.Errorf("size %q: write a positive byte count, optionally with K, M, G or T (powers of 1024), e.g. 1G or 512M", v)
	}
	return int64(f * float64(mult)), nil
}

// formatSize writes n with the largest suffix that divides it.
func formatSize(n int64) string {
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"T", 1 << 40}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}} {
		if n >= u.mult && n%u.mult == 0 {
			return strconv.FormatInt(n/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}

// parseOptions reads the command line; -h prints the usage and returns
// flag.ErrHelp.
func parseOptions(args []string, stderr io.Writer) (options, error) {
	o := options{size: 1 << 30, dir: os.TempDir()}
	fs := flag.NewFlagSet("coffer-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, `Usage: coffer-bench -coffer BIN [flags]

Times Coffer (server + agent CLI on this machine) against restic on one
generated corpus: first backup, incremental backup after a ~5 %% mutation,
restore (verified byte for byte), repository size, peak memory. Prints a
table with the ratio of each figure to restic's and the issue's target.
Exits 1 when any step fails (its stderr is shown); missed targets are
reported in the table, not as an exit code.

Flags:
`)
		fs.PrintDefaults()
	}
	fs.StringVar(&o.coffer, "coffer", "bin/coffer", "the coffer binary to measure (make bench builds it with make build)")
	fs.StringVar(&o.restic, "restic", "restic", "the restic binary; when the default is missing it is installed with apt-get as root")
	fs.Var(sizeFlag{&o.size}, "size", "corpus size, with K, M, G or T (powers of 1024)")
	fs.StringVar(&o.dir, "dir", o.dir, "where the temporary work directory (corpus, repositories, restores) goes")
	fs.Uint64Var(&o.seed, "seed", 1, "corpus seed: the same seed and size give the same bytes")
	fs.IntVar(&o.runs, "runs", 1, "measure every figure this many times (a fresh corpus, repositories and agent each run) and report medians")
	fs.StringVar(&o.jsonPath, "json", "", "also write the results, every run's values included, to this JSON `file`")
	fs.BoolVar(&o.keep, "keep", false, "keep the work directory (corpus, repositories, logs) instead of deleting it")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	switch {
	case fs.NArg() > 0:
		return o, fmt.Errorf("unexpected argument %q: every setting is a flag (see -h)", fs.Arg(0))
	case o.runs < 1:
		return o, fmt.Errorf("-runs %d: measure at least once", o.runs)
	case o.size < 1<<20:
		return o, fmt.Errorf("-size %d: the corpus must be at least 1M", o.size)
	case o.coffer == "":
		return o, errors.New("-coffer is empty: name the coffer binary, e.g. bin/coffer (make build)")
	}
	return o, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseOptions(args, stderr)
	if err != nil {
		return err
	}
	res, err := benchmark(ctx, o, stderr)
	if err != nil {
		return err
	}
	if err := res.writeTable(stdout); err != nil {
		return err
	}
	if o.jsonPath != "" {
		if err := res.writeJSONFile(o.jsonPath); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "results written to %s\n", o.jsonPath)
	}
	return nil
}
