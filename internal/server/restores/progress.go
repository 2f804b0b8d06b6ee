package restores

import (
	"context"
	"fmt"

	"github.com/cofferhq/coffer"
)

// publishProgress publishes a "restore.progress" event of running restore
// r, unless one was published less than ProgressEvery ago: agents report
// every second or so, the event stream gets one event every few seconds.
// The store grants the event to one replica an interval; this replica asks
// it at most once an interval.
func (s *Service) publishProgress(ctx context.Context, p *coffer.Principal, r *coffer.Restore) {
	if !s.progress.Due(r.ID, s.now()) {
		return
	}
	ok, err := s.store.ClaimRestoreProgressEvent(ctx, r.ID, s.progress.Every())
	if err != nil {
		s.log.Warn("claim a restore progress event", "restore_id", r.ID, "err", err)
		return
	}
	if !ok {
		return
	}
	st := r.Stats
	msg := fmt.Sprintf("Restore %s of backup %s to %s on client %s is running: %d files and %d bytes written",
		r.ID, r.BackupID, r.Destination, r.TargetClientID, st.Files, st.Bytes)
	if st.TotalFiles > 0 {
		msg += fmt.Sprintf(" of %d files and %d bytes", st.TotalFiles, st.TotalBytes)
	}
	s.publish(ctx, p, r, coffer.LevelInfo, "restore.progress", "Restore progress", msg+".")
}
