package httpapi

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/cofferhq/coffer"
)

// jobView is a backup or restore as its live progress shows it. Pages
// render it with {{template "job_live" .}}: a wrapper that the UI's event
// stream refills (sse-swap "job-<kind>-<id>") whenever an event about the
// job arrives, so running jobs show their progress without a reload.
type jobView struct {
	Kind       string // "backup" or "restore"
	ID         string
	State      coffer.JobState
	Files      uint64
	TotalFiles uint64 // 0 when not known (yet)
	Bytes      uint64
	TotalBytes uint64
	Added      uint64 // bytes a backup added to the repository
	Errors     uint64
	Started    *time.Time
	Finished   *time.Time
	Error      string
	// ReloadWhenDone makes the page reload once the job, active when the
	// page was rendered, reaches its final state (coffer.js), so that a
	// detail page then shows everything the job recorded: its counters,
	// errors and the actions of a finished job.
	ReloadWhenDone bool
}

// Active reports whether the job is still queued or running.
func (j *jobView) Active() bool { return j.State == coffer.JobQueued || j.State == coffer.JobRunning }

// Elapsed is how long the job has run (so far).
func (j *jobView) Elapsed() time.Duration { return elapsed(j.Started, j.Finished) }

// SSEName is the name of the stream's frames about this job.
func (j *jobView) SSEName() string { return "job-" + j.Kind + "-" + j.ID }

func backupJob(b *coffer.Backup) *jobView {
	st := b.Stats
	return &jobView{Kind: "backup", ID: b.ID, State: b.State, Files: st.Files, TotalFiles: st.TotalFiles,
		Bytes: st.LogicalBytes, TotalBytes: st.TotalBytes, Added: st.AddedBytes, Errors: st.ErrorCount,
		Started: b.StartedAt, Finished: b.FinishedAt, Error: b.Error}
}

func restoreJob(r *coffer.Restore) *jobView {
	st := r.Stats
	return &jobView{Kind: "restore", ID: r.ID, State: r.State, Files: st.Files, TotalFiles: st.TotalFiles,
		Bytes: st.Bytes, TotalBytes: st.TotalBytes, Errors: st.ErrorCount,
		Started: r.StartedAt, Finished: r.FinishedAt, Error: r.Error}
}

// jobFrame renders the "job-<kind>-<id>" frame that follows an event about
// a backup or restore: the job's current progress. It returns nil for
// other events and for jobs that no longer exist.
func (s *Server) jobFrame(ctx context.Context, e *coffer.Event) ([]byte, error) {
	var job *jobView
	switch e.Resource.Type {
	case "backup":
		if s.opts.Backups == nil {
			return nil, nil
		}
		b, err := s.opts.Backups.Get(ctx, e.Resource.ID)
		if coffer.IsKind(err, coffer.KindNotFound) {
			return nil, nil
		} else if err != nil {
			return nil, err
		}
		job = backupJob(b)
	case "restore":
		if s.opts.Restores == nil {
			return nil, nil
		}
		r, err := s.opts.Restores.Get(ctx, e.Resource.ID)
		if coffer.IsKind(err, coffer.KindNotFound) {
			return nil, nil
		} else if err != nil {
			return nil, err
		}
		job = restoreJob(r)
	default:
		return nil, nil
	}
	var html bytes.Buffer
	if err := s.ui.fragments.ExecuteTemplate(&html, "job_progress", job); err != nil {
		return nil, fmt.Errorf("render progress of %s %s: %w", job.Kind, job.ID, err)
	}
	return sseFrame(0, job.SSEName(), html.Bytes()), nil
}

// uiPager is a keyset-paged list's links, for {{template "pager"}}: First
// goes back to the newest page (empty on it), Next to the following page
// (empty on the last).
type uiPager struct{ First, Next string }
