package throttle

import (
	"testing"
	"time"
)

func TestDue(t *testing.T) {
	t0 := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	th := New(5 * time.Second)
	for _, step := range []struct {
		id    string
		after time.Duration
		want  bool
	}{
		{"a", 0, true},
		{"a", time.Second, false},
		{"b", time.Second, true}, // ids are independent
		{"a", 4999 * time.Millisecond, false},
		{"a", 5 * time.Second, true},
		{"a", 9 * time.Second, false},
		{"b", 20 * time.Second, true}, // long gone: pruned, due again
	} {
		if got := th.Due(step.id, t0.Add(step.after)); got != step.want {
			t.Errorf("Due(%s, +%s) = %v, want %v", step.id, step.after, got, step.want)
		}
	}
	if n := len(th.last); n > 2 {
		t.Errorf("%d ids remembered, want the stale ones pruned", n)
	}
}
