package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/cofferhq/coffer/internal/benchcorpus"
	"golang.org/x/sys/unix"
)

// tool is one side of the comparison. Each run gets a fresh one: a new
// repository and, for Coffer, a new server and agent.
type tool interface {
	name() string
	// start prepares the repository (untimed).
	start(ctx context.Context) error
	// backup backs up the corpus; step names the logs.
	backup(ctx context.Context, step string) (measurement, error)
	// restore restores the latest backup into target and says where the
	// corpus landed in it.
	restore(ctx context.Context, target string) (measurement, string, error)
	repoDir() string
}

// spaceNeeded is about how much free space the work directory needs: the
// corpus (≈1.06 of the size after the mutation), two repositories (each at
// most about the corpus) and one restore at a time, with slack: 4.5 sizes.
// With -keep every run's repositories and both restores stay.
func spaceNeeded(size int64, runs int, keep bool) int64 {
	f := 4.5
	if keep {
		f = 1.5 + 4*float64(runs)
	}
	return int64(float64(size) * f)
}

// runFigures are one run's values, per tool (index 0 Coffer, 1 restic).
type runFigures struct {
	backup1, backup2, restore [2]measurement
	repo1, repo2              [2]int64
	serverRSS                 int64
	dataDir                   int64
}

func benchmark(ctx context.Context, o options, logw io.Writer) (*results, error) {
	log := func(format string, args ...any) { fmt.Fprintf(logw, "› "+format+"\n", args...) }

	cofferBin, err := filepath.Abs(o.coffer)
	if err != nil {
		return nil, err
	}
	if st, err := os.Stat(cofferBin); err != nil || st.IsDir() || st.Mode().Perm()&0o111 == 0 {
		return nil, fmt.Errorf("-coffer %s: not an executable file: build it with `make build` (make bench does)", o.coffer)
	}
	resticBin, err := findRestic(ctx, o.restic, log)
	if err != nil {
		return nil, err
	}
	res := &results{Runs: o.runs, Machine: machineInfo()}
	if res.Machine.CofferVersion, err = version(ctx, cofferBin, "version"); err != nil {
		return nil, err
	}
	if res.Machine.ResticVersion, err = version(ctx, resticBin, "version"); err != nil {
		return nil, err
	}

	if err := os.MkdirAll(o.dir, 0o755); err != nil {
		return nil, fmt.Errorf("-dir: %w", err)
	}
	if err := checkSpace(o.dir, o.size, spaceNeeded(o.size, o.runs, o.keep)); err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp(o.dir, "coffer-bench-")
	if err != nil {
		return nil, fmt.Errorf("create the work directory: %w", err)
	}
	if o.keep {
		defer log("kept the work directory %s", work)
	} else {
		defer os.RemoveAll(work)
	}
	log("work directory %s", work)

	res.Machine.Load = loadAverage()
	corpus := filepath.Join(work, "corpus")
	res.Corpus = corpusInfo{Dir: corpus, Seed: o.seed, SizeAsked: o.size}
	env := cleanEnv(os.Environ())
	var runs []runFigures
	var other, capacity float64 // CPU seconds: others' use and the machine's during the timed steps
	for i := range o.runs {
		rf, err := oneRun(ctx, o, i, work, corpus, cofferBin, resticBin, env, res, log)
		if err != nil {
			if o.keep {
				err = fmt.Errorf("%w\n(the logs of every step are in %s)", err, work)
			} else {
				err = fmt.Errorf("%w\n(rerun with -keep to keep the logs of every step)", err)
			}
			return nil, err
		}
		runs = append(runs, rf)
		for _, m := range slices.Concat(rf.backup1[:], rf.backup2[:], rf.restore[:]) {
			other += m.OtherCPU
			capacity += m.Wall.Seconds() * float64(res.Machine.CPUs)
		}
	}
	if capacity > 0 {
		res.Machine.OtherCPU = other / capacity
	}
	res.Figures = figures(runs)
	res.Notes = []string{
		"Same corpus, same machine, one process of each tool at a time; which tool goes first alternates every step and every run.",
		"sync before every timed step; the page cache stays warm for both tools (the corpus was just written), as in peers.sh.",
		"restic runs on its defaults, here " + res.Machine.ResticRepo + " (restic 0.14's, as for the reference figures).",
		"Coffer's repository is <data-dir>/repository; its index and metadata live in the server's database, counted in \"Coffer data dir\".",
	}
	return res, nil
}

