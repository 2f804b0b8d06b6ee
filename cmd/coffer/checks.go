package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"

	"github.com/cofferhq/coffer/internal/engine/blobstore"
	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/server/events"
	"github.com/cofferhq/coffer/internal/server/health"
	"github.com/cofferhq/coffer/internal/server/scheduler"
)

// The probes' messages are shown by the public /readyz: they say what is
// wrong without internals (addresses, credentials); the details go to the log.

func databaseProbe(db *metadb.DB, log *slog.Logger) func(context.Context) error {
	return func(ctx context.Context) error {
		if err := db.Ping(ctx); err != nil {
			log.Warn("database check failed", "err", err)
			return errors.New("the metadata database does not answer or its file is gone")
		}
		return nil
	}
}

func schemaProbe(db *metadb.DB, log *slog.Logger) func(context.Context) error {
	return func(ctx context.Context) error {
		s, err := db.Schema(ctx)
		if err != nil {
			log.Warn("schema check failed", "err", err)
			return errors.New("cannot read the schema version")
		}
		if !s.UpToDate() {
			return fmt.Errorf("database schema is at version %d, this server needs %d", s.Current, s.Latest)
		}
		return nil
	}
}

// dataDirProbe writes, syncs and removes a file in the data directory.
func dataDirProbe(dir string, log *slog.Logger) func(context.Context) error {
	return func(context.Context) error {
		f, err := os.CreateTemp(dir, ".coffer-probe-*")
		if err != nil {
			log.Warn("data directory check failed", "dir", dir, "err", err)
			return fmt.Errorf("the data directory is not writable: %s", reason(err))
		}
		name := f.Name()
		_, err = f.WriteString("ok")
		if err == nil {
			err = f.Sync()
		}
		f.Close()
		os.Remove(name)
		if err != nil {
			log.Warn("data directory check failed", "dir", dir, "err", err)
			return fmt.Errorf("the data directory is not writable: %s", reason(err))
		}
		return nil
	}
}

// storageProbe asks the repository's backend for its config object: the
// storage answers, and the repository is still there.
func storageProbe(b blobstore.Backend, log *slog.Logger) func(context.Context) error {
	return func(ctx context.Context) error {
		_, err := b.Stat(ctx, repository.ConfigName)
		if err == nil {
			return nil
		}
		log.Warn("storage check failed", "repository", b.Location(), "err", err)
		if errors.Is(err, blobstore.ErrNotFound) {
			return errors.New("the repository's config is gone from its storage")
		}
		return errors.New("the repository storage does not answer")
	}
}

// reason is the errno text of a file error, without the path.
func reason(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return "write failed"
}

// readinessChecks gate /readyz. The default repository is on local disk,
// this replica's own, so a replica that lost it is not ready.
func readinessChecks(db *metadb.DB, dataDir string, storage blobstore.Backend, log *slog.Logger) []health.Check {
	return []health.Check{
		{Name: "database", Ready: true, Probe: databaseProbe(db, log)},
		{Name: "migrations", Ready: true, Probe: schemaProbe(db, log)},
		{Name: "data_dir", Ready: true, Probe: dataDirProbe(dataDir, log)},
		{Name: "storage", Ready: true, Probe: storageProbe(storage, log)},
	}
}

// componentChecks feed /api/v1/health.
func componentChecks(db *metadb.DB, dataDir string, storage blobstore.Backend, hub *events.Hub, sched *scheduler.Scheduler, log *slog.Logger) []health.Check {
	return []health.Check{
		{Name: "database", Probe: func(ctx context.Context) error {
			if err := databaseProbe(db, log)(ctx); err != nil {
				return err
			}
			return schemaProbe(db, log)(ctx)
		}},
		{Name: "data_dir", Probe: func(ctx context.Context) error {
			if err := dataDirProbe(dataDir, log)(ctx); err != nil {
				return err
			}
			return diskSpace(dataDir)
		}},
		{Name: "storage", Probe: storageProbe(storage, log)},
		{Name: "event_hub", Probe: hub.Healthy},
		{Name: "scheduler", Probe: sched.Healthy},
	}
}

// diskSpace reports a degraded data directory when its filesystem is
// nearly full.
func diskSpace(dir string) error {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return nil // not knowing the free space is not a fault
	}
	free := st.Bavail * uint64(st.Bsize)
	total := st.Blocks * uint64(st.Bsize)
	if total > 0 && (free < 1<<30 || free*20 < total) {
		return &health.DegradedError{Reason: fmt.Sprintf("only %.1f GiB free on the data directory's filesystem (%s)",
			float64(free)/(1<<30), filepath.Clean(dir))}
	}
	return nil
}
