package agents_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
	"github.com/cofferhq/coffer/internal/protocol"
	"github.com/cofferhq/coffer/internal/server/agents"
)

func ptr[T any](v T) *T { return &v }

func TestUpdateClient(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		e := newEnv(t, db, agents.Options{})
		id := e.enroll(t, "web").Client.ID
		bob := e.user(t, "bob", coffer.RoleOperator)
		e.ev.codes()

		// Renaming: the owner and admins; not another operator nor a viewer.
		c, err := e.svc.UpdateClient(ctx, e.owner, id, agents.ClientPatch{Name: ptr("  web-front ")})
		if err != nil || c.Name != "web-front" || c.OwnerID != e.owner.UserID {
			t.Fatalf("rename by owner = %+v, %v", c, err)
		}
		_, err = e.svc.UpdateClient(ctx, bob, id, agents.ClientPatch{Name: ptr("mine")})
		wantCode(t, err, "client_not_owned")
		_, err = e.svc.UpdateClient(ctx, e.viewer, id, agents.ClientPatch{Name: ptr("mine")})
		wantCode(t, err, "operate_required")
		for _, bad := range []string{"", "   ", "tab\there", strings.Repeat("n", 101)} {
			_, err = e.svc.UpdateClient(ctx, e.admin, id, agents.ClientPatch{Name: ptr(bad)})
			wantCode(t, err, "invalid_name")
		}
		got := e.ev.ev
		if codes := e.ev.codes(); !slices.Equal(codes, []string{"client.renamed"}) {
			t.Fatalf("events = %v", codes)
		}
		if got[0].ActorID != e.owner.UserID || got[0].Actor != "alice" || !strings.Contains(got[0].Message, "“web” to “web-front”") ||
			got[0].Resource != (coffer.ResourceRef{Type: "client", ID: id}) {
			t.Errorf("rename event = %+v", got[0])
		}

		// Assigning the owner: admins only, an existing user, "" clears.
		_, err = e.svc.UpdateClient(ctx, e.owner, id, agents.ClientPatch{OwnerID: ptr(bob.UserID)})
		wantCode(t, err, "owner_change_needs_admin")
		_, err = e.svc.UpdateClient(ctx, e.admin, id, agents.ClientPatch{OwnerID: ptr("01NOSUCHUSER")})
		wantCode(t, err, "user_not_found")
		c, err = e.svc.UpdateClient(ctx, e.admin, id, agents.ClientPatch{OwnerID: &bob.UserID})
		if err != nil || c.OwnerID != bob.UserID || c.Name != "web-front" {
			t.Fatalf("assign owner = %+v, %v", c, err)
		}
		if name := e.svc.OwnerName(ctx, c); name != "bob" {
			t.Errorf("OwnerName = %q", name)
		}
		// Now bob may rename it, and alice no longer.
		if _, err := e.svc.UpdateClient(ctx, bob, id, agents.ClientPatch{Name: ptr("bobs")}); err != nil {
			t.Fatal(err)
		}
		_, err = e.svc.UpdateClient(ctx, e.owner, id, agents.ClientPatch{Name: ptr("alices")})
		wantCode(t, err, "client_not_owned")
		c, err = e.svc.UpdateClient(ctx, e.admin, id, agents.ClientPatch{OwnerID: ptr("")})
		if err != nil || c.OwnerID != "" || e.svc.OwnerName(ctx, c) != "" {
			t.Fatalf("clear owner = %+v, %v", c, err)
		}
		got = e.ev.ev
		if codes := e.ev.codes(); !slices.Equal(codes, []string{"client.owner_changed", "client.renamed", "client.owner_changed"}) {
			t.Fatalf("events = %v", codes)
		}
		if !strings.Contains(got[0].Message, "root made bob the owner of the client “web-front” (was alice)") ||
			!strings.Contains(got[2].Message, "cleared the owner") || got[2].Actor != "root" {
			t.Errorf("owner events = %q / %q", got[0].Message, got[2].Message)
		}

		// An empty patch changes nothing; an unknown client is not found.
		if c, err := e.svc.UpdateClient(ctx, e.viewer, id, agents.ClientPatch{}); err != nil || c.Name != "bobs" {
			t.Errorf("empty patch = %+v, %v", c, err)
		}
		_, err = e.svc.UpdateClient(ctx, e.admin, "nope", agents.ClientPatch{Name: ptr("x")})
		wantCode(t, err, "client_not_found")
		if codes := e.ev.codes(); len(codes) != 0 {
			t.Errorf("events of refused changes: %v", codes)
		}
	})
}

