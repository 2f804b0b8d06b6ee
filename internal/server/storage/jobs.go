package storage

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/cofferhq/coffer/internal/metadb"
)

// maxNamed bounds the packs and snapshots a verify summary names.
const maxNamed = 100

// Verify starts a verify of repository id as a background job and returns
// it, running: the structure check, or with data every byte (of a
// samplePercent share of the packs, 0 = all). A verify already running on
// the repository is a conflict "repository_job_running". The result is
// kept on the repository (last_verify) and published as an event.
func (s *Service) Verify(ctx context.Context, p *coffer.Principal, id string, data bool, samplePercent float64) (*coffer.RepositoryJob, error) {
	switch {
	case samplePercent < 0 || samplePercent > 100:
		return nil, invalid("sample_percent", "invalid_sample", "sample_percent must be between 0 and 100 (got %g)", samplePercent)
	case samplePercent > 0 && !data:
		return nil, invalid("sample_percent", "invalid_sample", "sample_percent goes with mode data: the structure check reads no pack data")
	}
	return s.start(ctx, p, &coffer.RepositoryJob{RepositoryID: id, Kind: coffer.JobVerify, VerifyData: data, SamplePercent: samplePercent})
}

// GC starts a garbage collection of repository id as a background job and
// returns it, running; a dry run only reports what it would reclaim. One
// already running on the repository (here or on another replica) is a
// conflict "repository_job_running". The result is kept on the repository
// (last_gc) and published as an event.
func (s *Service) GC(ctx context.Context, p *coffer.Principal, id string, dryRun bool) (*coffer.RepositoryJob, error) {
	return s.start(ctx, p, &coffer.RepositoryJob{RepositoryID: id, Kind: coffer.JobGC, DryRun: dryRun})
}

func (s *Service) start(ctx context.Context, p *coffer.Principal, j *coffer.RepositoryJob) (*coffer.RepositoryJob, error) {
	r, err := s.store.GetRepository(ctx, j.RepositoryID)
	if err != nil {
		return nil, err
	}
	// Opening first makes a repository that cannot be reached an error of
	// this request rather than a failed job.
	repo, err := s.set.Get(ctx, r.ID)
	if err != nil {
		return nil, err
	}
	if p != nil {
		j.CreatedBy = p.UserID
	}
	if err := s.store.CreateRepositoryJob(ctx, j); err != nil {
		return nil, err
	}
	s.publish(ctx, p, repoRef(r.ID), coffer.LevelInfo, startedCode(j), jobTitle(j)+" started",
		fmt.Sprintf("%s started %s of repository “%s” (job %s).", actorName(p), describeJob(j), r.Name, j.ID))
	s.jobMu.Lock()
	defer s.jobMu.Unlock()
	if s.closed {
		s.finish(ctx, r, j, &coffer.MaintenanceResult{JobID: j.ID, StartedAt: s.now(), Error: "the server stopped before it ran",
			Summary: "The job did not run: the server stopped."}, p, false)
		return nil, coffer.Errorf(coffer.KindUnavailable, "server_stopping", "the server is stopping: start the job again on a running server")
	}
	s.jobs.Add(1)
	go func() {
		defer s.jobs.Done()
		s.run(s.runCtx, r, repo, j, p)
	}()
	return j, nil
}

func startedCode(j *coffer.RepositoryJob) string {
	if j.Kind == coffer.JobGC {
		return EventGCStarted
	}
	return EventVerifyStarted
}

func jobTitle(j *coffer.RepositoryJob) string {
	if j.Kind == coffer.JobGC {
		return "Garbage collection"
	}
	return "Verify"
}

// describeJob names what a job does in event messages.
func describeJob(j *coffer.RepositoryJob) string {
	switch {
	case j.Kind == coffer.JobGC && j.DryRun:
		return "a garbage collection dry run"
	case j.Kind == coffer.JobGC:
		return "a garbage collection"
	case j.VerifyData && j.SamplePercent > 0 && j.SamplePercent < 100:
		return fmt.Sprintf("a data verify of %g%% of the packs", j.SamplePercent)
	case j.VerifyData:
		return "a data verify"
	}
	return "a structure verify"
}

