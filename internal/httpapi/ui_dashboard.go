package httpapi

import (
	"context"
	"net/http"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
)

// dashboardEvents is how many recent events the dashboard shows at first.
const dashboardEvents = 20

// dashboardData is the dashboard page's data. Clients and Backups are nil
// on a server without those services.
type dashboardData struct {
	Clients     *clientCounts
	Backups     []stateCount
	Events      []Event
	LastEventID int64 // the live stream continues after this id
}

type clientCounts struct{ Online, Offline int }

type stateCount struct {
	State coffer.JobState
	Label string
	Count int
}

// dashboardStates are the backup states the dashboard counts, in order.
var dashboardStates = []stateCount{
	{State: coffer.JobRunning, Label: "Running"},
	{State: coffer.JobQueued, Label: "Queued"},
	{State: coffer.JobSucceeded, Label: "Succeeded"},
	{State: coffer.JobPartial, Label: "Partial"},
	{State: coffer.JobFailed, Label: "Failed"},
	{State: coffer.JobCanceled, Label: "Canceled"},
}

func (s *Server) uiDashboard(w http.ResponseWriter, r *http.Request, c *uiContext) {
	ctx := r.Context()
	data := &dashboardData{}
	var err error
	if data.Clients, err = s.clientCounts(ctx); err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	if data.Backups, err = s.recentBackups(ctx); err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	// The id is read before the list, so an event stored in between comes
	// over the stream rather than falling in the gap.
	if data.LastEventID, err = s.opts.EventLog.LastEventID(ctx); err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	evs, err := s.opts.EventLog.ListEvents(ctx, visibleQuery(metadb.EventQuery{BeforeID: data.LastEventID + 1,
		Limit: dashboardEvents, Descending: true}, c.p))
	if err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	for i := range evs {
		data.Events = append(data.Events, toEvent(&evs[i]))
	}
	v := c.view("Dashboard", "dashboard", data)
	v.Live = liveURL(data.LastEventID)
	s.render(w, r, http.StatusOK, "dashboard", v)
}

func (s *Server) clientCounts(ctx context.Context) (*clientCounts, error) {
	if s.opts.Agents == nil {
		return nil, nil
	}
	_, online, err := s.opts.Agents.ListClients(ctx, metadb.ClientFilter{Status: coffer.ClientOnline, Limit: 1})
	if err != nil {
		return nil, err
	}
	_, offline, err := s.opts.Agents.ListClients(ctx, metadb.ClientFilter{Status: coffer.ClientOffline, Limit: 1})
	if err != nil {
		return nil, err
	}
	return &clientCounts{Online: online, Offline: offline}, nil
}

// recentBackups counts the backups created in the last 24 hours by state.
func (s *Server) recentBackups(ctx context.Context) ([]stateCount, error) {
	if s.opts.Backups == nil {
		return nil, nil
	}
	counts, err := s.opts.Backups.CountByState(ctx, s.opts.Now().Add(-24*time.Hour))
	if err != nil {
		return nil, err
	}
	out := append([]stateCount(nil), dashboardStates...)
	for i := range out {
		out[i].Count = counts[out[i].State]
	}
	return out, nil
}
