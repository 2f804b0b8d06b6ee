package repos_test

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/cofferhq/coffer/internal/engine/repository/repotest"
	"github.com/cofferhq/coffer/internal/server/repos"
)

func TestDefaultAndUnknown(t *testing.T) {
	def := repotest.New(t, repotest.Options{})
	set := repos.New(def, nil)
	ctx := context.Background()
	for _, id := range []string{"", def.Config().ID} {
		got, err := set.Get(ctx, id)
		if err != nil || got != def {
			t.Fatalf("Get(%q) = %p, %v; want the default %p", id, got, err, def)
		}
	}
	if set.DefaultID() != def.Config().ID {
		t.Fatalf("DefaultID = %q", set.DefaultID())
	}
	_, err := set.Get(ctx, "nope")
	if coffer.ErrorCode(err) != "repository_not_found" {
		t.Fatalf("Get(unknown) = %v, want repository_not_found", err)
	}
}

// TestOpensOnce checks that concurrent first uses open a repository once,
// that a failed open is retried by the next Get, and that Drop reopens.
func TestOpensOnce(t *testing.T) {
	def := repotest.New(t, repotest.Options{})
	other := repotest.New(t, repotest.Options{})
	var opens atomic.Int32
	var fail atomic.Bool
	fail.Store(true)
	set := repos.New(def, func(ctx context.Context, id string) (*repository.Repository, error) {
		opens.Add(1)
		if fail.Load() {
			return nil, errors.New("storage unreachable")
		}
		return other, nil
	})
	ctx := context.Background()
	id := other.Config().ID
	if _, err := set.Get(ctx, id); err == nil {
		t.Fatal("a failed open returned no error")
	}
	fail.Store(false)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if got, err := set.Get(ctx, id); err != nil || got != other {
				t.Errorf("Get = %p, %v", got, err)
			}
		}()
	}
	wg.Wait()
	if n := opens.Load(); n != 2 {
		t.Fatalf("opened %d times, want 2 (one failure, then once for 8 concurrent gets)", n)
	}
	set.Drop(id)
	if _, err := set.Get(ctx, id); err != nil {
		t.Fatal(err)
	}
	if n := opens.Load(); n != 3 {
		t.Fatalf("opened %d times after Drop, want 3", n)
	}
}

// TestFailedOpenKeepsANewerEntry checks that an open that fails after a
// Drop does not forget the entry a later Get made meanwhile.
func TestFailedOpenKeepsANewerEntry(t *testing.T) {
	def := repotest.New(t, repotest.Options{})
	other := repotest.New(t, repotest.Options{})
	id := other.Config().ID
	var opens atomic.Int32
	release := make(chan struct{})
	set := repos.New(def, func(ctx context.Context, _ string) (*repository.Repository, error) {
		if opens.Add(1) == 1 {
			<-release
			return nil, errors.New("storage unreachable")
		}
		return other, nil
	})
	ctx := context.Background()
	first := make(chan error, 1)
	go func() { _, err := set.Get(ctx, id); first <- err }()
	for opens.Load() == 0 {
		runtime.Gosched()
	}
	set.Drop(id)
	if got, err := set.Get(ctx, id); err != nil || got != other {
		t.Fatalf("Get after Drop = %p, %v", got, err)
	}
	close(release)
	if err := <-first; err == nil {
		t.Fatal("the failed open returned no error")
	}
	if got, err := set.Get(ctx, id); err != nil || got != other {
		t.Fatalf("Get = %p, %v", got, err)
	}
	if n := opens.Load(); n != 2 {
		t.Fatalf("opened %d times, want 2: the failed open dropped the newer entry", n)
	}
}
