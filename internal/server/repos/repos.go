// Package repos keeps the server's open repositories by id.
//
// A backup record, a plan and a restore name their repository by the
// engine repository's id (its config's ID). Services ask a Set for the open
// repository behind such an id; the Set opens each one once, on first use,
// through an Opener the storage configuration provides, and keeps it open
// until the server stops or the repository's settings change.
package repos

import (
	"context"
	"errors"
	"sync"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/engine/repository"
)

// Opener opens the repository with id. An unknown id is
// coffer.KindNotFound "repository_not_found".
type Opener func(ctx context.Context, id string) (*repository.Repository, error)

// Set is the open repositories. It is safe for concurrent use.
type Set struct {
	def    *repository.Repository
	opener Opener

	mu   sync.Mutex
	open map[string]*entry
}

// entry is one repository, opened or being opened. ready is closed once
// repo or err is set.
type entry struct {
	ready chan struct{}
	repo  *repository.Repository
	err   error
}

// New returns a Set whose default repository is def (open, and closed by
// Set.Close). Other ids are opened by opener; a nil opener knows only def.
func New(def *repository.Repository, opener Opener) *Set {
	s := &Set{def: def, opener: opener, open: map[string]*entry{}}
	done := make(chan struct{})
	close(done)
	s.open[def.Config().ID] = &entry{ready: done, repo: def}
	return s
}

// DefaultID is the id of the default repository: the one a plan or an
// ad-hoc backup that names none is stored in.
func (s *Set) DefaultID() string { return s.def.Config().ID }

// Default returns the default repository.
func (s *Set) Default() *repository.Repository { return s.def }

// Get returns the open repository with id ("" is the default one),
// opening it on first use. A failed open is not remembered: the next Get
// tries again.
func (s *Set) Get(ctx context.Context, id string) (*repository.Repository, error) {
	if id == "" {
		return s.def, nil
	}
	s.mu.Lock()
	e, ok := s.open[id]
	if !ok {
		if s.opener == nil {
			s.mu.Unlock()
			return nil, notFound(id)
		}
		e = &entry{ready: make(chan struct{})}
		s.open[id] = e
		s.mu.Unlock()
		e.repo, e.err = s.opener(ctx, id)
		if e.err != nil {
			s.mu.Lock()
			if s.open[id] == e { // not a newer entry, after a Drop or Close
				delete(s.open, id)
			}
			s.mu.Unlock()
		}
		close(e.ready)
	} else {
		s.mu.Unlock()
	}
	select {
	case <-e.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return e.repo, e.err
}

// Drop forgets the open repository with id, so the next Get opens it
// again with its current settings. The repository is not closed: jobs
// that hold it finish on it, and the garbage collector reclaims it. The
// default repository cannot be dropped.
func (s *Set) Drop(id string) {
	if id == "" || id == s.DefaultID() {
		return
	}
	s.mu.Lock()
	delete(s.open, id)
	s.mu.Unlock()
}

// Close closes every open repository and its backend.
func (s *Set) Close() error {
	s.mu.Lock()
	entries := s.open
	s.open = map[string]*entry{}
	s.mu.Unlock()
	var errs []error
	for _, e := range entries {
		<-e.ready
		if e.repo == nil {
			continue
		}
		e.repo.Close()
		errs = append(errs, e.repo.Backend().Close())
	}
	return errors.Join(errs...)
}

func notFound(id string) error {
	return coffer.Errorf(coffer.KindNotFound, "repository_not_found", "no repository with id %q", id).With("repository_id", id)
}