// jobOf stores a finished backup of client and a restore of it onto
// target, and returns their ids.
func jobOf(t *testing.T, db *metadb.DB, client, target string) (backupID, restoreID string) {
	t.Helper()
	ctx := context.Background()
	b := &coffer.Backup{ClientID: client, Trigger: coffer.TriggerManual, Paths: []string{"/"}}
	if err := db.CreateBackup(ctx, b); err != nil {
		t.Fatal(err)
	}
	r := &coffer.Restore{BackupID: b.ID, SourceClientID: client, TargetClientID: target, Destination: "/r"}
	if err := db.CreateRestore(ctx, r); err != nil {
		t.Fatal(err)
	}
	return b.ID, r.ID
}

func TestIngestAndListLogs(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		e := newEnv(t, db, agents.Options{})
		web, other := e.enroll(t, "web").Client.ID, e.enroll(t, "other").Client.ID
		myBackup, myRestore := jobOf(t, db, web, web)
		theirBackup, theirRestore := jobOf(t, db, other, other)
		_, restoreOntoWeb := jobOf(t, db, other, web) // web runs it: its lines belong to web

		t0 := e.clock.Now().Add(-time.Minute)
		res, err := e.svc.IngestLogs(ctx, web, protocol.LogBatch{Lines: []protocol.LogLine{
			{Time: t0, Level: "info", Message: "backup started", BackupID: myBackup},
			{Time: t0.Add(time.Second), Level: "warn", Message: "unreadable", BackupID: myBackup,
				Attrs: map[string]string{"path": "/etc/shadow", "err": "permission\x00denied"}},
			{Time: t0.Add(2 * time.Second), Level: "error", Message: "restore failed", RestoreID: myRestore},
			{Time: t0.Add(3 * time.Second), Level: "info", Message: "foreign restore", RestoreID: restoreOntoWeb},
			{Time: t0.Add(4 * time.Second), Level: "info", Message: "spoofed backup", BackupID: theirBackup},
			{Time: t0.Add(5 * time.Second), Level: "info", Message: "spoofed restore", RestoreID: theirRestore},
			{Time: t0.Add(6 * time.Second), Level: "debug", Message: "unknown backup", BackupID: "01NOSUCHBACKUP"},
			{Level: "info", Message: "no time"},
		}})
		if err != nil {
			t.Fatal(err)
		}
		if !res.Success || res.Accepted != 8 || res.Detached != 3 {
			t.Errorf("response = %+v", res)
		}

		all, err := e.svc.ClientLogs(ctx, metadb.ClientLogFilter{ClientID: web})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, l := range all {
			got = append(got, fmt.Sprintf("%s %s b=%s r=%s", l.Level, l.Message, l.BackupID, l.RestoreID))
		}
		want := []string{
			"info no time b= r=", // received now, after the others
			"debug unknown backup b= r=",
			"info spoofed restore b= r=",
			"info spoofed backup b= r=",
			"info foreign restore b= r=" + restoreOntoWeb,
			"error restore failed b= r=" + myRestore,
			"warn unreadable b=" + myBackup + " r=",
			"info backup started b=" + myBackup + " r=",
		}
		if !slices.Equal(got, want) {
			t.Errorf("lines:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		if a := all[6].Attrs; a["path"] != "/etc/shadow" || a["err"] != "permission\uFFFDdenied" {
			t.Errorf("attrs = %v", a)
		}
		if !all[0].Time.Equal(e.clock.Now()) {
			t.Errorf("a line without time got %v, want the time it arrived", all[0].Time)
		}
		if theirs, _ := e.svc.ClientLogs(ctx, metadb.ClientLogFilter{ClientID: other}); len(theirs) != 0 {
			t.Errorf("lines landed on another client: %v", theirs)
		}
		mine, _ := e.svc.ClientLogs(ctx, metadb.ClientLogFilter{ClientID: web, BackupID: myBackup})
		if len(mine) != 2 {
			t.Errorf("backup's lines = %v", mine)
		}

		// Bad lines refuse the batch, naming the line.
		for name, tc := range map[string]struct {
			line  protocol.LogLine
			field string
		}{
			"level":      {protocol.LogLine{Level: "loud", Message: "x"}, "body.lines[1].level"},
			"message":    {protocol.LogLine{Level: "info", Message: strings.Repeat("é", protocol.MaxLogMessage+1)}, "body.lines[1].message"},
			"attr key":   {protocol.LogLine{Level: "info", Attrs: map[string]string{"": "x"}}, "body.lines[1].attrs"},
			"attr value": {protocol.LogLine{Level: "info", Attrs: map[string]string{"k": strings.Repeat("v", 257)}}, "body.lines[1].attrs"},
			"attrs": {protocol.LogLine{Level: "info", Attrs: func() map[string]string {
				m := map[string]string{}
				for i := range protocol.MaxLogAttrs + 1 {
					m[fmt.Sprint(i)] = ""
				}
				return m
			}()}, "body.lines[1].attrs"},
		} {
			_, err := e.svc.IngestLogs(ctx, web, protocol.LogBatch{Lines: []protocol.LogLine{{Level: "info", Message: "ok"}, tc.line}})
			wantCode(t, err, "invalid_log_line")
			var ce *coffer.Error
			if !errors.As(err, &ce) || ce.Meta["field"] != tc.field {
				t.Errorf("%s: field = %v, want %s", name, ce.Meta["field"], tc.field)
			}
		}
		_, err = e.svc.IngestLogs(ctx, web, protocol.LogBatch{Lines: make([]protocol.LogLine, protocol.MaxLogLines+1)})
		wantCode(t, err, "too_many_log_lines")
		if n, _ := e.svc.ClientLogs(ctx, metadb.ClientLogFilter{ClientID: web}); len(n) != 8 {
			t.Errorf("refused batches stored lines: %d", len(n))
		}
		_, err = e.svc.IngestLogs(ctx, "01GONE", protocol.LogBatch{Lines: []protocol.LogLine{{Level: "info"}}})
		wantCode(t, err, "client_not_found")

		_, err = e.svc.ClientLogs(ctx, metadb.ClientLogFilter{ClientID: "nope"})
		wantCode(t, err, "client_not_found")
		_, err = e.svc.ClientLogs(ctx, metadb.ClientLogFilter{ClientID: web, Since: t0, Until: t0})
		wantCode(t, err, "invalid_time_range")
	})
}

