package agents_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
	"github.com/cofferhq/coffer/internal/protocol"
	"github.com/cofferhq/coffer/internal/server/agents"
	"github.com/google/go-cmp/cmp"
)

// clock is a settable time source shared by the store and the service.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// recorder collects published events, checking what the hub would.
type recorder struct {
	t  testing.TB
	mu sync.Mutex
	ev []coffer.Event
}

func (r *recorder) Publish(_ context.Context, e *coffer.Event) error {
	if e.Code == "" || e.Title == "" || !e.Audience.Valid() || e.Actor == "" {
		r.t.Errorf("invalid event %+v", e)
	}
	r.mu.Lock()
	r.ev = append(r.ev, *e)
	r.mu.Unlock()
	return nil
}

// codes returns the codes of the events published so far and forgets them.
func (r *recorder) codes() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, e := range r.ev {
		out = append(out, e.Code)
	}
	r.ev = nil
	return out
}

type env struct {
	db    *metadb.DB
	svc   *agents.Service
	clock *clock
	ev    *recorder
	// owner is the operator who enrolls the clients (and so owns them);
	// admin an admin; viewer a viewer.
	owner, admin, viewer *coffer.Principal
}

func newEnv(t *testing.T, db *metadb.DB, opts agents.Options) *env {
	t.Helper()
	e := &env{db: db, clock: &clock{t: time.Now().UTC().Truncate(time.Second)}, ev: &recorder{t: t}}
	db.Now = e.clock.Now
	opts.Store, opts.Events, opts.Now = db, e.ev, e.clock.Now
	e.svc = agents.New(opts)
	e.owner = e.user(t, "alice", coffer.RoleOperator)
	e.admin = e.user(t, "root", coffer.RoleAdmin)
	e.viewer = e.user(t, "vera", coffer.RoleViewer)
	return e
}

// user creates a user and returns a session principal of theirs.
func (e *env) user(t *testing.T, name string, role coffer.Role) *coffer.Principal {
	t.Helper()
	u := &coffer.User{Username: name, Role: role, PasswordHash: "x"}
	if err := e.db.CreateUser(context.Background(), u); err != nil {
		t.Fatal(err)
	}
	return &coffer.Principal{Kind: coffer.PrincipalSession, UserID: u.ID, Username: u.Username, Role: u.Role,
		Scopes: u.Role.Permissions()}
}

var machine = protocol.MachineInfo{Hostname: "web-1.example", OS: "linux", Arch: "amd64",
	IPv4: []string{"192.0.2.10"}, IPv6: []string{"2001:db8::10"}, AgentVersion: "1.2.3"}

