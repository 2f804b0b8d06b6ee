package tree

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func sampleSnapshot() *Snapshot {
	return &Snapshot{
		Version: 1, Time: time.Date(2024, 5, 1, 2, 0, 0, 123456789, time.UTC), Tree: testID(1),
		Hostname: "db-1", Paths: []string{"/etc", "/var/lib/postgres\n"}, Tags: []string{"nightly", "<&>"},
		ClientID: "cl_1", PlanID: "pl_2", BackupID: "bk_3", Parent: strings.Repeat("ab", 32),
		Stats: SnapshotStats{Files: 10, Dirs: 2, Symlinks: 1, Others: 3, Bytes: 1 << 40,
			DataBlobs: 5, TreeBlobs: 3, AddedBytes: 12345},
	}
}

func TestSnapshotRoundTrip(t *testing.T) {
	minimal := &Snapshot{Version: 1, Time: time.Unix(1, 0).UTC(), Tree: testID(2), Paths: []string{}}
	for _, s := range []*Snapshot{sampleSnapshot(), minimal} {
		b, err := s.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		got, err := UnmarshalSnapshot(b)
		if err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		if diff := cmp.Diff(s, got); diff != "" {
			t.Fatalf("round trip differs (-want +got):\n%s", diff)
		}
		again, err := got.Marshal()
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("marshalling again gives\n%s\nnot\n%s (err %v)", again, b, err)
		}
	}
}

// Marshal writes the time in UTC and nil paths as [], whatever it is given.
func TestSnapshotMarshalNormalizes(t *testing.T) {
	s := sampleSnapshot()
	want, err := s.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	s.Time = s.Time.In(time.FixedZone("CEST", 2*3600))
	if got, err := s.Marshal(); err != nil || !bytes.Equal(got, want) {
		t.Errorf("a time in another zone marshals as\n%s\nnot\n%s (err %v)", got, want, err)
	}
	s.Paths = nil
	b, err := s.Marshal()
	if err != nil || !bytes.Contains(b, []byte(`"paths":[]`)) {
		t.Errorf("nil paths marshal as %s (err %v)", b, err)
	}
	if !bytes.Contains(b, []byte(`"tree":"`+testID(1).String()+`"`)) {
		t.Errorf("tree not in hex: %s", b)
	}
}

func TestSnapshotMarshalRefuses(t *testing.T) {
	tests := map[string]func(*Snapshot){
		"version 0":  func(s *Snapshot) { s.Version = 0 },
		"version 2":  func(s *Snapshot) { s.Version = 2 },
		"zero tree":  func(s *Snapshot) { s.Tree = [32]byte{} },
		"no time":    func(s *Snapshot) { s.Time = time.Time{} },
		"year 10000": func(s *Snapshot) { s.Time = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) },
	}
	for name, mutate := range tests {
		s := sampleSnapshot()
		mutate(s)
		if b, err := s.Marshal(); err == nil {
			t.Errorf("%s: Marshal accepted it: %s", name, b)
		}
	}
}

