package httpapi

import (
	"context"
	"html/template"
	"net/http"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/server/plans"
)

// dashboardEvents is how many recent events the dashboard shows at first.
const dashboardEvents = 20

// dashboardAttention is how many plans needing attention the dashboard
// lists; the rest are counted.
const dashboardAttention = 10

// dashboardData is the dashboard page's data. Clients, Backups, Attention,
// Storage and the charts are nil on a server without their services.
type dashboardData struct {
	Clients   *clientCounts
	Backups   []stateCount
	Attention *attentionList
	Storage   []repositoryUsage
	// StoredChart and DurationChart are inline SVG (internal/svgchart).
	StoredChart   template.HTML
	DurationChart template.HTML
	Events        []Event
	LastEventID   int64 // the live stream continues after this id
}

// attentionList is the plans that need attention, the most urgent first.
type attentionList struct {
	Plans     []attentionItem
	More      int // how many more there are than listed
	GraceMins int // plans.AttentionGrace, for the page's explanation
}

type attentionItem struct {
	PlanID, Name, Reason, Label, Message string
	Since                                *time.Time
}

// attentionLabels name the reasons a plan needs attention (plans.Reason…).
var attentionLabels = map[string]string{
	plans.ReasonFailed:   "Failed",
	plans.ReasonFireFail: "Could not start",
	plans.ReasonPartial:  "Partial",
	plans.ReasonOverdue:  "Overdue",
	plans.ReasonWaiting:  "Waiting",
	plans.ReasonStale:    "No recent backup",
}

// repositoryUsage is one repository's stored bytes against its quota.
type repositoryUsage struct {
	ID, Name      string
	Stored, Quota int64 // Quota 0: none
}

// Percent is how full the repository is, 0–100 (0 without a quota).
func (u repositoryUsage) Percent() int { return percent(u.Stored, u.Quota) }

// Low and High are the meter's warning thresholds: the quota levels at
// which the server warns (coffer.QuotaWarnLow and QuotaWarnHigh).
func (u repositoryUsage) Low() int64  { return u.Quota * coffer.QuotaWarnLow / 100 }
func (u repositoryUsage) High() int64 { return u.Quota * coffer.QuotaWarnHigh / 100 }

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
	if err := s.dashboardParts(ctx, c, data); err != nil {
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

// dashboardParts fills in the plans needing attention, the storage usage
// and the charts: each one bounded query or two, whatever the number of
// plans, repositories and backups.
func (s *Server) dashboardParts(ctx context.Context, c *uiContext, data *dashboardData) error {
	var err error
	if data.Attention, err = s.plansAttention(ctx); err != nil {
		return err
	}
	if s.opts.Storage != nil && c.p.Can(coffer.PermRead) { // what reading repositories takes (storage_handlers.go)
		repos, _, err := s.opts.Storage.ListRepositories(ctx, metadb.RepositoryFilter{})
		if err != nil {
			return err
		}
		if data.Storage, err = s.storageUsage(ctx, repos); err != nil {
			return err
		}
		if data.StoredChart, err = s.storedChart(ctx, repos); err != nil {
			return err
		}
	}
	data.DurationChart, err = s.durationChart(ctx)
	return err
}

// plansAttention lists the plans that need attention (plans.Service's
// Attention says which and why).
func (s *Server) plansAttention(ctx context.Context) (*attentionList, error) {
	if s.opts.Plans == nil {
		return nil, nil
	}
	all, err := s.opts.Plans.Attention(ctx)
	if err != nil {
		return nil, err
	}
	out := &attentionList{GraceMins: int(plans.AttentionGrace / time.Minute)}
	for i, a := range all {
		if i == dashboardAttention {
			out.More = len(all) - i
			break
		}
		out.Plans = append(out.Plans, attentionItem{PlanID: a.Plan.ID, Name: a.Plan.Name, Reason: a.Reason,
			Label: attentionLabels[a.Reason], Message: a.Message, Since: a.Since})
	}
	return out, nil
}

// storageUsage pairs each repository with the bytes it stores.
func (s *Server) storageUsage(ctx context.Context, repos []coffer.Repository) ([]repositoryUsage, error) {
	stored, err := s.opts.Storage.StoredBytes(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]repositoryUsage, len(repos))
	for i, r := range repos {
		out[i] = repositoryUsage{ID: r.ID, Name: r.Name, Stored: stored[r.ID], Quota: r.QuotaBytes}
	}
	return out, nil
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
