package backups

import (
	"context"
	"fmt"

	"github.com/cofferhq/coffer"
)

// EventProgress is the code of a running backup's progress events.
const EventProgress = "backup.progress"

// publishProgress publishes a progress event of running backup b, unless
// one was published less than ProgressEvery ago: agents report every
// second or so, the event stream gets one event every few seconds. The
// store grants the event to one replica an interval; this replica asks it
// at most once an interval.
func (s *Service) publishProgress(ctx context.Context, clientID string, b *coffer.Backup) {
	if !s.progress.Due(b.ID, s.now()) {
		return
	}
	ok, err := s.store.ClaimBackupProgressEvent(ctx, b.ID, s.progress.Every())
	if err != nil {
		s.log.Warn("claim a backup progress event", "backup_id", b.ID, "err", err)
		return
	}
	if !ok {
		return
	}
	st := b.Stats
	msg := fmt.Sprintf("The %s is running: %d files and %d bytes done", what(b), st.Files, st.LogicalBytes)
	if st.TotalFiles > 0 {
		msg += fmt.Sprintf(" of %d files and %d bytes found so far", st.TotalFiles, st.TotalBytes)
	}
	msg += fmt.Sprintf(", %d bytes added to the repository.", st.AddedBytes)
	s.publish(ctx, agentActor(clientID), b, EventProgress, coffer.LevelInfo, "Backup progress", msg)
}
