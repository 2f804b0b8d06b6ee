package main

import (
	"os"
	"strings"
	"testing"
)

func TestParseVmHWM(t *testing.T) {
	status := "Name:\tcoffer\nVmPeak:\t 2000000 kB\nVmHWM:\t  204800 kB\nVmRSS:\t  100000 kB\n"
	got, err := parseVmHWM([]byte(status))
	if err != nil || got != 200<<20 {
		t.Errorf("parseVmHWM = %d, %v; want %d", got, err, 200<<20)
	}
	if _, err := parseVmHWM([]byte("Name:\tx\n")); err == nil {
		t.Error("a status without VmHWM parsed")
	}
	// This process's own status has one.
	if n, err := peakRSS(os.Getpid()); err != nil || n <= 0 {
		t.Errorf("peakRSS(self) = %d, %v", n, err)
	}
}

func TestOutputHelpers(t *testing.T) {
	if got := string(lastLine([]byte("{\"a\":1}\n{\"type\":\"summary\"}\n\n"))); got != `{"type":"summary"}` {
		t.Errorf("lastLine = %q", got)
	}
	if got := string(lastLine([]byte("only"))); got != "only" {
		t.Errorf("lastLine = %q", got)
	}
	if got := tail([]byte("short"), 10); got != "short" {
		t.Errorf("tail = %q", got)
	}
	if got := tail([]byte("line one\nline two\nline three\n"), 14); got != "…\nline three\n" {
		t.Errorf("tail = %q", got)
	}
	e := &commandError{cmd: "restic backup /x", err: os.ErrNotExist, stderr: "Fatal: boom\n", stdout: "{}"}
	for _, want := range []string{"restic backup /x: file does not exist", "--- its stderr ---\nFatal: boom", "--- the end of its stdout ---\n{}"} {
		if !strings.Contains(e.Error(), want) {
			t.Errorf("commandError lacks %q:\n%s", want, e.Error())
		}
	}
}

func TestSummary(t *testing.T) {
	out := []byte(`{"type":"progress","files":3}` + "\n" + `{"type":"summary","backup_id":"01J","state":"succeeded","stats":{}}` + "\n")
	s, err := summary("backup", out)
	if err != nil || s.BackupID != "01J" {
		t.Errorf("summary = %+v, %v", s, err)
	}
	for _, c := range []struct{ out, want string }{
		{`{"type":"summary","backup_id":"01J","state":"partial","error":""}`, `ended "partial"`},
		{`{"type":"summary","restore_id":"01R","state":"failed","error":"disk full"}`, "disk full"},
		{`{"type":"progress"}`, "not the summary"},
		{"Backup done", "not a JSON summary"},
		{"", "not a JSON summary"},
	} {
		if _, err := summary("backup", []byte(c.out)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("summary(%q) = %v, want an error with %q", c.out, err, c.want)
		}
	}
}

func TestMachineParsing(t *testing.T) {
	cpuinfo := "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Processor\nflags\t: fpu\n\nprocessor\t: 1\nmodel name\t: Intel(R) Xeon(R) Processor\n"
	if got := cpuModel(cpuinfo); got != "Intel(R) Xeon(R) Processor" {
		t.Errorf("cpuModel = %q", got)
	}
	if got := cpuModel("processor : 0\n"); got != "unknown" {
		t.Errorf("cpuModel without a model = %q", got)
	}
	if got := memTotal("MemTotal:       24731708 kB\nMemFree: 1 kB\n"); got != 24731708*1024 {
		t.Errorf("memTotal = %d", got)
	}
	env := cleanEnv([]string{"PATH=/bin", "RESTIC_COMPRESSION=max", "COFFER_STATE_DIR=/x", "HOME=/root"})
	if strings.Join(env, " ") != "PATH=/bin HOME=/root" {
		t.Errorf("cleanEnv = %q", env)
	}
}

func TestParseCPUBusy(t *testing.T) {
	stat := "cpu  1000 50 300 90000 400 20 30 700 0 0\ncpu0 500 25 150 45000 200 10 15 350 0 0\nintr 1\n"
	got, err := parseCPUBusy(stat)
	if err != nil || got != 14 { // (1000+50+300+20+30) / 100
		t.Errorf("parseCPUBusy = %v, %v; want 14", got, err)
	}
	if _, err := parseCPUBusy("intr 1\n"); err == nil {
		t.Error("a stat without a cpu line parsed")
	}
	if n, err := cpuBusy(); err != nil || n <= 0 {
		t.Errorf("cpuBusy() = %v, %v", n, err)
	}
}

func TestParseProcCPU(t *testing.T) {
	stat := "4242 (coffer (x) y) S 1 4242 4242 0 -1 4194560 5000 0 3 0 250 70 0 0 20 0 9 0 100 2000000 30000\n"
	if got, err := parseProcCPU(stat); err != nil || got != 3.2 {
		t.Errorf("parseProcCPU = %v, %v; want 3.2", got, err)
	}
	if _, err := parseProcCPU("garbage"); err == nil {
		t.Error("garbage parsed")
	}
	r := &runner{helpers: []int{os.Getpid()}}
	if got := r.helperCPU(); got < 0 {
		t.Errorf("helperCPU = %v", got)
	}
}