// enroll creates a token and enrolls a machine with it.
func (e *env) enroll(t *testing.T, name string) *protocol.EnrollResponse {
	t.Helper()
	ctx := context.Background()
	secret, _, err := e.svc.CreateEnrollmentToken(ctx, e.owner, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	res, err := e.svc.Enroll(ctx, protocol.EnrollRequest{Token: secret, Name: name, MachineInfo: machine})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	if got := coffer.ErrorCode(err); got != code {
		t.Fatalf("error = %v (code %q), want code %q", err, got, code)
	}
}

func TestEnrollment(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		e := newEnv(t, db, agents.Options{})
		secret, tok, err := e.svc.CreateEnrollmentToken(ctx, e.owner, "  db-server ", 0)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(secret, protocol.EnrollPrefix) || len(secret) < 40 || tok.Name != "db-server" ||
			tok.TokenHash == "" || strings.Contains(tok.TokenHash, secret) || !tok.ExpiresAt.Equal(e.clock.Now().Add(time.Hour)) {
			t.Errorf("token = %q %+v", secret, tok)
		}
		if got := e.ev.codes(); !slices.Equal(got, []string{"enrollment_token.created"}) {
			t.Errorf("events = %v", got)
		}

		res, err := e.svc.Enroll(ctx, protocol.EnrollRequest{Token: secret, MachineInfo: machine})
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(res.Credential, protocol.CredentialPrefix) || res.Client.Name != "db-server" ||
			res.Client.Hostname != machine.Hostname || res.HeartbeatSeconds != 15 {
			t.Errorf("enroll response = %+v", res)
		}
		c, err := e.svc.GetClient(ctx, res.Client.ID)
		if err != nil {
			t.Fatal(err)
		}
		got := protocol.MachineInfo{Hostname: c.Hostname, OS: c.OS, Arch: c.Arch, IPv4: c.IPv4, IPv6: c.IPv6, AgentVersion: c.AgentVersion}
		if diff := cmp.Diff(machine, got); diff != "" {
			t.Errorf("recorded machine info (-want +got):\n%s", diff)
		}
		if c.OwnerID != e.owner.UserID || c.Status != coffer.ClientOnline || c.CredentialHash == "" ||
			strings.Contains(c.CredentialHash, res.Credential) {
			t.Errorf("client = %+v", c)
		}
		if got := e.ev.codes(); !slices.Equal(got, []string{"client.enrolled"}) {
			t.Errorf("events = %v", got)
		}

		// A token works once.
		_, err = e.svc.Enroll(ctx, protocol.EnrollRequest{Token: secret, MachineInfo: machine})
		wantCode(t, err, "enrollment_token_used")
		_, err = e.svc.Enroll(ctx, protocol.EnrollRequest{Token: protocol.EnrollPrefix + "bogus", MachineInfo: machine})
		wantCode(t, err, "enrollment_token_invalid")
		_, err = e.svc.Enroll(ctx, protocol.EnrollRequest{Token: "cfr_t_other-kind", MachineInfo: machine})
		wantCode(t, err, "enrollment_token_invalid")

		// An expired one fails; without a name the client takes its hostname.
		short, _, err := e.svc.CreateEnrollmentToken(ctx, e.owner, "", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		e.clock.Add(time.Minute)
		_, err = e.svc.Enroll(ctx, protocol.EnrollRequest{Token: short, MachineInfo: machine})
		wantCode(t, err, "enrollment_token_expired")
		res = e.enroll(t, "")
		if res.Client.Name != machine.Hostname {
			t.Errorf("default name = %q", res.Client.Name)
		}

		// Lifetimes out of range.
		for _, ttl := range []time.Duration{30 * time.Second, 8 * 24 * time.Hour, -time.Hour} {
			_, _, err = e.svc.CreateEnrollmentToken(ctx, e.owner, "", ttl)
			wantCode(t, err, "invalid_expires_in_seconds")
		}
	})
}

func TestEnrollRejectsBadMachineInfo(t *testing.T) {
	e := newEnv(t, metadbtest.Open(t, metadb.SQLite), agents.Options{})
	ctx := context.Background()
	secret, _, err := e.svc.CreateEnrollmentToken(ctx, e.owner, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		edit func(r *protocol.EnrollRequest)
		code string
	}{
		{"no hostname", func(r *protocol.EnrollRequest) { r.Hostname = " " }, "invalid_hostname"},
		{"long hostname", func(r *protocol.EnrollRequest) { r.Hostname = strings.Repeat("h", 256) }, "invalid_hostname"},
		{"control character", func(r *protocol.EnrollRequest) { r.OS = "linux\n" }, "invalid_os"},
		{"long version", func(r *protocol.EnrollRequest) { r.AgentVersion = strings.Repeat("1", 65) }, "invalid_agent_version"},
		{"ipv6 as ipv4", func(r *protocol.EnrollRequest) { r.IPv4 = []string{"2001:db8::1"} }, "invalid_ipv4"},
		{"not an address", func(r *protocol.EnrollRequest) { r.IPv6 = []string{"example.com"} }, "invalid_ipv6"},
		{"too many addresses", func(r *protocol.EnrollRequest) { r.IPv4 = slices.Repeat([]string{"192.0.2.1"}, 65) }, "invalid_ipv4"},
		{"long name", func(r *protocol.EnrollRequest) { r.Name = strings.Repeat("n", 101) }, "invalid_name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := protocol.EnrollRequest{Token: secret, MachineInfo: machine}
			req.IPv4 = slices.Clone(machine.IPv4)
			tc.edit(&req)
			_, err := e.svc.Enroll(ctx, req)
			wantCode(t, err, tc.code)
		})
	}
	// The refusals did not spend the token.
	if _, err := e.svc.Enroll(ctx, protocol.EnrollRequest{Token: secret, MachineInfo: machine}); err != nil {
		t.Fatalf("token spent by a refused enrollment: %v", err)
	}
}

