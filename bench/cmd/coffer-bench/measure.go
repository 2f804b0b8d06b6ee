package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// measurement is one timed process: its wall time and its peak resident
// set (the kernel's maxrss of the child).
type measurement struct {
	Wall   time.Duration
	MaxRSS int64 // bytes
	// CPU is the user and system time of the process and its helpers (for
	// Coffer, the server's share), in seconds.
	CPU float64
	// OtherCPU is the CPU time the rest of the machine used meanwhile:
	// the machine's busy time less the process's own, in seconds.
	OtherCPU float64
}

// runner starts the tools' processes, keeping each one's output in a log
// directory so that a failure can be shown in full.
type runner struct {
	logs string
	env  []string // the environment every command starts from
	seq  int
	// helpers are processes whose CPU time counts as the measured
	// command's own (Coffer's server works for the agent).
	helpers []int
}

// command is one process to run: a name for its logs, the program and its
// arguments, and environment entries added to the runner's.
type command struct {
	name string
	env  []string
	args []string
}

// commandError is a process that failed: what ran, how it ended, and the
// end of what it wrote.
type commandError struct {
	cmd    string
	err    error
	stderr string
	stdout string
}

func (e *commandError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %v", e.cmd, e.err)
	if e.stderr != "" {
		fmt.Fprintf(&b, "\n--- its stderr ---\n%s", strings.TrimRight(e.stderr, "\n"))
	}
	if e.stdout != "" {
		fmt.Fprintf(&b, "\n--- the end of its stdout ---\n%s", strings.TrimRight(e.stdout, "\n"))
	}
	return b.String()
}

// run runs c to the end, after a sync so that the previous step's
// write-back is not charged to it, and measures it. Its stdout is
// returned; both streams are also kept in the log directory.
func (r *runner) run(ctx context.Context, c command) (measurement, []byte, error) {
	r.seq++
	base := filepath.Join(r.logs, fmt.Sprintf("%02d-%s", r.seq, c.name))
	stdout, err := os.Create(base + ".stdout")
	if err != nil {
		return measurement{}, nil, err
	}
	defer stdout.Close()
	stderr, err := os.Create(base + ".stderr")
	if err != nil {
		return measurement{}, nil, err
	}
	defer stderr.Close()

	cmd := exec.CommandContext(ctx, c.args[0], c.args[1:]...)
	cmd.Env = append(append([]string(nil), r.env...), c.env...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.WaitDelay = 10 * time.Second
	syscall.Sync()
	busy0, _ := cpuBusy()
	help0 := r.helperCPU()
	start := time.Now()
	err = cmd.Run()
	wall := time.Since(start)
	busy1, _ := cpuBusy()
	help1 := r.helperCPU()
	out, rerr := os.ReadFile(base + ".stdout")
	if err == nil && rerr != nil {
		err = rerr
	}
	if err != nil {
		errText, _ := os.ReadFile(base + ".stderr")
		return measurement{}, out, &commandError{cmd: strings.Join(c.args, " "), err: err,
			stderr: tail(errText, 64<<10), stdout: tail(out, 4<<10)}
	}
	m := measurement{Wall: wall}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		m.MaxRSS = ru.Maxrss * 1024 // kilobytes on Linux
		m.CPU = time.Duration(ru.Utime.Nano()+ru.Stime.Nano()).Seconds() + help1 - help0
		m.OtherCPU = max(0, busy1-busy0-m.CPU)
	}
	return m, out, nil
}

// tail is the last n bytes of b, from a line start when there is one.
func tail(b []byte, n int) string {
	if len(b) <= n {
		return string(b)
	}
	b = b[len(b)-n:]
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		b = b[i+1:]
	}
	return "…\n" + string(b)
}

// lastLine is the last non-empty line of out.
func lastLine(out []byte) []byte {
	out = bytes.TrimRight(out, "\n")
	if i := bytes.LastIndexByte(out, '\n'); i >= 0 {
		return out[i+1:]
	}
	return out
}

// peakRSS reads a running process's high-water mark of resident memory.
func peakRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read the peak memory of process %d: %w", pid, err)
	}
	return parseVmHWM(b)
}

// parseVmHWM finds VmHWM in the text of /proc/PID/status.
func parseVmHWM(status []byte) (int64, error) {
	for line := range strings.Lines(string(status)) {
		rest, ok := strings.CutPrefix(line, "VmHWM:")
		if !ok {
			continue
		}
		var kb int64
		if _, err := fmt.Sscanf(strings.TrimSpace(rest), "%d kB", &kb); err != nil {
			return 0, fmt.Errorf("parse %q: %w", strings.TrimSpace(line), err)
		}
		return kb * 1024, nil
	}
	return 0, errors.New("no VmHWM line in /proc/PID/status")
}

// helperCPU is the CPU time the helper processes have used so far, in
// seconds.
func (r *runner) helperCPU() float64 {
	var total float64
	for _, pid := range r.helpers {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
			if v, err := parseProcCPU(string(b)); err == nil {
				total += v
			}
		}
	}
	return total
}

// parseProcCPU is utime + stime of /proc/PID/stat, in seconds.
func parseProcCPU(stat string) (float64, error) {
	i := strings.LastIndexByte(stat, ')') // the command name may hold spaces and parentheses
	f := strings.Fields(stat[i+1:])
	if i < 0 || len(f) < 13 {
		return 0, fmt.Errorf("parse /proc/PID/stat: %q", stat)
	}
	// After the name: state(0) ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime(11) stime(12).
	var ticks uint64
	for _, s := range f[11:13] {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse /proc/PID/stat: %w", err)
		}
		ticks += v
	}
	return float64(ticks) / 100, nil
}

// cpuBusy is the CPU time the machine has spent working since it booted,
// all cores together, in seconds (from /proc/stat).
func cpuBusy() (float64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	return parseCPUBusy(string(b))
}

// parseCPUBusy adds up user, nice, system, irq and softirq of the "cpu"
// line of /proc/stat (in USER_HZ = 100 ticks a second): everything but
// idle, iowait and the time stolen by a hypervisor.
func parseCPUBusy(stat string) (float64, error) {
	for line := range strings.Lines(stat) {
		f := strings.Fields(line)
		if len(f) < 8 || f[0] != "cpu" {
			continue
		}
		var ticks uint64
		for _, i := range []int{1, 2, 3, 6, 7} {
			v, err := strconv.ParseUint(f[i], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parse /proc/stat: %q: %w", strings.TrimSpace(line), err)
			}
			ticks += v
		}
		return float64(ticks) / 100, nil
	}
	return 0, errors.New("no cpu line in /proc/stat")
}