func TestUnmarshalSnapshotRejects(t *testing.T) {
	good, err := sampleSnapshot().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	edit := func(old, new string) []byte {
		if !bytes.Contains(good, []byte(old)) {
			t.Fatalf("%q not in %s", old, good)
		}
		return bytes.Replace(good, []byte(old), []byte(new), 1)
	}
	tree := testID(1).String()
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "unexpected end"},
		{"not JSON", []byte("snapshot"), "invalid character"},
		{"array", []byte("[]"), "cannot unmarshal array"},
		{"null", []byte("null"), "version 0"},
		{"trailing data", append(bytes.Clone(good), "{}"...), "invalid character"},
		{"unknown field", edit(`"version":1,`, `"version":1,"extra":true,`), `unknown field "extra"`},
		{"unknown stats field", edit(`"stats":{`, `"stats":{"x":1,`), `unknown field "x"`},
		{"no version", edit(`"version":1,`, ``), "version 0"},
		{"version 2", edit(`"version":1,`, `"version":2,"new":1,`), "version 2"},
		{"version as string", edit(`"version":1,`, `"version":"1",`), "cannot unmarshal string"},
		{"no tree", edit(`,"tree":"`+tree+`"`, ``), "no tree"},
		{"null tree", edit(`"`+tree+`"`, `null`), "no tree"},
		{"zero tree", edit(tree, strings.Repeat("0", 64)), "no tree"},
		{"short tree", edit(tree, tree[2:]), "want 64 hex digits"},
		{"uppercase tree", edit(tree, strings.ToUpper(tree)), "not lowercase"},
		{"tree not hex", edit(tree, strings.Repeat("g", 64)), "invalid byte"},
		{"no time", edit(`"time":"2024-05-01T02:00:00.123456789Z",`, ``), "no time"},
		{"zero time", edit(`2024-05-01T02:00:00.123456789Z`, `0001-01-01T00:00:00Z`), "no time"},
		{"time not UTC", edit(`2024-05-01T02:00:00.123456789Z`, `2024-05-01T04:00:00.123456789+02:00`), "not in UTC"},
		{"time not RFC 3339", edit(`2024-05-01T02:00:00.123456789Z`, `May 1 2024`), "cannot parse"},
		{"negative count", edit(`"files":10`, `"files":-1`), "cannot unmarshal number -1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := UnmarshalSnapshot(tt.in)
			if err == nil {
				t.Fatalf("UnmarshalSnapshot accepted %s as %+v", tt.in, s)
			}
			wantCorrupt(t, err, tt.want)
		})
	}
}

// A Snapshot inside another JSON document marshals as a manifest too.
func TestSnapshotJSON(t *testing.T) {
	type wrapper struct{ S Snapshot }
	s := sampleSnapshot()
	b, err := json.Marshal(wrapper{*s})
	if err != nil {
		t.Fatal(err)
	}
	var w wrapper
	if err := json.Unmarshal(b, &w); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(s, &w.S); diff != "" {
		t.Errorf("embedded snapshot round trip (-want +got):\n%s", diff)
	}
}

// TestSnapshotGolden reads a manifest written by an earlier build.
// Refresh (only with a new manifest version) with -update.
func TestSnapshotGolden(t *testing.T) {
	path := filepath.Join("testdata", "snapshot-v1.golden.json")
	b, err := sampleSnapshot().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	golden, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("golden file missing (run with -update once): %v", err)
	}
	if !bytes.Equal(b, golden) {
		t.Errorf("manifest differs from %s:\n%s\nthe manifest format changed", path, b)
	}
	s, err := UnmarshalSnapshot(golden)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(sampleSnapshot(), s); diff != "" {
		t.Errorf("%s decodes differently (-want +got):\n%s", path, diff)
	}
}

// FuzzSnapshot: UnmarshalSnapshot never panics, fails only with
// ErrCorrupt, and what it accepts marshals to a manifest that reads back
// the same.
func FuzzSnapshot(f *testing.F) {
	good, err := sampleSnapshot().Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{"version":1,"time":"2024-01-01T00:00:00Z","tree":"` + testID(3).String() + `","hostname":"","paths":null,"stats":{}}`))
	f.Add([]byte(`{"version":1,"VERSION":1,"time":"2024-01-01T00:00:00Z","Tree":"` + testID(3).String() + `","stats":null}`))
	f.Add([]byte(`{"version":2}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := UnmarshalSnapshot(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error is not ErrCorrupt: %v", err)
			}
			return
		}
		m, err := s.Marshal()
		if err != nil {
			t.Fatalf("accepted %s, but cannot marshal it: %v", b, err)
		}
		s2, err := UnmarshalSnapshot(m)
		if err != nil {
			t.Fatalf("accepted %s, but not its marshalled form %s: %v", b, m, err)
		}
		m2, err := s2.Marshal()
		if err != nil || !bytes.Equal(m, m2) {
			t.Fatalf("marshalling is not stable: %s then %s (err %v)", m, m2, err)
		}
	})
}
