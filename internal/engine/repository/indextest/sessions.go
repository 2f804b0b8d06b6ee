package indextest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/repository"
)

func beginSession(t testing.TB, ix repository.Index, ttl time.Duration) repository.Session {
	t.Helper()
	s, err := ix.BeginSession(context.Background(), ttl)
	if err != nil {
		t.Fatalf("BeginSession: %v", err)
	}
	return s
}

func testSessions(t *testing.T, ix repository.Index, c *Clock) {
	ctx := t.Context()
	s1 := beginSession(t, ix, time.Minute)
	if s1.ID == "" {
		t.Fatal("BeginSession returned a session without an id")
	}
	a := BlobID(1)
	AddPack(t, ix, "p1", a)
	if got := touched(t, ix, a); got != s1.Epoch {
		t.Errorf("blob added during the session touched at %d, want the session's epoch %d (no GC since it began)", got, s1.Epoch)
	}

	// A live session started before BeginGC lowers the bound to its epoch.
	if bound := beginGC(t, ix, "gc"); bound != s1.Epoch {
		t.Errorf("BeginGC bound = %d with a live session from epoch %d, want %d", bound, s1.Epoch, s1.Epoch)
	}
	endGC(t, ix, "gc")

	// Renewing extends the lease from now: at 100s the session, renewed at
	// 50s for a minute, still holds although its first lease ended at 60s.
	c.Advance(50 * time.Second)
	if err := ix.RenewSession(ctx, s1, time.Minute); err != nil {
		t.Fatalf("RenewSession of a live session: %v", err)
	}
	c.Advance(50 * time.Second)
	if bound := beginGC(t, ix, "gc"); bound != s1.Epoch {
		t.Errorf("BeginGC bound = %d with a renewed session from epoch %d, want %d", bound, s1.Epoch, s1.Epoch)
	}
	endGC(t, ix, "gc")

	// Past its lease, the session can no longer be renewed and no longer
	// holds GC back.
	c.Advance(11 * time.Second)
	if err := ix.RenewSession(ctx, s1, time.Minute); !errors.Is(err, repository.ErrSessionExpired) {
		t.Errorf("RenewSession of an expired session: %v, want ErrSessionExpired", err)
	}
	bound := beginGC(t, ix, "gc")
	if bound <= s1.Epoch {
		t.Errorf("BeginGC bound = %d: the expired session from epoch %d still holds it back", bound, s1.Epoch)
	}
	endGC(t, ix, "gc")
	s2 := beginSession(t, ix, time.Minute)
	if s2.Epoch != bound {
		t.Errorf("session begun after BeginGC has epoch %d, want the epoch GC advanced to (%d)", s2.Epoch, bound)
	}
	if s2.ID == s1.ID {
		t.Errorf("two sessions share the id %q", s2.ID)
	}

	// Ending is final, and ending twice is not an error.
	if err := ix.EndSession(ctx, s2); err != nil {
		t.Fatal(err)
	}
	if err := ix.EndSession(ctx, s2); err != nil {
		t.Errorf("EndSession of an ended session: %v", err)
	}
	if err := ix.RenewSession(ctx, s2, time.Minute); !errors.Is(err, repository.ErrSessionExpired) {
		t.Errorf("RenewSession of an ended session: %v, want ErrSessionExpired", err)
	}
	if err := ix.EndSession(ctx, s1); err != nil {
		t.Errorf("EndSession of an expired session: %v", err)
	}

	// A session never renewed runs out after its ttl.
	s3 := beginSession(t, ix, 10*time.Second)
	c.Advance(9 * time.Second)
	if bound := beginGC(t, ix, "gc"); bound != s3.Epoch {
		t.Errorf("BeginGC bound = %d 9s into a 10s session from epoch %d, want %d", bound, s3.Epoch, s3.Epoch)
	}
	endGC(t, ix, "gc")
	c.Advance(2 * time.Second)
	if bound := beginGC(t, ix, "gc"); bound <= s3.Epoch {
		t.Errorf("BeginGC bound = %d: a session whose 10s lease ran out still holds it at epoch %d", bound, s3.Epoch)
	}
	endGC(t, ix, "gc")
	if err := ix.RenewSession(ctx, s3, time.Minute); !errors.Is(err, repository.ErrSessionExpired) {
		t.Errorf("RenewSession after the lease ran out: %v, want ErrSessionExpired", err)
	}
}

func testSessionsAndGCBound(t *testing.T, ix repository.Index, _ *Clock) {
	ctx := t.Context()
	x, y, z := BlobID(1), BlobID(2), BlobID(3)
	AddPack(t, ix, "old", x, z)
	beginGC(t, ix, "gc") // x and z now predate the current epoch
	endGC(t, ix, "gc")

	s1 := beginSession(t, ix, time.Hour)
	b1 := beginGC(t, ix, "gc")
	if b1 != s1.Epoch {
		t.Errorf("bound = %d, want the live session's epoch %d", b1, s1.Epoch)
	}
	endGC(t, ix, "gc")
	s2 := beginSession(t, ix, time.Hour)
	if s2.Epoch <= s1.Epoch {
		t.Errorf("session begun after BeginGC has epoch %d, want more than %d", s2.Epoch, s1.Epoch)
	}
	if b := beginGC(t, ix, "gc"); b != s1.Epoch {
		t.Errorf("bound = %d with sessions from epochs %d and %d, want the oldest", b, s1.Epoch, s2.Epoch)
	}
	endGC(t, ix, "gc")

	// What the session was told is present, and what it wrote, survives a
	// GC that begins while it runs; what it did not touch does not.
	if missing, err := ix.Missing(ctx, []blob.ID{x}); err != nil || len(missing) != 0 {
		t.Fatalf("Missing(x) = %v, %v", shorts(missing), err)
	}
	AddPack(t, ix, "new", y)
	b := beginGC(t, ix, "gc")
	deleteBlobs(t, ix, []blob.ID{x, y, z}, b, 1)
	if got := lookup(t, ix, x, y, z); len(got) != 2 || got[x].Pack != PackID("old") || got[y].Pack != PackID("new") {
		t.Errorf("after DeleteBlobs: %v, want x and y kept and z deleted", got)
	}
	endGC(t, ix, "gc")

	// Ended sessions stop lowering the bound, oldest first.
	if err := ix.EndSession(ctx, s1); err != nil {
		t.Fatal(err)
	}
	if b := beginGC(t, ix, "gc"); b != s2.Epoch {
		t.Errorf("bound = %d after the older session ended, want the younger one's epoch %d", b, s2.Epoch)
	}
	endGC(t, ix, "gc")
	if err := ix.EndSession(ctx, s2); err != nil {
		t.Fatal(err)
	}
	b = beginGC(t, ix, "gc")
	if b <= s2.Epoch {
		t.Errorf("bound = %d with no session left, want the new epoch (more than %d)", b, s2.Epoch)
	}
	endGC(t, ix, "gc")
	if s := beginSession(t, ix, time.Hour); s.Epoch != b {
		t.Errorf("new session's epoch = %d, want the last GC's epoch %d", s.Epoch, b)
	}
}
