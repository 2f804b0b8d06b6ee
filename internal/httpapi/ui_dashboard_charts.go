package httpapi

import (
	"cmp"
	"context"
	"html/template"
	"slices"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/svgchart"
)

// The dashboard's charts: stored bytes over time, from the repositories'
// hourly usage samples, and the durations of the latest backups.
const (
	storedChartSpan = 30 * 24 * time.Hour // how far back the stored-bytes chart goes
	storedChartStep = 6 * time.Hour       // one point per repository and step
	durationBackups = 50                  // how many backups the durations chart shows
)

// storedChart draws each repository's stored bytes over the last 30 days,
// one line per repository, from one query of the usage history.
func (s *Server) storedChart(ctx context.Context, repos []coffer.Repository) (template.HTML, error) {
	end := s.opts.Now()
	start := end.Add(-storedChartSpan)
	samples, err := s.opts.Storage.UsageHistory(ctx, start, storedChartStep)
	if err != nil {
		return "", err
	}
	names := make(map[string]string, len(repos))
	for _, r := range repos {
		names[r.ID] = r.Name
	}
	var series []svgchart.Series
	for i, smp := range samples {
		if i == 0 || samples[i-1].RepositoryID != smp.RepositoryID {
			series = append(series, svgchart.Series{Name: cmp.Or(names[smp.RepositoryID], smp.RepositoryID)})
		}
		cur := &series[len(series)-1]
		cur.Points = append(cur.Points, svgchart.Point{Time: smp.TakenAt, Value: float64(smp.StoredBytes)})
	}
	slices.SortStableFunc(series, func(a, b svgchart.Series) int { return cmp.Compare(a.Name, b.Name) })
	return template.HTML(svgchart.Line(series, svgchart.Options{ID: "stored", Title: "Stored bytes over the last 30 days",
		Unit: svgchart.Bytes, Start: start, End: end, MaxGap: 2*storedChartStep + time.Hour,
		Empty: "No data yet: the server records each repository's usage once an hour."})), nil
}

// durationChart draws how long each of the latest finished backups ran,
// oldest first, colored by state, from one query.
func (s *Server) durationChart(ctx context.Context) (template.HTML, error) {
	if s.opts.Backups == nil {
		return "", nil
	}
	bs, err := s.opts.Backups.List(ctx, metadb.BackupFilter{Limit: durationBackups, Finished: true})
	if err != nil {
		return "", err
	}
	var bars []svgchart.Bar
	for i := len(bs) - 1; i >= 0; i-- {
		b := &bs[i]
		if b.StartedAt == nil || b.FinishedAt == nil {
			continue // canceled before it started: it never ran
		}
		bars = append(bars, svgchart.Bar{Time: *b.StartedAt, Value: b.FinishedAt.Sub(*b.StartedAt).Seconds(),
			State: string(b.State), Label: backupLabel(b)})
	}
	return template.HTML(svgchart.Bars(bars, svgchart.Options{ID: "durations",
		Title: "Durations of the latest backups", Unit: svgchart.Seconds,
		Empty: "No data yet: no backup has finished."})), nil
}

// backupLabel names a backup in a chart's tooltip: its plan's name (or
// "Ad-hoc backup") on its machine.
func backupLabel(b *coffer.Backup) string {
	name := b.Meta.Name
	switch {
	case name == "" && b.PlanID == "":
		name = "Ad-hoc backup"
	case name == "":
		name = "Backup of plan " + b.PlanID
	}
	if b.HostName != "" {
		name += " on " + b.HostName
	}
	return name
}
