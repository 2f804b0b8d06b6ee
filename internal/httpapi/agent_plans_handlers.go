package httpapi

import (
	"cmp"
	"context"
	"net/http"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/protocol"
	"github.com/cofferhq/coffer/internal/server/plans"
	"github.com/danielgtaylor/huma/v2"
)

// registerAgentPlans registers GET /api/v1/agent/plans: an agent's view of
// its own client's enabled plans, for display on the machine. It needs
// the plans service and agent credentials (the agents service).
func (s *Server) registerAgentPlans() {
	if s.opts.Plans == nil || s.opts.Agents == nil {
		return
	}
	svc := s.opts.Plans
	type agentPlansIn struct{}
	handle(s, Agent, huma.Operation{
		OperationID: "agent-list-plans", Method: http.MethodGet, Path: "/api/v1/agent/plans", Tags: []string{"agent"},
		Summary: "List this client's plans",
		Description: "The enabled plans of the calling agent's client, ordered by name, with their schedule and the next " +
			"time it fires, paths, commands and retention, so that the machine can show them (`coffer agent plans`). " +
			"The server fires plans on their schedule; the agent does not.",
	}, func(ctx context.Context, _ *agentPlansIn) (*struct {
		Body Collection[protocol.AgentPlan]
	}, error) {
		enabled := true
		pls, _, err := svc.List(ctx, metadb.PlanFilter{ClientID: principalFrom(ctx).ClientID, Enabled: &enabled})
		if err != nil {
			return nil, err
		}
		now := s.opts.Now()
		items := make([]protocol.AgentPlan, 0, len(pls))
		for i := range pls {
			next, err := s.nextRun(ctx, &pls[i], now)
			if err != nil {
				return nil, err
			}
			items = append(items, toAgentPlan(&pls[i], next))
		}
		return &struct {
			Body Collection[protocol.AgentPlan]
		}{Collection[protocol.AgentPlan]{Items: items, Total: len(items)}}, nil
	})
}

// nextRun returns when plan p's schedule fires next after now, in UTC; nil
// when it never does, or when p was deleted or cannot be parsed by this
// server (a display detail not worth failing the list for).
func (s *Server) nextRun(ctx context.Context, p *coffer.Plan, now time.Time) (*time.Time, error) {
	if p.Schedule == "" {
		return nil, nil
	}
	times, _, err := s.opts.Plans.Preview(ctx, p.ID, 1, now)
	if coffer.IsKind(err, coffer.KindNotFound) || coffer.IsKind(err, coffer.KindInvalid) {
		s.log.Warn("agent plans: no next fire time", "plan_id", p.ID, "err", err, "request_id", RequestID(ctx))
		return nil, nil
	}
	if err != nil || len(times) == 0 {
		return nil, err
	}
	t := times[0].UTC()
	return &t, nil
}

func toAgentPlan(p *coffer.Plan, next *time.Time) protocol.AgentPlan {
	r := p.Retention
	return protocol.AgentPlan{ID: p.ID, Name: p.Name, Group: p.Group, RepositoryID: p.RepositoryID,
		Schedule: p.Schedule, Timezone: p.Timezone, StartAt: p.StartAt, EndAt: p.EndAt, NextRunAt: next,
		Include: orEmpty(p.Include), Exclude: orEmpty(p.Exclude),
		PreCommands: orEmpty(p.PreCommands), PostCommands: orEmpty(p.PostCommands),
		Retention: protocol.PlanRetention{KeepLast: r.KeepLast, KeepHourly: r.KeepHourly, KeepDaily: r.KeepDaily,
			KeepWeekly: r.KeepWeekly, KeepMonthly: r.KeepMonthly, KeepYearly: r.KeepYearly,
			KeepWithin: formatDuration(r.KeepWithin), HoldDays: r.HoldDays},
		Compression: cmp.Or(p.Compression, plans.DefaultCompression), FullEvery: p.FullEvery, OneFileSystem: p.OneFileSystem, UpdatedAt: p.UpdatedAt}
}