func TestMaintainPrunesLogs(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		e := newEnv(t, db, agents.Options{LogRetention: 24 * time.Hour, LogMaxLines: 3, LogPruneEvery: time.Hour,
			HeartbeatInterval: time.Hour})
		id := e.enroll(t, "web").Client.ID
		ship := func(msgs ...string) {
			t.Helper()
			var lines []protocol.LogLine
			for _, m := range msgs {
				lines = append(lines, protocol.LogLine{Level: "info", Message: m})
			}
			if _, err := e.svc.IngestLogs(ctx, id, protocol.LogBatch{Lines: lines}); err != nil {
				t.Fatal(err)
			}
		}
		left := func() []string {
			t.Helper()
			ls, err := e.svc.ClientLogs(ctx, metadb.ClientLogFilter{ClientID: id})
			if err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, l := range ls {
				out = append(out, l.Message)
			}
			return out
		}

		ship("old")
		e.clock.Add(25 * time.Hour)
		ship("a", "b", "c", "d")
		if err := e.svc.Maintain(ctx); err != nil {
			t.Fatal(err)
		}
		if got := left(); !slices.Equal(got, []string{"d", "c", "b"}) {
			t.Errorf("after pruning: %v", got)
		}
		// Not again before LogPruneEvery has passed.
		ship("e")
		e.clock.Add(30 * time.Minute)
		if err := e.svc.Maintain(ctx); err != nil {
			t.Fatal(err)
		}
		if got := left(); len(got) != 4 {
			t.Errorf("pruned too soon: %v", got)
		}
		e.clock.Add(30 * time.Minute)
		if err := e.svc.Maintain(ctx); err != nil {
			t.Fatal(err)
		}
		if got := left(); !slices.Equal(got, []string{"e", "d", "c"}) {
			t.Errorf("second pruning: %v", got)
		}
	})
}