func TestAuthenticateAndDelete(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		e := newEnv(t, db, agents.Options{})
		res := e.enroll(t, "laptop")
		p, err := e.svc.Authenticate(ctx, res.Credential)
		if err != nil {
			t.Fatal(err)
		}
		want := &coffer.Principal{Kind: coffer.PrincipalAgent, ClientID: res.Client.ID, Username: "agent:laptop",
			Scopes: []coffer.Permission{coffer.PermAgent}, CredentialID: res.Client.ID}
		if diff := cmp.Diff(want, p); diff != "" {
			t.Errorf("principal (-want +got):\n%s", diff)
		}
		if p.Can(coffer.PermRead) {
			t.Error("an agent may read")
		}
		_, err = e.svc.Authenticate(ctx, res.Credential+"x")
		wantCode(t, err, "invalid_token")
		_, err = e.svc.Authenticate(ctx, "cfr_s_session")
		wantCode(t, err, "invalid_token")

		feed := e.svc.Subscribe(res.Client.ID)
		defer feed.Close()
		e.ev.codes()
		_, err = e.svc.DeleteClient(ctx, e.owner, res.Client.ID) // even its owner: only admins delete
		wantCode(t, err, "forbidden")
		c, err := e.svc.DeleteClient(ctx, e.admin, res.Client.ID)
		if err != nil || c.ID != res.Client.ID {
			t.Fatalf("delete = %+v, %v", c, err)
		}
		_, err = e.svc.Authenticate(ctx, res.Credential)
		wantCode(t, err, "invalid_token")
		if !strings.Contains(err.Error(), "enroll") {
			t.Errorf("refusal does not say to enroll again: %v", err)
		}
		select {
		case <-feed.Gone():
		default:
			t.Error("the deleted client's stream was not told")
		}
		if got := e.ev.codes(); !slices.Equal(got, []string{"client.deleted"}) {
			t.Errorf("events = %v", got)
		}
		_, err = e.svc.DeleteClient(ctx, e.admin, res.Client.ID)
		wantCode(t, err, "client_not_found")
		_, err = e.svc.GetClient(ctx, res.Client.ID)
		wantCode(t, err, "client_not_found")
	})
}

