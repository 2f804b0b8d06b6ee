package repository_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/engine/blobstore/mem"
	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/cofferhq/coffer/internal/engine/repository/memindex"
	"github.com/cofferhq/coffer/internal/engine/repository/repotest"
)

// leaseIndex counts BeginGC calls and can refuse the renewals.
type leaseIndex struct {
	repository.Index
	mu      sync.Mutex
	begins  int
	renewed chan struct{} // closed at the first renewal
	refuse  bool          // renewals fail as if another collector took over
}

func (l *leaseIndex) BeginGC(ctx context.Context, owner string, ttl time.Duration) (int64, error) {
	l.mu.Lock()
	l.begins++
	n, refuse := l.begins, l.refuse
	l.mu.Unlock()
	if n == 2 {
		defer close(l.renewed)
		if refuse {
			return 0, repository.ErrGCRunning
		}
	}
	return l.Index.BeginGC(ctx, owner, ttl)
}

// TestGCRenewsItsLease holds a collection inside its storage listing until
// it has renewed its lease, and shows that losing the lease stops it.
func TestGCRenewsItsLease(t *testing.T) {
	for _, refuse := range []bool{false, true} {
		t.Run(map[bool]string{false: "renewed", true: "lost"}[refuse], func(t *testing.T) {
			idx := &leaseIndex{Index: memindex.New(memindex.Options{}), renewed: make(chan struct{}), refuse: refuse}
			var once sync.Once
			backend := mem.New(mem.Options{Name: "lease", BeforeOp: func(op mem.Op, name string) error {
				if op == mem.OpList && name == "packs/" {
					once.Do(func() { <-idx.renewed })
				}
				return nil
			}})
			r := repotest.New(t, repotest.Options{Backend: backend, Index: idx})
			repotest.WriteSnapshot(t, r, repotest.Files{"a": []byte("content")})
			_, err := r.GC(context.Background(), repository.GCOptions{Owner: "gc-a", Lease: 30 * time.Millisecond})
			if !refuse && err != nil {
				t.Fatalf("GC with a renewed lease: %v", err)
			}
			if refuse && (!errors.Is(err, repository.ErrGCRunning) || !strings.Contains(err.Error(), "renew the GC lease")) {
				t.Fatalf("GC that lost its lease = %v, want an error saying the lease could not be renewed", err)
			}
		})
	}
}
