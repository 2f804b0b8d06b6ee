package health

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestRun(t *testing.T) {
	block := make(chan struct{})
	defer close(block)
	checks := []Check{
		{Name: "fine", Probe: func(context.Context) error { return nil }},
		{Name: "broken", Probe: func(context.Context) error { return errors.New("disk gone") }},
		{Name: "slow", Probe: func(context.Context) error { <-block; return nil }},
		{Name: "meh", Probe: func(context.Context) error { return &DegradedError{Reason: "half the replicas"} }},
	}
	res := Run(context.Background(), checks, 50*time.Millisecond)
	want := []Status{OK, Unavailable, Unavailable, Degraded}
	for i, r := range res {
		if r.Name != checks[i].Name || r.Status != want[i] {
			t.Errorf("result %d = %+v, want %s %s", i, r, checks[i].Name, want[i])
		}
	}
	if res[1].Message != "disk gone" || res[3].Message != "half the replicas" {
		t.Errorf("messages = %q, %q", res[1].Message, res[3].Message)
	}
	if res[2].Message != context.DeadlineExceeded.Error() {
		t.Errorf("slow probe message = %q", res[2].Message)
	}
	if Overall(res) != Unavailable || Overall(res[3:]) != Degraded || Overall(res[:1]) != OK {
		t.Error("Overall folds wrongly")
	}
}