func TestOfflineAfterMissedHeartbeats(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		e := newEnv(t, db, agents.Options{HeartbeatInterval: 10 * time.Second})
		res := e.enroll(t, "nas")
		other := e.enroll(t, "desk")
		e.ev.codes()

		e.clock.Add(25 * time.Second)
		if _, err := e.svc.Heartbeat(ctx, other.Client.ID, protocol.HeartbeatRequest{MachineInfo: machine}); err != nil {
			t.Fatal(err)
		}
		if err := e.svc.Maintain(ctx); err != nil {
			t.Fatal(err)
		}
		if got := e.ev.codes(); len(got) != 0 {
			t.Fatalf("events within the grace time: %v", got)
		}
		e.clock.Add(10 * time.Second) // nas: 35 s > 3 × 10 s; desk: 10 s
		if err := e.svc.Maintain(ctx); err != nil {
			t.Fatal(err)
		}
		if got := e.ev.codes(); !slices.Equal(got, []string{"client.offline"}) {
			t.Fatalf("events = %v", got)
		}
		if c, _ := e.svc.GetClient(ctx, res.Client.ID); c.Status != coffer.ClientOffline {
			t.Errorf("status = %s, want offline", c.Status)
		}
		if c, _ := e.svc.GetClient(ctx, other.Client.ID); c.Status != coffer.ClientOnline {
			t.Errorf("other status = %s, want online", c.Status)
		}
		if err := e.svc.Maintain(ctx); err != nil {
			t.Fatal(err)
		}
		if got := e.ev.codes(); len(got) != 0 {
			t.Errorf("offline reported twice: %v", got)
		}
		offline, total, err := e.svc.ListClients(ctx, metadb.ClientFilter{Status: coffer.ClientOffline})
		if err != nil || total != 1 || len(offline) != 1 || offline[0].ID != res.Client.ID {
			t.Errorf("offline clients = %v %d %v", offline, total, err)
		}
		_, _, err = e.svc.ListClients(ctx, metadb.ClientFilter{Status: "sleeping"})
		wantCode(t, err, "invalid_status")

		// A heartbeat brings it back, with the machine's new details.
		hb := protocol.HeartbeatRequest{MachineInfo: machine}
		hb.AgentVersion, hb.IPv4 = "1.3.0", []string{"198.51.100.7"}
		out, err := e.svc.Heartbeat(ctx, res.Client.ID, hb)
		if err != nil || !out.Success || out.HeartbeatSeconds != 10 || !out.ServerTime.Equal(e.clock.Now()) {
			t.Fatalf("heartbeat = %+v, %v", out, err)
		}
		if got := e.ev.codes(); !slices.Equal(got, []string{"client.online"}) {
			t.Errorf("events = %v", got)
		}
		c, _ := e.svc.GetClient(ctx, res.Client.ID)
		if c.Status != coffer.ClientOnline || c.AgentVersion != "1.3.0" || !slices.Equal(c.IPv4, hb.IPv4) ||
			c.LastSeenAt == nil || !c.LastSeenAt.Equal(e.clock.Now()) {
			t.Errorf("client after heartbeat = %+v", c)
		}
		if _, err := e.svc.Heartbeat(ctx, res.Client.ID, hb); err != nil {
			t.Fatal(err)
		}
		if got := e.ev.codes(); len(got) != 0 {
			t.Errorf("second heartbeat published %v", got)
		}

		// An agent that never said allows commands; one that refuses
		// them says so with each heartbeat.
		if !c.CommandsAllowed {
			t.Error("a client whose agent did not report --allow-commands shows commands refused")
		}
		refuse := false
		hb.CommandsAllowed = &refuse
		if _, err := e.svc.Heartbeat(ctx, res.Client.ID, hb); err != nil {
			t.Fatal(err)
		}
		if c, _ := e.svc.GetClient(ctx, res.Client.ID); c.CommandsAllowed {
			t.Error("a heartbeat with commands_allowed false left the client allowing commands")
		}
	})
}

// waitFeed waits for the feed to fire; a feed that never does fails the
// test after a generous time.
func waitFeed(t *testing.T, f *agents.Feed) {
	t.Helper()
	select {
	case <-f.C():
	case <-time.After(20 * time.Second):
		t.Fatal("the command feed never fired")
	}
}

func TestEnqueueWakesStream(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		// Polling is off in practice: only the in-process wake-up can
		// deliver within the test.
		e := newEnv(t, db, agents.Options{PollInterval: time.Hour})
		res := e.enroll(t, "srv")
		id, err := e.svc.Enqueue(ctx, res.Client.ID, protocol.Command{Kind: protocol.CommandCancel,
			Cancel: &protocol.CancelCommand{JobID: "queued-before"}})
		if err != nil {
			t.Fatal(err)
		}
		feed := e.svc.Subscribe(res.Client.ID)
		defer feed.Close()
		waitFeed(t, feed) // fires at once for what was queued before
		cmds, err := feed.Pending(ctx)
		if err != nil || len(cmds) != 1 || cmds[0].ID != id || cmds[0].Cancel.JobID != "queued-before" {
			t.Fatalf("pending = %+v, %v", cmds, err)
		}
		if err := feed.Delivered(ctx, id); err != nil {
			t.Fatal(err)
		}

		go func() {
			_, err := e.svc.Enqueue(ctx, res.Client.ID, protocol.Command{Kind: protocol.CommandBackup,
				Backup: &protocol.BackupCommand{BackupID: "b1"}})
			if err != nil {
				t.Error(err)
			}
		}()
		var got []protocol.Command
		for len(got) == 0 {
			waitFeed(t, feed)
			if got, err = feed.Pending(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if len(got) != 1 || got[0].Kind != protocol.CommandBackup || got[0].Backup.BackupID != "b1" || got[0].ID == "" {
			t.Fatalf("woken with %+v", got)
		}
		if err := feed.Delivered(ctx, got[0].ID); err != nil {
			t.Fatal(err)
		}
		if left, err := feed.Pending(ctx); err != nil || len(left) != 0 {
			t.Errorf("after delivery: %+v, %v", left, err)
		}

		_, err = e.svc.Enqueue(ctx, "no-such-client", protocol.Command{Kind: protocol.CommandCancel, Cancel: &protocol.CancelCommand{}})
		wantCode(t, err, "client_not_found")
		for _, bad := range []protocol.Command{{Kind: "reboot"}, {Kind: protocol.CommandBackup, Cancel: &protocol.CancelCommand{}},
			{Kind: protocol.CommandCancel, Cancel: &protocol.CancelCommand{}, ListDir: &protocol.ListDirCommand{}}} {
			if _, err = e.svc.Enqueue(ctx, res.Client.ID, bad); err == nil {
				t.Errorf("malformed command %+v enqueued", bad)
			}
		}

		// Old commands go at maintenance.
		if _, err := e.svc.Enqueue(ctx, res.Client.ID, protocol.Command{Kind: protocol.CommandCancel, Cancel: &protocol.CancelCommand{}}); err != nil {
			t.Fatal(err)
		}
		e.clock.Add(8 * 24 * time.Hour)
		if err := e.svc.Maintain(ctx); err != nil {
			t.Fatal(err)
		}
		if left, err := feed.Pending(ctx); err != nil || len(left) != 0 {
			t.Errorf("after maintenance: %+v, %v", left, err)
		}
	})
}

