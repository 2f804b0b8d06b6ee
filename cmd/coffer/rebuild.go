package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/cofferhq/coffer/internal/server/masterkey"
)

type rebuildIndexCmd struct {
	JSON        bool `help:"Print the report as JSON instead of a summary."`
	Concurrency int  `help:"How many pack trailers to read at once." default:"4"`
}

// Run rebuilds the default repository's index. It never creates anything
// but the database schema: a missing master key or repository is an error.
func (c *rebuildIndexCmd) Run(g *globals, sc *serverCmd) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	l, err := sc.locate()
	if err != nil {
		return err
	}
	if _, err := os.Stat(l.repositoryDir); l.repositoryURL == "" && errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("no repository at %s: give its directory with --repository-dir or COFFER_REPOSITORY_DIR", l.repositoryDir)
	}
	key, err := masterkey.Load(l.masterKeyFile)
	if err != nil {
		return fmt.Errorf("rebuild-index needs the master key that created the repository: %w (give its file with --master-key-file or COFFER_MASTER_KEY_FILE)", err)
	}
	backend, err := openBackend(ctx, l)
	if err != nil {
		return err
	}
	// The config first: a wrong key is refused before the database is
	// touched.
	cfg, _, err := repository.OpenConfig(ctx, backend, key)
	if err != nil {
		backend.Close()
		return configError(err, l.masterKeyFile)
	}
	log := g.logger
	db, err := openDatabase(ctx, l, log)
	if err != nil {
		backend.Close()
		return err
	}
	defer db.Close()
	repo, err := repository.Open(ctx, backend, db.Index(cfg.ID), key)
	if err != nil {
		backend.Close()
		return err
	}
	defer closeRepository(repo)

	log.Info("rebuilding the index", "repository", repo.Location(), "repository_id", cfg.ID, "database", string(db.Dialect()))
	rep, err := repo.Rebuild(ctx, repository.RebuildOptions{Concurrency: c.Concurrency})
	if err != nil {
		return err
	}
	out := rebuildOutput{RepositoryID: cfg.ID, Location: repo.Location(), Clean: rep.Clean(), RebuildReport: rep}
	if c.JSON {
		err = out.writeJSON(g.stdout)
	} else {
		err = out.writeSummary(g.stdout)
	}
	if err != nil {
		return err
	}
	if !rep.Clean() {
		return fmt.Errorf("the repository is damaged: %d damaged packs and %d skipped snapshots, listed in the report; everything else is in the index. Copy the damaged packs elsewhere before the server's next garbage collection deletes them as orphans",
			len(rep.DamagedPacks), len(rep.SkippedSnapshots))
	}
	log.Info("index rebuilt", "repository", repo.Location(), "packs_added", rep.PacksAdded, "snapshots_added", rep.SnapshotsAdded)
	return nil
}

// rebuildOutput is what rebuild-index prints.
type rebuildOutput struct {
	RepositoryID string `json:"repository_id"`
	Location     string `json:"location"`
	Clean        bool   `json:"clean"`
	*repository.RebuildReport
}

func (o rebuildOutput) writeJSON(w io.Writer) error {
	r := *o.RebuildReport // lists as [], never null
	if r.DamagedPacks == nil {
		r.DamagedPacks = []repository.DamagedPack{}
	}
	if r.SkippedSnapshots == nil {
		r.SkippedSnapshots = []repository.SkippedSnapshot{}
	}
	o.RebuildReport = &r
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(o)
}

func (o rebuildOutput) writeSummary(w io.Writer) error {
	r := o.RebuildReport
	fmt.Fprintf(w, "Rebuilt the index of repository %s (%s) in %s.\n\n", o.RepositoryID, o.Location, r.Duration.Round(time.Millisecond))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "  packs\t%d in storage:\t%d added, %d already indexed, %d damaged\n",
		r.Packs, r.PacksAdded, r.PacksIndexed, len(r.DamagedPacks))
	fmt.Fprintf(tw, "  blobs\t%d added\t(%d duplicates: stored in more than one pack)\n", r.BlobsAdded, r.DuplicateBlobs)
	fmt.Fprintf(tw, "  snapshots\t%d in storage:\t%d added, %d already indexed, %d skipped\n",
		r.Snapshots, r.SnapshotsAdded, r.SnapshotsIndexed, len(r.SkippedSnapshots))
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(r.DamagedPacks) > 0 {
		fmt.Fprintf(w, "\nDamaged packs (not indexed: the blobs they hold are unavailable):\n")
		for _, p := range r.DamagedPacks {
			fmt.Fprintf(w, "  %s\n    %s\n", p.Name, p.Reason)
		}
	}
	if len(r.SkippedSnapshots) > 0 {
		fmt.Fprintf(w, "\nSkipped snapshots (not indexed: they cannot be restored whole):\n")
		for _, s := range r.SkippedSnapshots {
			fmt.Fprintf(w, "  %s\n    %s\n", s.ID, s.Reason)
		}
	}
	if r.Clean() {
		_, err := fmt.Fprintf(w, "\nNo damage found.\n")
		return err
	}
	_, err := fmt.Fprintf(w, "\nEverything else is indexed. The damaged packs stay out of the index, so garbage collection\nwill delete them as orphans: copy them elsewhere first to inspect or repair them.\n")
	return err
}