// oneRun generates the corpus afresh and measures both tools on it.
func oneRun(ctx context.Context, o options, i int, work, corpus, cofferBin, resticBin string, env []string,
	res *results, log func(string, ...any)) (runFigures, error) {
	var rf runFigures
	log("run %d of %d: generating a %s corpus (seed %d)", i+1, o.runs, formatBytes(float64(o.size)), o.seed)
	if err := os.RemoveAll(corpus); err != nil {
		return rf, err
	}
	start := time.Now()
	if err := benchcorpus.Generate(corpus, o.size, o.seed); err != nil {
		return rf, err
	}
	if i == 0 {
		n, b, err := countFiles(corpus)
		if err != nil {
			return rf, err
		}
		res.Corpus.Files, res.Corpus.Bytes = n, b
		log("corpus: %d files, %s, in %.1f s", n, formatBytes(float64(b)), time.Since(start).Seconds())
	}

	dir := filepath.Join(work, fmt.Sprintf("run%d", i+1))
	r := &runner{logs: filepath.Join(dir, "logs"), env: env}
	if err := os.MkdirAll(r.logs, 0o755); err != nil {
		return rf, err
	}
	cof := newCoffer(cofferBin, corpus, dir, r)
	rst := newRestic(resticBin, corpus, dir, r)
	tools := [2]tool{cof, rst}
	defer func() {
		if err := cof.stop(context.Background()); err != nil {
			log("stopping the coffer server: %v", err)
		}
	}()
	for _, t := range tools {
		if err := t.start(ctx); err != nil {
			return rf, fmt.Errorf("set up %s: %w", t.name(), err)
		}
	}
	if i == 0 {
		f, err := rst.repoFormat(ctx)
		if err != nil {
			return rf, err
		}
		res.Machine.ResticRepo = f
	}

	// each runs step for both tools, the first one alternating.
	each := func(step int, what string, fn func(k int, t tool) error) error {
		for j := range 2 {
			k := (i + step + j) % 2
			log("run %d: %s with %s", i+1, what, tools[k].name())
			if err := fn(k, tools[k]); err != nil {
				return fmt.Errorf("run %d, %s with %s: %w", i+1, what, tools[k].name(), err)
			}
		}
		return nil
	}
	sizes := func(into *[2]int64) error {
		for k, t := range tools {
			n, err := diskUsage(t.repoDir())
			if err != nil {
				return err
			}
			into[k] = n
		}
		return nil
	}

	err := each(0, "first backup", func(k int, t tool) (err error) {
		rf.backup1[k], err = t.backup(ctx, "backup1")
		return err
	})
	if err == nil {
		err = sizes(&rf.repo1)
	}
	if err != nil {
		return rf, err
	}

	log("run %d: mutating the corpus and hashing it (untimed)", i+1)
	if err := benchcorpus.Mutate(corpus, 1, o.seed); err != nil {
		return rf, err
	}
	want, err := hashTree(ctx, corpus)
	if err != nil {
		return rf, err
	}
	if i == 0 {
		res.Corpus.MutatedFiles, res.Corpus.MutatedBytes = want.files()
	}

	err = each(1, "incremental backup", func(k int, t tool) (err error) {
		rf.backup2[k], err = t.backup(ctx, "backup2")
		return err
	})
	if err == nil {
		err = sizes(&rf.repo2)
	}
	if err == nil {
		rf.dataDir, err = diskUsage(cof.dataDir)
	}
	if err != nil {
		return rf, err
	}

	err = each(2, "restore", func(k int, t tool) error {
		target := filepath.Join(dir, "restore-"+t.name())
		m, root, err := t.restore(ctx, target)
		if err != nil {
			return err
		}
		rf.restore[k] = m
		if err := verifyRestore(ctx, t.name(), want, root); err != nil {
			return err
		}
		log("run %d: %s's restore matches the corpus", i+1, t.name())
		if o.keep {
			return nil
		}
		return os.RemoveAll(target)
	})
	if err != nil {
		return rf, err
	}
	if err := cof.stop(ctx); err != nil {
		return rf, err
	}
	rf.serverRSS = cof.peak
	log("run %d: first backup %.2f s / %.2f s, incremental %.2f s / %.2f s, restore %.2f s / %.2f s (coffer / restic)", i+1,
		rf.backup1[0].Wall.Seconds(), rf.backup1[1].Wall.Seconds(), rf.backup2[0].Wall.Seconds(), rf.backup2[1].Wall.Seconds(),
		rf.restore[0].Wall.Seconds(), rf.restore[1].Wall.Seconds())
	if !o.keep {
		if err := os.RemoveAll(dir); err != nil {
			return rf, err
		}
	}
	return rf, nil
}

