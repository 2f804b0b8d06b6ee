package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/cofferhq/coffer/internal/apiclient"
	"github.com/cofferhq/coffer/internal/protocol"
)

// localProgressEvery is how often a job's onProgress callback runs.
const localProgressEvery = 200 * time.Millisecond

// monitor reports a running job until the returned stop is called: to the
// caller's local func every localProgressEvery, and to the server (report)
// every a.progressEvery. When the server answers that the job was
// canceled, or that it is no longer running it, monitor cancels the job.
// stop waits for the reports to end and calls local once more. log is the
// job's logger (with its backup_id or restore_id).
func (a *Agent) monitor(ctx context.Context, cancel context.CancelCauseFunc, log *slog.Logger,
	report func(context.Context) (*protocol.ProgressResponse, error), local func()) (stop func()) {
	mctx, mcancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	if local != nil {
		wg.Go(func() {
			t := time.NewTicker(localProgressEvery)
			defer t.Stop()
			for {
				select {
				case <-mctx.Done():
					return
				case <-t.C:
					local()
				}
			}
		})
	}
	wg.Go(func() {
		t := time.NewTicker(a.progressEvery)
		defer t.Stop()
		failures := 0
		for {
			select {
			case <-mctx.Done():
				return
			case <-t.C:
			}
			resp, err := report(mctx)
			switch {
			case mctx.Err() != nil:
				return
			case apiclient.IsStatus(err, http.StatusNotFound), apiclient.IsStatus(err, http.StatusConflict):
				log.Warn("the server no longer runs this job: stopping it", "err", err)
				cancel(fmt.Errorf("%w (%v)", errCanceledOnServer, err))
				return
			case err != nil:
				if failures++; failures == 1 || failures%30 == 0 {
					log.Warn("could not report progress to the server; the job goes on", "failures", failures, "err", err)
				}
			case resp.Cancel:
				log.Info("the job was canceled on the server: stopping it")
				cancel(errCanceledOnServer)
				return
			default:
				failures = 0
			}
		}
	})
	return func() {
		mcancel()
		wg.Wait()
		if local != nil {
			local()
		}
	}
}