// A command enqueued on one replica reaches a stream served by another by
// polling the store.
func TestCommandsAcrossReplicas(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		e := newEnv(t, db, agents.Options{PollInterval: 20 * time.Millisecond})
		other := agents.New(agents.Options{Store: metadbtest.OpenSame(t, db)})
		res := e.enroll(t, "srv")
		feed := e.svc.Subscribe(res.Client.ID)
		defer feed.Close()
		id, err := other.Enqueue(ctx, res.Client.ID, protocol.Command{Kind: protocol.CommandRestore,
			Restore: &protocol.RestoreCommand{RestoreID: "r1"}})
		if err != nil {
			t.Fatal(err)
		}
		var got []protocol.Command
		for len(got) == 0 {
			waitFeed(t, feed)
			if got, err = feed.Pending(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if got[0].ID != id || got[0].Restore.RestoreID != "r1" {
			t.Errorf("got %+v", got)
		}
	})
}

// fakeAgent answers list_dir commands on a feed until ctx ends.
func fakeAgent(ctx context.Context, t *testing.T, svc *agents.Service, feed *agents.Feed, clientID string, answer func(path string) protocol.ListDirResult) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-feed.C():
		}
		cmds, err := feed.Pending(ctx)
		if err != nil {
			if ctx.Err() == nil {
				t.Error(err)
			}
			return
		}
		for _, c := range cmds {
			feed.Delivered(ctx, c.ID)
			if c.Kind == protocol.CommandListDir {
				if err := svc.CompleteListDir(ctx, clientID, c.ID, answer(c.ListDir.Path)); err != nil && ctx.Err() == nil {
					t.Error(err)
				}
			}
		}
	}
}

