package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/agent"
	"github.com/cofferhq/coffer/internal/protocol"
	"github.com/google/go-cmp/cmp"
)

func TestAgentCommandsFlags(t *testing.T) {
	c, _, err := parse(t, "agent", "run")
	if err != nil || !c.Agent.Run.AllowCommands {
		t.Fatalf("agent run allows commands by default: %v, %+v", err, c.Agent.Run)
	}
	for _, args := range [][]string{{"--allow-commands=false"}, {"--no-allow-commands"}} {
		if c, _, err := parse(t, append([]string{"agent", "run"}, args...)...); err != nil || c.Agent.Run.AllowCommands {
			t.Errorf("agent run %v: %v, allow %v", args, err, c.Agent.Run.AllowCommands)
		}
	}
	cleanEnv(t)
	t.Setenv("COFFER_ALLOW_COMMANDS", "false")
	var env cli
	p, err := newParser(&env)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Parse([]string{"agent", "run"}); err != nil || env.Agent.Run.AllowCommands {
		t.Errorf("COFFER_ALLOW_COMMANDS=false: %v, allow %v", err, env.Agent.Run.AllowCommands)
	}
	if out := helpOf(t, "agent", "run"); !strings.Contains(out, "--[no-]allow-commands") || !strings.Contains(out, "COFFER_ALLOW_COMMANDS") {
		t.Errorf("agent run help:\n%s", out)
	}

	c, cmd, err := parse(t, "agent", "plans", "--json", "--state-dir", "/srv/agent")
	if err != nil || cmd != "agent plans" || !c.Agent.Plans.JSON || c.Agent.Plans.dir() != "/srv/agent" {
		t.Errorf("agent plans = %q, %v, %+v", cmd, err, c.Agent.Plans)
	}
	if top := helpOf(t); !strings.Contains(top, "  agent plans ") {
		t.Errorf("coffer --help does not list agent plans:\n%s", top)
	}
}

func TestWritePlans(t *testing.T) {
	next := time.Date(2026, 3, 28, 1, 30, 0, 0, time.UTC)
	v := &agent.PlansView{FetchedAt: time.Date(2026, 3, 27, 12, 0, 0, 0, time.UTC), Plans: []protocol.AgentPlan{
		{ID: "01JMANUAL", Name: "manual", Include: []string{"/home"}, Compression: "fastest", Retention: protocol.PlanRetention{KeepWithin: "0s"}},
		{ID: "01JNIGHTLY", Name: "nightly db", Schedule: "0 30 2 * * ?", Timezone: "Europe/Berlin", NextRunAt: &next,
			Include: []string{"/srv", "/etc"}, PreCommands: []string{"pg_dump"}, PostCommands: []string{"rm", "sync"},
			Compression: "best", Retention: protocol.PlanRetention{KeepLast: 3, KeepDaily: 7, KeepWithin: "720h", HoldDays: 30}},
	}}
	var out bytes.Buffer
	if err := writePlans(&out, v, time.UTC); err != nil {
		t.Fatal(err)
	}
	want := `ID          NAME        SCHEDULE                    NEXT RUN             PATHS      COMMANDS       RETENTION                               COMPRESSION
01JMANUAL   manual      by hand                     -                    /home      -              keep all                                fastest
01JNIGHTLY  nightly db  0 30 2 * * ? Europe/Berlin  2026-03-28 01:30:00  /srv /etc  1 pre, 2 post  last 3, daily 7, within 720h, hold 30d  best
`
	if diff := cmp.Diff(want, out.String()); diff != "" {
		t.Errorf("table (-want +got):\n%s", diff)
	}

	// The last list kept, when the server cannot be reached.
	out.Reset()
	v.Cached, v.Err = true, errors.New("connection refused")
	writePlans(&out, v, time.UTC)
	if !strings.HasPrefix(out.String(), "The server is unreachable; these are the plans it sent at 2026-03-27 12:00:00.\n\nID ") {
		t.Errorf("cached table: %q", out.String())
	}

	out.Reset()
	writePlans(&out, &agent.PlansView{}, time.UTC)
	if !strings.Contains(out.String(), "no enabled backup plans") {
		t.Errorf("no plans: %q", out.String())
	}
}
