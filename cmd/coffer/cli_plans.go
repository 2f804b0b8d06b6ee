package main

import (
	"context"
	"fmt"
	"io"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/cofferhq/coffer/internal/agent"
	"github.com/cofferhq/coffer/internal/protocol"
)

type agentPlansCmd struct {
	stateDirFlag
	JSON bool `help:"Print JSON lines instead: one object per plan, with every field."`
}

// Run lists this client's enabled plans as the server has them, or, when
// the server cannot be reached, as it last sent them (saying so on
// standard error).
func (c *agentPlansCmd) Run(g *globals) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	a, err := c.openAgent(g.logger, 0)
	if err != nil {
		return err
	}
	v, err := a.Plans(ctx)
	if err != nil {
		return describeError(err)
	}
	if v.Cached {
		g.logger.Warn("the server could not be asked: showing the plans it sent earlier, which may be out of date",
			"fetched_at", v.FetchedAt.Format(time.RFC3339), "err", describeError(v.Err))
	}
	if c.JSON {
		return writeJSONLines(g.stdout, v.Plans)
	}
	return writePlans(g.stdout, v, time.Local)
}

// writePlans prints plans as a table, times in loc.
func writePlans(w io.Writer, v *agent.PlansView, loc *time.Location) error {
	if v.Cached {
		fmt.Fprintf(w, "The server is unreachable; these are the plans it sent at %s.\n\n", v.FetchedAt.In(loc).Format("2006-01-02 15:04:05"))
	}
	if len(v.Plans) == 0 {
		_, err := fmt.Fprintln(w, "This client has no enabled backup plans: an operator creates them on the server (POST /api/v1/plans).")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tSCHEDULE\tNEXT RUN\tPATHS\tCOMMANDS\tRETENTION\tCOMPRESSION")
	for _, p := range v.Plans {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.ID, quoteName(p.Name), planSchedule(p), nextRun(p, loc),
			joinPaths(p.Include), planCommands(p), retentionSummary(p.Retention), p.Compression)
	}
	return tw.Flush()
}

// planSchedule shows a plan's schedule with its time zone.
func planSchedule(p protocol.AgentPlan) string {
	if p.Schedule == "" {
		return "by hand"
	}
	tz := p.Timezone
	if tz == "" {
		tz = "UTC"
	}
	return quoteName(p.Schedule) + " " + tz
}

func nextRun(p protocol.AgentPlan, loc *time.Location) string {
	if p.NextRunAt == nil {
		return "-"
	}
	return p.NextRunAt.In(loc).Format("2006-01-02 15:04:05")
}

func planCommands(p protocol.AgentPlan) string {
	if len(p.PreCommands) == 0 && len(p.PostCommands) == 0 {
		return "-"
	}
	return fmt.Sprintf("%d pre, %d post", len(p.PreCommands), len(p.PostCommands))
}

// retentionSummary names the rules of a retention policy that apply,
// e.g. "last 7, daily 14, within 720h"; "keep all" when none does.
func retentionSummary(r protocol.PlanRetention) string {
	var parts []string
	for _, rule := range []struct {
		name string
		n    int
	}{{"last", r.KeepLast}, {"hourly", r.KeepHourly}, {"daily", r.KeepDaily}, {"weekly", r.KeepWeekly},
		{"monthly", r.KeepMonthly}, {"yearly", r.KeepYearly}} {
		if rule.n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", rule.name, rule.n))
		}
	}
	if r.KeepWithin != "" && r.KeepWithin != "0s" {
		parts = append(parts, "within "+r.KeepWithin)
	}
	if r.HoldDays > 0 {
		parts = append(parts, fmt.Sprintf("hold %dd", r.HoldDays))
	}
	if len(parts) == 0 {
		return "keep all"
	}
	return strings.Join(parts, ", ")
}
