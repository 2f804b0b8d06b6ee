package storetest

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/cofferhq/coffer/internal/engine/blobstore"
)

func testList(t *testing.T, b blobstore.Backend) {
	// Distinct sizes so that a swapped size is caught.
	listed := map[string]int{
		"config":           11,
		"packs/ab/ab01":    21,
		"packs/ab/ab02":    22,
		"packs/ac/ac01":    23,
		"packs/b0/b001":    24,
		"packs/b0/b0/deep": 25,
		"snapshots/s1":     31,
		"snapshots/s2":     0,
		"snapshotsx":       41,
		"locks/.lock-1":    51,
	}
	for name, size := range listed {
		Put(t, b, name, Data(uint64(size), size))
	}
	tests := []struct {
		prefix string
		want   []string
	}{
		{"", nil}, // everything, filled below
		{"packs/", []string{"packs/ab/ab01", "packs/ab/ab02", "packs/ac/ac01", "packs/b0/b0/deep", "packs/b0/b001"}},
		{"packs", []string{"packs/ab/ab01", "packs/ab/ab02", "packs/ac/ac01", "packs/b0/b0/deep", "packs/b0/b001"}},
		{"packs/a", []string{"packs/ab/ab01", "packs/ab/ab02", "packs/ac/ac01"}},
		{"packs/ab/", []string{"packs/ab/ab01", "packs/ab/ab02"}},
		{"packs/ab/ab0", []string{"packs/ab/ab01", "packs/ab/ab02"}},
		{"packs/ab/ab01", []string{"packs/ab/ab01"}},
		{"packs/b0/b0", []string{"packs/b0/b0/deep", "packs/b0/b001"}},
		{"packs/b0/b0/", []string{"packs/b0/b0/deep"}},
		{"snap", []string{"snapshots/s1", "snapshots/s2", "snapshotsx"}},
		{"snapshots/", []string{"snapshots/s1", "snapshots/s2"}},
		{"c", []string{"config"}},
		{"config", []string{"config"}},
		{"locks/.", []string{"locks/.lock-1"}},
		{"config/", nil},
		{"nothing", nil},
		{"packs/zz/", nil},
		{"packs/ab/ab03", nil},
	}
	for name := range listed {
		tests[0].want = append(tests[0].want, name)
	}
	slices.Sort(tests[0].want)

	for _, tt := range tests {
		infos, err := list(t.Context(), b, tt.prefix)
		if err != nil {
			t.Errorf("List(%q): %v", tt.prefix, err)
			continue
		}
		var got []string
		for _, fi := range infos {
			got = append(got, fi.Name)
			if want, ok := listed[fi.Name]; ok && fi.Size != int64(want) {
				t.Errorf("List(%q): %s has size %d, want %d", tt.prefix, fi.Name, fi.Size, want)
			}
			if fi.ModTime.IsZero() {
				t.Errorf("List(%q): %s has no ModTime", tt.prefix, fi.Name)
			}
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("List(%q) names (-want +got):\n%s", tt.prefix, diff)
		}
	}
}

func testListEmpty(t *testing.T, b blobstore.Backend) {
	for _, prefix := range []string{"", "packs/", "config"} {
		if names := Names(t, b, prefix); len(names) != 0 {
			t.Errorf("List(%q) of an empty backend: %q", prefix, names)
		}
	}
}

func testListStops(t *testing.T, b blobstore.Backend) {
	for i := range 5 {
		Put(t, b, "packs/00/"+string(rune('a'+i)), Data(uint64(i), 10))
	}
	stop := errors.New("enough")
	calls := 0
	err := b.List(t.Context(), "packs/", func(blobstore.ObjectInfo) error {
		calls++
		return stop
	})
	if !errors.Is(err, stop) {
		t.Errorf("List returned %v, want the callback's error", err)
	}
	if calls != 1 {
		t.Errorf("callback called %d times after returning an error, want 1", calls)
	}
}

// testListOddPrefix: prefixes no valid name starts with list nothing (or
// are refused) and, above all, never reach outside the backend.
func testListOddPrefix(t *testing.T, b blobstore.Backend) {
	Put(t, b, "packs/ab/x", Data(1, 10))
	for _, prefix := range []string{"../", "..", "/", "/packs", "packs//", "packs/../", "./", "a b", `packs\`, "~"} {
		var got []string
		err := b.List(t.Context(), prefix, func(fi blobstore.ObjectInfo) error {
			got = append(got, fi.Name)
			return nil
		})
		if err == nil && len(got) != 0 {
			t.Errorf("List(%q) = %q, want nothing", prefix, got)
		}
		for _, name := range got {
			if !strings.HasPrefix(name, prefix) {
				t.Errorf("List(%q) reported %q, outside the prefix", prefix, name)
			}
		}
	}
}