// run does job j on repo, keeping its heartbeat, and records and
// publishes its result.
func (s *Service) run(ctx context.Context, r *coffer.Repository, repo *repository.Repository, j *coffer.RepositoryJob, p *coffer.Principal) {
	beat, stopBeat := context.WithCancel(ctx)
	beating := make(chan struct{})
	go func() {
		defer close(beating)
		s.heartbeat(beat, j.ID)
	}()
	res := &coffer.MaintenanceResult{JobID: j.ID, StartedAt: s.now()}
	busy := false
	if j.Kind == coffer.JobGC {
		busy = s.collect(ctx, repo, j, res)
	} else {
		s.verify(ctx, repo, j, res)
	}
	stopBeat()
	<-beating
	s.finish(ctx, r, j, res, p, busy)
}

// heartbeat records every JobHeartbeat that job id's replica is alive,
// until ctx ends.
func (s *Service) heartbeat(ctx context.Context, id string) {
	t := time.NewTicker(s.opts.JobHeartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := s.store.HeartbeatRepositoryJob(ctx, id); err != nil && ctx.Err() == nil {
			s.log.Warn("record the heartbeat of a repository job", "job_id", id, "err", err)
		}
	}
}

func (s *Service) verify(ctx context.Context, repo *repository.Repository, j *coffer.RepositoryJob, res *coffer.MaintenanceResult) {
	vs := &coffer.VerifySummary{Mode: repository.VerifyStructure, SamplePercent: j.SamplePercent}
	if j.VerifyData {
		vs.Mode = repository.VerifyData
	}
	res.Verify = vs
	rep, err := s.opts.Verify(ctx, repo, repository.VerifyOptions{Data: j.VerifyData, SamplePercent: j.SamplePercent})
	if err != nil {
		res.Error = jobError(ctx, err)
		res.Summary = fmt.Sprintf("The %s verify did not finish: %s", vs.Mode, res.Error)
		return
	}
	vs.Snapshots, vs.Packs, vs.PacksRead, vs.Blobs, vs.CheckedBytes = rep.Snapshots, rep.Packs, rep.PacksRead, rep.Blobs, rep.CheckedBytes
	vs.Problems = len(rep.Problems)
	packs, snaps := map[string]bool{}, map[string]bool{}
	for _, pr := range rep.Problems {
		if vs.ProblemKinds == nil {
			vs.ProblemKinds = map[string]int{}
		}
		vs.ProblemKinds[string(pr.Kind)]++
		if pr.Pack != "" {
			packs[pr.Pack] = true
		}
		if pr.Snapshot != "" {
			snaps[pr.Snapshot] = true
		}
		for _, a := range pr.Affected {
			snaps[a.Snapshot] = true
		}
	}
	vs.DamagedPacks = firstSorted(packs)
	vs.AffectedSnapshots = firstSorted(snaps)
	res.OK = rep.OK
	res.Summary = strings.TrimSpace(limitText(rep.Summary(), 4000))
}

func firstSorted(set map[string]bool) []string {
	names := slices.Sorted(maps.Keys(set))
	return names[:min(len(names), maxNamed)]
}

func limitText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// jobError says why a job stopped, for its result.
func jobError(ctx context.Context, err error) string {
	if ctx.Err() != nil {
		return "the server stopped while it ran"
	}
	return limitText(err.Error(), 2000)
}

