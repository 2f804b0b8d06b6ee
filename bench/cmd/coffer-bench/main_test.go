package main

import (
	"errors"
	"flag"
	"io"
	"os"
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
	}{
		{"1G", 1 << 30},
		{"1g", 1 << 30},
		{"1GiB", 1 << 30},
		{"1GB", 1 << 30},
		{"512M", 512 << 20},
		{"1.5G", 3 << 29},
		{"64k", 64 << 10},
		{"2T", 2 << 40},
		{"1048576", 1 << 20},
		{" 8M ", 8 << 20},
	} {
		got, err := parseSize(c.in)
		if err != nil || got != c.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "G", "-1G", "0", "1X", "ten", "1e30G"} {
		if _, err := parseSize(bad); err == nil {
			t.Errorf("parseSize(%q) succeeded", bad)
		}
	}
	for n, want := range map[int64]string{1 << 30: "1G", 512 << 20: "512M", 3 << 29: "1536M", 1000: "1000"} {
		if got := formatSize(n); got != want {
			t.Errorf("formatSize(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestParseOptions(t *testing.T) {
	o, err := parseOptions(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.size != 1<<30 || o.runs != 1 || o.seed != 1 || o.coffer != "bin/coffer" || o.restic != "restic" ||
		o.dir != os.TempDir() || o.keep || o.jsonPath != "" {
		t.Errorf("defaults: %+v", o)
	}
	o, err = parseOptions([]string{"-runs", "3", "-size", "256M", "-dir", "/var/tmp", "-json", "out.json", "-keep",
		"-coffer", "/x/coffer", "-restic", "/y/restic", "-seed", "7"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := options{coffer: "/x/coffer", restic: "/y/restic", size: 256 << 20, dir: "/var/tmp", seed: 7, runs: 3, jsonPath: "out.json", keep: true}
	if o != want {
		t.Errorf("got %+v, want %+v", o, want)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-runs", "0"}, "-runs 0"},
		{[]string{"-size", "100K"}, "at least 1M"},
		{[]string{"-size", "lots"}, "size \"lots\""},
		{[]string{"extra"}, "unexpected argument"},
		{[]string{"-coffer", ""}, "-coffer is empty"},
		{[]string{"-nope"}, "not defined"},
	} {
		_, err := parseOptions(c.args, io.Discard)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("parseOptions(%q) = %v, want an error with %q", c.args, err, c.want)
		}
	}
	var usage strings.Builder
	if _, err := parseOptions([]string{"-h"}, &usage); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v", err)
	}
	if !strings.Contains(usage.String(), "-runs") || !strings.Contains(usage.String(), "Usage: coffer-bench") {
		t.Errorf("usage:\n%s", usage.String())
	}
}

func TestSpace(t *testing.T) {
	if got := spaceNeeded(1<<30, 3, false); got != 9<<29 {
		t.Errorf("spaceNeeded = %d, want 4.5 GiB", got)
	}
	if got := spaceNeeded(1<<30, 2, true); got != 19<<29 {
		t.Errorf("spaceNeeded with -keep = %d, want 9.5 GiB", got)
	}
	dir := t.TempDir()
	if err := checkSpace(dir, 1<<20, 1<<20); err != nil {
		t.Errorf("1 MiB does not fit: %v", err)
	}
	err := checkSpace(dir, 1<<50, 1<<60)
	if err == nil || !strings.Contains(err.Error(), "not enough free space in "+dir) || !strings.Contains(err.Error(), "-dir") {
		t.Errorf("checkSpace(1 EiB) = %v", err)
	}
}