func TestListDir(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		e := newEnv(t, db, agents.Options{PollInterval: time.Hour, ResultPoll: time.Hour})
		res := e.enroll(t, "srv")
		id := res.Client.ID

		// Nobody answers: a timeout, and the listing is not delivered later.
		_, err := e.svc.ListDir(ctx, e.owner, id, "/etc", 50*time.Millisecond)
		wantCode(t, err, "agent_timeout")
		if !coffer.IsKind(err, coffer.KindTimeout) {
			t.Errorf("kind = %s", coffer.ErrorKind(err))
		}
		feed := e.svc.Subscribe(id)
		defer feed.Close()
		if left, err := feed.Pending(ctx); err != nil || len(left) != 0 {
			t.Fatalf("abandoned listing still pending: %+v, %v", left, err)
		}

		_, err = e.svc.ListDir(ctx, e.owner, id, "etc", 0)
		wantCode(t, err, "invalid_path")
		_, err = e.svc.ListDir(ctx, e.owner, "nope", "/", 0)
		wantCode(t, err, "client_not_found")
		// Only its owner and admins browse a client.
		_, err = e.svc.ListDir(ctx, e.user(t, "bob", coffer.RoleOperator), id, "/", 0)
		wantCode(t, err, "client_not_owned")
		_, err = e.svc.ListDir(ctx, e.viewer, id, "/", 0)
		wantCode(t, err, "operate_required")

		// An agent answers (woken in-process: both polls are off).
		mtime := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
		actx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			fakeAgent(actx, t, e.svc, feed, id, func(p string) protocol.ListDirResult {
				if p == "/secret" {
					return protocol.ListDirResult{Path: p, Error: "permission denied"}
				}
				return protocol.ListDirResult{Path: p, Entries: []protocol.DirEntry{{Name: "hosts", Type: "file", Size: 12, Mtime: mtime}}}
			})
		}()
		defer func() { stop(); <-done }()
		out, err := e.svc.ListDir(ctx, e.owner, id, "/etc/", 0)
		if err != nil {
			t.Fatal(err)
		}
		want := &protocol.ListDirResult{Path: "/etc", Entries: []protocol.DirEntry{{Name: "hosts", Type: "file", Size: 12, Mtime: mtime}}}
		if diff := cmp.Diff(want, out); diff != "" {
			t.Errorf("listing (-want +got):\n%s", diff)
		}
		_, err = e.svc.ListDir(ctx, e.owner, id, "/secret", 0)
		wantCode(t, err, "path_not_listable")
		if !strings.Contains(err.Error(), "permission denied") {
			t.Errorf("agent's reason lost: %v", err)
		}

		// Offline: refused at once.
		e.clock.Add(time.Hour)
		if err := e.svc.Maintain(ctx); err != nil {
			t.Fatal(err)
		}
		_, err = e.svc.ListDir(ctx, e.owner, id, "/", 0)
		wantCode(t, err, "agent_offline")
	})
}

func TestCompleteListDirChecksOwnership(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		e := newEnv(t, db, agents.Options{ResultPoll: 10 * time.Millisecond})
		a, b := e.enroll(t, "a"), e.enroll(t, "b")
		other := agents.New(agents.Options{Store: metadbtest.OpenSame(t, db)})

		cancelID, err := e.svc.Enqueue(ctx, a.Client.ID, protocol.Command{Kind: protocol.CommandCancel, Cancel: &protocol.CancelCommand{JobID: "x"}})
		if err != nil {
			t.Fatal(err)
		}
		err = e.svc.CompleteListDir(ctx, a.Client.ID, cancelID, protocol.ListDirResult{Path: "/"})
		wantCode(t, err, "not_a_list_dir_command")
		err = e.svc.CompleteListDir(ctx, a.Client.ID, "missing", protocol.ListDirResult{Path: "/"})
		wantCode(t, err, "command_not_found")

		// b cannot answer a's listing; a's answer, posted to another
		// replica, reaches the waiting request by polling.
		type result struct {
			res *protocol.ListDirResult
			err error
		}
		got := make(chan result, 1)
		go func() {
			r, err := e.svc.ListDir(ctx, e.owner, a.Client.ID, "/home", 20*time.Second)
			got <- result{r, err}
		}()
		feed := other.Subscribe(a.Client.ID)
		defer feed.Close()
		var cmds []protocol.Command
		for {
			waitFeed(t, feed)
			if cmds, err = feed.Pending(ctx); err != nil {
				t.Fatal(err)
			}
			if i := slices.IndexFunc(cmds, func(c protocol.Command) bool { return c.Kind == protocol.CommandListDir }); i >= 0 {
				cmds = cmds[i:]
				break
			}
		}
		err = other.CompleteListDir(ctx, b.Client.ID, cmds[0].ID, protocol.ListDirResult{Path: "/home"})
		wantCode(t, err, "command_not_found")
		if err := other.CompleteListDir(ctx, a.Client.ID, cmds[0].ID, protocol.ListDirResult{Path: "/home"}); err != nil {
			t.Fatal(err)
		}
		r := <-got
		if r.err != nil || r.res.Path != "/home" || r.res.Entries == nil || len(r.res.Entries) != 0 {
			t.Errorf("listing = %+v, %v", r.res, r.err)
		}
	})
}