// collect garbage-collects repo for job j into res; busy reports that
// another collection held the repository.
func (s *Service) collect(ctx context.Context, repo *repository.Repository, j *coffer.RepositoryJob, res *coffer.MaintenanceResult) (busy bool) {
	// The owner is the job, so that collectors on two replicas never share
	// the engine's lease; the engine keeps its own clock, which it compares
	// with the objects' times in storage.
	rep, err := s.opts.GC(ctx, repo, repository.GCOptions{DryRun: j.DryRun, Owner: "job:" + j.ID, Lease: s.opts.GCLease})
	gs := &coffer.GCSummary{DryRun: j.DryRun}
	res.GC = gs
	if rep != nil {
		gs.Snapshots, gs.LiveBlobs, gs.DeadBlobs, gs.DeletedBlobs = rep.Snapshots, rep.LiveBlobs, rep.DeadBlobs, rep.DeletedBlobs
		gs.DeletedPacks, gs.RepackedPacks, gs.OrphanPacks = rep.DeletedPacks, rep.RepackedPacks, rep.OrphanPacks
		gs.WrittenBytes, gs.ReclaimedBytes = rep.WrittenBytes, rep.ReclaimedBytes
	}
	if err != nil {
		res.Error = jobError(ctx, err)
		res.Summary = "The garbage collection did not finish: " + res.Error
		if errors.Is(err, repository.ErrGCRunning) {
			res.Summary = "Another garbage collection holds the repository (on another server, or one that stopped without releasing it; its lease runs out): " + res.Error
			return true
		}
		return false
	}
	res.OK = true
	verb := "deleted"
	if j.DryRun {
		verb = "would delete"
	}
	res.Summary = fmt.Sprintf("%d snapshots keep %d blobs live; %d blobs are garbage. It %s %d blobs and %d packs, repacked %d packs and removed %d orphan packs, reclaiming %s.",
		gs.Snapshots, gs.LiveBlobs, gs.DeadBlobs, verb, gs.DeletedBlobs, gs.DeletedPacks, gs.RepackedPacks, gs.OrphanPacks,
		formatBytes(gs.ReclaimedBytes))
	return false
}

// finish records job j's result and publishes it. After a garbage
// collection that deleted something, the quota and usage figures are
// refreshed first, so that whoever sees the job end reads the new ones.
func (s *Service) finish(ctx context.Context, r *coffer.Repository, j *coffer.RepositoryJob, res *coffer.MaintenanceResult, p *coffer.Principal, busy bool) {
	res.FinishedAt = s.now()
	state := coffer.JobSucceeded
	if res.Error != "" {
		state = coffer.JobFailed
	}
	if j.Kind == coffer.JobGC && !j.DryRun && res.OK {
		s.refreshUsage(context.WithoutCancel(ctx), r.ID)
	}
	if _, err := s.store.FinishRepositoryJob(context.WithoutCancel(ctx), j.ID, state, res); err != nil {
		s.log.Warn("record the result of a repository job", "job_id", j.ID, "repository_id", r.ID, "err", err)
		return
	}
	level, code, title := jobOutcome(j, res, busy)
	s.publish(ctx, p, repoRef(r.ID), level, code, title,
		fmt.Sprintf("%s of repository “%s” (job %s): %s", capitalize(describeJob(j)), r.Name, j.ID, res.Summary))
}