// figures turns the runs' values into the table's lines, targets first.
func figures(runs []runFigures) []*figure {
	type per func(r runFigures, k int) float64 // a value of tool k (0 Coffer, 1 restic) in run r
	wall := func(m func(runFigures) [2]measurement) per {
		return func(r runFigures, k int) float64 { return m(r)[k].Wall.Seconds() }
	}
	rss := func(m func(runFigures) [2]measurement) per {
		return func(r runFigures, k int) float64 { return float64(m(r)[k].MaxRSS) }
	}
	cpu := func(m func(runFigures) [2]measurement) per {
		return func(r runFigures, k int) float64 { return m(r)[k].CPU }
	}
	b1 := func(r runFigures) [2]measurement { return r.backup1 }
	b2 := func(r runFigures) [2]measurement { return r.backup2 }
	rs := func(r runFigures) [2]measurement { return r.restore }
	lines := []struct {
		f          figure
		value      per
		cofferOnly bool
	}{
		{figure{Key: "first_backup_seconds", Label: "first backup", Unit: unitSeconds, Target: target{Min: 2}}, wall(b1), false},
		{figure{Key: "incremental_backup_seconds", Label: "incremental backup", Unit: unitSeconds, Target: target{Min: 4}}, wall(b2), false},
		{figure{Key: "restore_seconds", Label: "restore", Unit: unitSeconds, Target: target{Min: 2}}, wall(rs), false},
		{figure{Key: "repository_bytes", Label: "repository after both backups", Unit: unitBytes, Target: target{Max: 1}},
			func(r runFigures, k int) float64 { return float64(r.repo2[k]) }, false},
		{figure{Key: "agent_peak_rss_bytes", Label: "peak RSS backing up (agent)", Unit: unitBytes, Target: target{Max: 1}},
			func(r runFigures, k int) float64 { return float64(max(r.backup1[k].MaxRSS, r.backup2[k].MaxRSS)) }, false},
		{figure{Key: "repository_after_first_bytes", Label: "repository after first backup", Unit: unitBytes},
			func(r runFigures, k int) float64 { return float64(r.repo1[k]) }, false},
		{figure{Key: "first_backup_rss_bytes", Label: "peak RSS, first backup", Unit: unitBytes}, rss(b1), false},
		{figure{Key: "incremental_backup_rss_bytes", Label: "peak RSS, incremental", Unit: unitBytes}, rss(b2), false},
		{figure{Key: "restore_rss_bytes", Label: "peak RSS, restore", Unit: unitBytes}, rss(rs), false},
		{figure{Key: "first_backup_cpu_seconds", Label: "CPU time, first backup", Unit: unitSeconds}, cpu(b1), false},
		{figure{Key: "incremental_backup_cpu_seconds", Label: "CPU time, incremental", Unit: unitSeconds}, cpu(b2), false},
		{figure{Key: "restore_cpu_seconds", Label: "CPU time, restore", Unit: unitSeconds}, cpu(rs), false},
		{figure{Key: "server_peak_rss_bytes", Label: "Coffer server peak RSS", Unit: unitBytes},
			func(r runFigures, _ int) float64 { return float64(r.serverRSS) }, true},
		{figure{Key: "coffer_data_dir_bytes", Label: "Coffer data dir (repo + database)", Unit: unitBytes},
			func(r runFigures, _ int) float64 { return float64(r.dataDir) }, true},
	}
	out := make([]*figure, len(lines))
	for i, l := range lines {
		f := l.f
		for _, r := range runs {
			f.Coffer = append(f.Coffer, l.value(r, 0))
			if !l.cofferOnly {
				f.Restic = append(f.Restic, l.value(r, 1))
			}
		}
		out[i] = &f
	}
	return out
}

// checkSpace refuses to start when dir's file system cannot hold a run.
func checkSpace(dir string, size, need int64) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("check the free space in %s: %w", dir, err)
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	if free < need {
		return fmt.Errorf("not enough free space in %s: %s free, a %s corpus needs about %s (corpus, two repositories, a restore; more with -keep); "+
			"choose another place with -dir or a smaller corpus with -size", dir, formatBytes(float64(free)), formatBytes(float64(size)), formatBytes(float64(need)))
	}
	return nil
}

// countFiles counts the regular files under root and their bytes.
func countFiles(root string) (int, int64, error) {
	var n int
	var total int64
	err := filepath.WalkDir(root, func(_ string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		n++
		total += info.Size()
		return nil
	})
	return n, total, err
}

// cleanEnv drops the variables that would change either tool's settings
// (RESTIC_*, COFFER_*), so both run on their defaults.
func cleanEnv(env []string) []string {
	var out []string
	for _, kv := range env {
		if strings.HasPrefix(kv, "RESTIC_") || strings.HasPrefix(kv, "COFFER_") {
			continue
		}
		out = append(out, kv)
	}
	return out
}

// machineInfo describes this machine.
func machineInfo() machine {
	m := machine{CPUs: runtime.NumCPU(), OSArch: runtime.GOOS + "/" + runtime.GOARCH, GoVersion: runtime.Version(), CPUModel: "unknown"}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		m.CPUModel = cpuModel(string(b))
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		m.MemoryBytes = memTotal(string(b))
	}
	var u unix.Utsname
	if err := unix.Uname(&u); err == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	return m
}

// cpuModel is the first "model name" of /proc/cpuinfo.
func cpuModel(cpuinfo string) string {
	for line := range strings.Lines(cpuinfo) {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// memTotal is MemTotal of /proc/meminfo in bytes.
func memTotal(meminfo string) int64 {
	for line := range strings.Lines(meminfo) {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			var kb int64
			if _, err := fmt.Sscanf(strings.TrimSpace(rest), "%d kB", &kb); err == nil {
				return kb * 1024
			}
		}
	}
	return 0
}

// loadAverage is the 1-minute load average, 0 when unknown.
func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	var l float64
	if _, err := fmt.Sscanf(string(b), "%f", &l); err != nil {
		return 0
	}
	return l
}