// refreshUsage drops repository id's cached quota usage and reads it
// afresh, and replaces the hour's usage sample: a garbage collection
// changed both.
func (s *Service) refreshUsage(ctx context.Context, id string) {
	s.quotaMu.Lock()
	delete(s.quota, id)
	s.quotaMu.Unlock()
	if _, err := s.quotaOf(ctx, id); err != nil {
		s.log.Warn("refresh the quota of a repository after GC", "repository_id", id, "err", err)
	}
	if err := s.sampleUsage(ctx, id, true); err != nil {
		s.log.Warn("record the usage of a repository after GC", "repository_id", id, "err", err)
	}
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// jobOutcome is the level, code and title of a finished job's event.
func jobOutcome(j *coffer.RepositoryJob, res *coffer.MaintenanceResult, busy bool) (coffer.Level, string, string) {
	switch {
	case j.Kind == coffer.JobGC && res.OK:
		return coffer.LevelSuccess, EventGCOK, "Garbage collection succeeded"
	case j.Kind == coffer.JobGC && busy:
		return coffer.LevelWarning, EventGCFailed, "Garbage collection skipped"
	case j.Kind == coffer.JobGC:
		return coffer.LevelError, EventGCFailed, "Garbage collection failed"
	case res.OK:
		return coffer.LevelSuccess, EventVerifyOK, "Repository verified"
	case res.Error == "":
		return coffer.LevelError, EventVerifyDamaged, "Repository damaged"
	}
	return coffer.LevelError, EventVerifyFailed, "Verify failed"
}

// Maintain fails the repository jobs whose replica stopped recording its
// heartbeat for JobStaleAfter — it crashed or lost the database — so that
// none stays running forever and the next one can start. The server calls
// it periodically; several replicas may. It also drops the open
// repositories another replica changed or deleted (Refresh) and records
// the hour's usage samples (SampleUsage).
func (s *Service) Maintain(ctx context.Context) error {
	return errors.Join(s.failStaleJobs(ctx), s.Refresh(ctx), s.SampleUsage(ctx))
}

func (s *Service) failStaleJobs(ctx context.Context) error {
	reason := fmt.Sprintf("the server running it sent no heartbeat for %v: it stopped, crashed or lost the database", s.opts.JobStaleAfter)
	stale, err := s.store.FailStaleRepositoryJobs(ctx, s.now().Add(-s.opts.JobStaleAfter), reason)
	if err != nil {
		return fmt.Errorf("fail stale repository jobs: %w", err)
	}
	for i := range stale {
		j := &stale[i]
		level, code, title := jobOutcome(j, &coffer.MaintenanceResult{Error: reason}, false)
		s.log.Warn("repository job failed: no heartbeat", "job_id", j.ID, "repository_id", j.RepositoryID)
		s.publish(ctx, nil, repoRef(j.RepositoryID), level, code, title,
			fmt.Sprintf("%s of repository %s (job %s) failed: %s.", capitalize(describeJob(j)), j.RepositoryID, j.ID, reason))
	}
	return nil
}

// CollectDue garbage-collects, one after the other, every repository whose
// last collection started GCInterval ago or more (or, never collected, was
// created that long ago). Replicas that call it together share the work:
// a repository being collected elsewhere is skipped. Failures are
// recorded on the repository and published, not returned.
func (s *Service) CollectDue(ctx context.Context) {
	all, _, err := s.store.ListRepositories(ctx, metadb.RepositoryFilter{})
	if err != nil {
		s.log.Warn("daily garbage collection: list repositories", "err", err)
		return
	}
	for i := range all {
		if ctx.Err() != nil {
			return
		}
		r := &all[i]
		since := r.CreatedAt
		if r.LastGC != nil {
			since = r.LastGC.StartedAt
		}
		if s.now().Sub(since) < s.opts.GCInterval {
			continue
		}
		j := &coffer.RepositoryJob{RepositoryID: r.ID, Kind: coffer.JobGC}
		if err := s.store.CreateRepositoryJob(ctx, j); err != nil {
			if !coffer.IsKind(err, coffer.KindConflict) && !coffer.IsKind(err, coffer.KindNotFound) {
				s.log.Warn("daily garbage collection: start a job", "repository_id", r.ID, "err", err)
			}
			continue
		}
		repo, err := s.set.Get(ctx, r.ID)
		if err != nil {
			res := &coffer.MaintenanceResult{JobID: j.ID, StartedAt: s.now(), GC: &coffer.GCSummary{},
				Error: jobError(ctx, err)}
			res.Summary = "The repository could not be opened: " + res.Error
			s.finish(ctx, r, j, res, nil, false)
			continue
		}
		s.run(ctx, r, repo, j, nil)
	}
}
