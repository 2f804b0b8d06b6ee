package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/protocol"
	"github.com/cofferhq/coffer/internal/server/agents"
	"github.com/danielgtaylor/huma/v2"
	"github.com/danielgtaylor/huma/v2/adapters/humago"
)

// Client is an enrolled machine on the wire. Its credential is never shown
// after enrollment.
type Client struct {
	ID           string   `json:"id"`
	Name         string   `json:"name"`
	Hostname     string   `json:"hostname"`
	OS           string   `json:"os" doc:"GOOS of the agent, e.g. linux."`
	Arch         string   `json:"arch" doc:"GOARCH of the agent, e.g. amd64."`
	IPv4         []string `json:"ipv4"`
	IPv6         []string `json:"ipv6"`
	AgentVersion string   `json:"agent_version"`
	// CommandsAllowed is the agent's --allow-commands setting.
	CommandsAllowed bool   `json:"commands_allowed" doc:"Whether its agent runs plans' pre and post commands (false: started with --allow-commands=false; such plans' backups fail)."`
	OwnerID         string `json:"owner_id" doc:"The user who may run its backups and restore onto it besides admins: at first the creator of its enrollment token; empty if none."`
	// OwnerUsername is set in the single-client answers only.
	OwnerUsername *string    `json:"owner_username,omitempty" doc:"The owner's username; only in GET and PATCH /api/v1/clients/{id}, empty if none."`
	Status        string     `json:"status" enum:"online,offline" doc:"offline once heartbeats stop arriving."`
	LastSeenAt    *time.Time `json:"last_seen_at" nullable:"true" doc:"The last heartbeat (or the enrollment)."`
	CreatedAt     time.Time  `json:"created_at"`
	UpdatedAt     time.Time  `json:"updated_at"`
}

func toClient(c *coffer.Client) Client {
	return Client{ID: c.ID, Name: c.Name, Hostname: c.Hostname, OS: c.OS, Arch: c.Arch,
		IPv4: orEmpty(c.IPv4), IPv6: orEmpty(c.IPv6), AgentVersion: c.AgentVersion, CommandsAllowed: c.CommandsAllowed, OwnerID: c.OwnerID,
		Status: string(c.Status), LastSeenAt: c.LastSeenAt, CreatedAt: c.CreatedAt, UpdatedAt: c.UpdatedAt}
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// EnrollmentToken is an enrollment token on the wire, without its secret.
type EnrollmentToken struct {
	ID        string    `json:"id"`
	Name      string    `json:"name" doc:"The name the enrolled client gets; empty: its hostname."`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

// DirListing is a live listing of one directory on a client.
type DirListing struct {
	Path    string              `json:"path"`
	Entries []protocol.DirEntry `json:"entries"`
}

// ClientLog is one line of a client's agent log on the wire.
type ClientLog struct {
	ID         string            `json:"id"`
	Time       time.Time         `json:"time" doc:"When the agent logged it, by the agent's clock."`
	ReceivedAt time.Time         `json:"received_at" doc:"When the server stored it; retention counts from here."`
	Level      string            `json:"level" enum:"debug,info,warn,error"`
	Message    string            `json:"message"`
	BackupID   string            `json:"backup_id" doc:"The backup the line is about; empty if none."`
	RestoreID  string            `json:"restore_id" doc:"The restore the line is about; empty if none."`
	Attrs      map[string]string `json:"attrs" doc:"The record's other attributes, as text."`
}

func toClientLog(l *coffer.ClientLog) ClientLog {
	attrs := l.Attrs
	if attrs == nil {
		attrs = map[string]string{}
	}
	return ClientLog{ID: l.ID, Time: l.Time, ReceivedAt: l.ReceivedAt, Level: l.Level.String(), Message: l.Message,
		BackupID: l.BackupID, RestoreID: l.RestoreID, Attrs: attrs}
}

// maxLogBatchBytes bounds the body of a log batch: 500 lines at their
// limits, with room for JSON escaping.
const maxLogBatchBytes = 8 << 20

// agentRecheck is how often an open agent stream checks that its
// credential still works (the client may be deleted on another replica).
const agentRecheck = 30 * time.Second

// maxListingBytes bounds the body of a directory listing an agent posts.
const maxListingBytes = 32 << 20

func (s *Server) registerAgents() {
	if s.opts.Agents == nil {
		return
	}
	s.registerClients()
	s.registerAgentRoutes()
}

func (s *Server) registerClients() {
	tags := []string{"clients"}
	ag := s.opts.Agents

	type enrollTokenCreateIn struct {
		Body struct {
			Name             string `json:"name,omitempty" maxLength:"100" doc:"The name the enrolled client gets; default: its hostname."`
			ExpiresInSeconds int    `json:"expires_in_seconds,omitempty" minimum:"60" maximum:"604800" doc:"Lifetime of the token; default 3600."`
		}
	}
	type enrollTokenCreateOut struct {
		CacheControl string `header:"Cache-Control"`
		Body         struct {
			EnrollmentToken EnrollmentToken `json:"enrollment_token"`
			Secret          string          `json:"secret" doc:"The token itself (cfr_e_…), for coffer agent enroll --token. Shown only in this response; it works once."`
		}
	}
	handle(s, Operate, huma.Operation{
		OperationID: "create-enrollment-token", Method: http.MethodPost, Path: "/api/v1/enrollment-tokens", Tags: tags,
		Summary:       "Create an enrollment token",
		Description:   "Issues a one-time token with which one agent enrolls (`coffer agent enroll --server URL --token T`). Its secret is returned once.",
		DefaultStatus: http.StatusCreated,
	}, func(ctx context.Context, in *enrollTokenCreateIn) (*enrollTokenCreateOut, error) {
		secret, t, err := ag.CreateEnrollmentToken(ctx, principalFrom(ctx), in.Body.Name,
			time.Duration(in.Body.ExpiresInSeconds)*time.Second)
		if err != nil {
			return nil, err
		}
		out := &enrollTokenCreateOut{CacheControl: "no-store"}
		out.Body.EnrollmentToken = EnrollmentToken{ID: t.ID, Name: t.Name, CreatedAt: t.CreatedAt, ExpiresAt: t.ExpiresAt}
		out.Body.Secret = secret
		return out, nil
	})

	type clientListIn struct {
		OffsetParams
		Status  string `query:"status" enum:"online,offline" doc:"Only clients with this status."`
		Name    string `query:"name" maxLength:"100" doc:"Only clients whose name contains this (any letter case)."`
		OwnerID string `query:"owner_id" maxLength:"64" doc:"Only the clients this user owns."`
	}
	handle(s, Read, huma.Operation{
		OperationID: "list-clients", Method: http.MethodGet, Path: "/api/v1/clients", Tags: tags,
		Summary: "List clients", Description: "Enrolled machines ordered by name, offset-paginated.",
	}, func(ctx context.Context, in *clientListIn) (*struct{ Body *Page[Client] }, error) {
		cs, total, err := ag.ListClients(ctx, metadb.ClientFilter{Status: coffer.ClientStatus(in.Status), Name: in.Name,
			OwnerID: in.OwnerID, Limit: in.PageSize, Offset: in.offset()})
		if err != nil {
			return nil, err
		}
		items := make([]Client, len(cs))
		for i := range cs {
			items[i] = toClient(&cs[i])
		}
		return &struct{ Body *Page[Client] }{offsetPage(items, in.OffsetParams, total)}, nil
	})

	type clientPathIn struct {
		ID string `path:"id" maxLength:"64" doc:"The client id."`
	}
	type clientOut struct {
		Body struct {
			Client Client `json:"client"`
		}
	}
	detail := func(ctx context.Context, c *coffer.Client) *clientOut {
		out := &clientOut{}
		out.Body.Client = toClient(c)
		owner := ag.OwnerName(ctx, c)
		out.Body.Client.OwnerUsername = &owner
		return out
	}
	handle(s, Read, huma.Operation{
		OperationID: "get-client", Method: http.MethodGet, Path: "/api/v1/clients/{id}", Tags: tags,
		Summary: "Get a client", Description: "One enrolled machine, with its owner's username.",
		Errors: []int{http.StatusNotFound},
	}, func(ctx context.Context, in *clientPathIn) (*clientOut, error) {
		c, err := ag.GetClient(ctx, in.ID)
		if err != nil {
			return nil, err
		}
		return detail(ctx, c), nil
	})

	type clientPatchIn struct {
		ID   string `path:"id" maxLength:"64" doc:"The client id."`
		Body struct {
			Name    *string `json:"name,omitempty" minLength:"1" maxLength:"100" doc:"The new name (names need not be unique)."`
			OwnerID *string `json:"owner_id,omitempty" maxLength:"64" doc:"The id of the user who becomes its owner; empty: no owner (only admins act on it). Admins only."`
		}
	}
	handle(s, Operate, huma.Operation{
		OperationID: "update-client", Method: http.MethodPatch, Path: "/api/v1/clients/{id}", Tags: tags,
		Summary: "Rename a client or assign its owner",
		Description: "Changes the fields sent. Renaming needs the operate permission on the client: operators rename " +
			"only the clients they own (403 client_not_owned otherwise). Assigning the owner is for admins " +
			"(403 owner_change_needs_admin); an owner_id that names no user is 404 user_not_found. Each change is an audit event.",
		Errors: []int{http.StatusNotFound},
	}, func(ctx context.Context, in *clientPatchIn) (*clientOut, error) {
		c, err := ag.UpdateClient(ctx, principalFrom(ctx), in.ID, agents.ClientPatch{Name: in.Body.Name, OwnerID: in.Body.OwnerID})
		if err != nil {
			return nil, err
		}
		return detail(ctx, c), nil
	})

	handle(s, Manage, huma.Operation{
		OperationID: "delete-client", Method: http.MethodDelete, Path: "/api/v1/clients/{id}", Tags: tags,
		Summary: "Delete a client",
		Description: "Deletes an enrolled machine: its agent's credential stops working at once. Its backups and restores stay " +
			"in the history until they are deleted; its log lines go with it.",
		Errors: []int{http.StatusNotFound},
	}, func(ctx context.Context, in *clientPathIn) (*struct{ Body CommandResult }, error) {
		c, err := ag.DeleteClient(ctx, principalFrom(ctx), in.ID)
		if err != nil {
			return nil, err
		}
		return &struct{ Body CommandResult }{CommandResult{Message: fmt.Sprintf("Client %q deleted; its agent must enroll again.", c.Name),
			Success: true, ID: c.ID}}, nil
	})

	type clientListDirIn struct {
		ID   string `path:"id" maxLength:"64" doc:"The client id."`
		Path string `query:"path" maxLength:"4096" default:"/" doc:"An absolute directory path on the client."`
	}
	handle(s, Operate, huma.Operation{
		OperationID: "list-client-directory", Method: http.MethodGet, Path: "/api/v1/clients/{id}/fs", Tags: tags,
		Summary: "List a directory on a client",
		Description: "Asks the client's agent, over its command stream, for the entries of one directory (to pick backup paths " +
			"or a restore destination). Operators browse only the clients they own (403 client_not_owned). " +
			"409 agent_offline when the client is offline; 504 agent_timeout when its agent does not answer in time.",
		Errors: []int{http.StatusNotFound, http.StatusConflict, http.StatusGatewayTimeout},
	}, func(ctx context.Context, in *clientListDirIn) (*struct{ Body DirListing }, error) {
		res, err := ag.ListDir(ctx, principalFrom(ctx), in.ID, in.Path, 0)
		if err != nil {
			return nil, err
		}
		return &struct{ Body DirListing }{DirListing{Path: res.Path, Entries: res.Entries}}, nil
	})

	type clientLogsIn struct {
		CursorParams
		ID        string    `path:"id" maxLength:"64" doc:"The client id."`
		Level     string    `query:"level" enum:"debug,info,warn,error" doc:"Only lines at this level or above."`
		BackupID  string    `query:"backup_id" maxLength:"64" doc:"Only the lines about this backup."`
		RestoreID string    `query:"restore_id" maxLength:"64" doc:"Only the lines about this restore."`
		Since     time.Time `query:"since" doc:"Only lines logged at or after this time (RFC 3339)."`
		Until     time.Time `query:"until" doc:"Only lines logged before this time (RFC 3339)."`
	}
	handle(s, Read, huma.Operation{
		OperationID: "list-client-logs", Method: http.MethodGet, Path: "/api/v1/clients/{id}/logs", Tags: tags,
		Summary: "List a client's log lines",
		Description: "The lines the client's agent shipped, newest first (by the time the agent logged them), " +
			"cursor-paginated. Lines are kept for the server's --client-log-retention.",
		Errors: []int{http.StatusNotFound},
	}, func(ctx context.Context, in *clientLogsIn) (*struct{ Body *Page[ClientLog] }, error) {
		f := metadb.ClientLogFilter{ClientID: in.ID, BackupID: in.BackupID, RestoreID: in.RestoreID, Since: in.Since,
			Until: in.Until, Limit: in.PageSize + 1}
		if in.Level != "" {
			l, _ := coffer.ParseLogLevel(in.Level) // the enum is checked
			f.MinLevel = &l
		}
		after, err := decodeKeyset(in.Cursor)
		if err != nil {
			return nil, err
		}
		f.After = after
		ls, err := ag.ClientLogs(ctx, f)
		if err != nil {
			return nil, err
		}
		ls, next := keysetPage(ls, in.PageSize, func(l *coffer.ClientLog) metadb.Keyset {
			return metadb.Keyset{CreatedAt: l.Time, ID: l.ID}
		})
		items := make([]ClientLog, len(ls))
		for i := range ls {
			items[i] = toClientLog(&ls[i])
		}
		return &struct{ Body *Page[ClientLog] }{cursorPage(items, in.PageSize, next)}, nil
	})
}

func (s *Server) registerAgentRoutes() {
	tags := []string{"agent"}
	ag := s.opts.Agents

	type agentEnrollIn struct {
		Body protocol.EnrollRequest
	}
	type agentEnrollOut struct {
		CacheControl string `header:"Cache-Control"`
		Body         protocol.EnrollResponse
	}
	handle(s, Public, huma.Operation{
		OperationID: "agent-enroll", Method: http.MethodPost, Path: "/api/v1/agent/enroll", Tags: tags,
		Summary: "Enroll an agent",
		Description: "Exchanges a one-time enrollment token (in the body) for a new client and its credential (cfr_a_…), " +
			"returned only in this response. A used or expired token is refused with 401.",
		DefaultStatus: http.StatusCreated, Errors: []int{http.StatusUnauthorized},
	}, func(ctx context.Context, in *agentEnrollIn) (*agentEnrollOut, error) {
		res, err := ag.Enroll(ctx, in.Body)
		if err != nil {
			return nil, err
		}
		return &agentEnrollOut{CacheControl: "no-store", Body: *res}, nil
	})

	type agentHeartbeatIn struct {
		Body protocol.HeartbeatRequest
	}
	handle(s, Agent, huma.Operation{
		OperationID: "agent-heartbeat", Method: http.MethodPost, Path: "/api/v1/agent/heartbeat", Tags: tags,
		Summary: "Agent heartbeat", Description: "Tells the server the agent is alive, with what it knows about its machine.",
	}, func(ctx context.Context, in *agentHeartbeatIn) (*struct{ Body protocol.HeartbeatResponse }, error) {
		res, err := ag.Heartbeat(ctx, principalFrom(ctx).ClientID, in.Body)
		if err != nil {
			return nil, err
		}
		return &struct{ Body protocol.HeartbeatResponse }{*res}, nil
	})

	type agentLogsIn struct {
		Body protocol.LogBatch
	}
	handle(s, Agent, huma.Operation{
		OperationID: "agent-ship-logs", Method: http.MethodPost, Path: "/api/v1/agent/logs", Tags: tags,
		Summary: "Ship log lines",
		Description: "Stores up to 500 lines of the agent's log for its client. A line naming a backup or restore that is not " +
			"this client's is stored without that reference (counted in detached).",
		Errors: []int{http.StatusRequestEntityTooLarge}, MaxBodyBytes: maxLogBatchBytes,
	}, func(ctx context.Context, in *agentLogsIn) (*struct{ Body *protocol.LogBatchResponse }, error) {
		res, err := ag.IngestLogs(ctx, principalFrom(ctx).ClientID, in.Body)
		if err != nil {
			return nil, err
		}
		return &struct{ Body *protocol.LogBatchResponse }{res}, nil
	})

	type agentListingIn struct {
		RequestID string `path:"request_id" maxLength:"64" doc:"The id of the list_dir command."`
		Body      protocol.ListDirResult
	}
	handle(s, Agent, huma.Operation{
		OperationID: "agent-post-listing", Method: http.MethodPost, Path: "/api/v1/agent/fs/{request_id}", Tags: tags,
		Summary: "Answer a directory listing", Description: "The agent's answer to a list_dir command of its stream.",
		Errors: []int{http.StatusNotFound, http.StatusConflict}, MaxBodyBytes: maxListingBytes,
	}, func(ctx context.Context, in *agentListingIn) (*struct{ Body CommandResult }, error) {
		if err := ag.CompleteListDir(ctx, principalFrom(ctx).ClientID, in.RequestID, in.Body); err != nil {
			return nil, err
		}
		return &struct{ Body CommandResult }{CommandResult{Message: "Listing received.", Success: true, ID: in.RequestID}}, nil
	})

	commandSchema := s.api.OpenAPI().Components.Schemas.Schema(reflect.TypeFor[protocol.Command](), true, "")
	type agentStreamIn struct{}
	handle(s, Agent, huma.Operation{
		OperationID: "agent-stream", Method: http.MethodGet, Path: "/api/v1/agent/stream", Tags: tags,
		Summary: "Agent command stream (SSE)",
		Description: "Server-Sent Events carrying the agent's orders: each is `event: command`, `id: <command id>` and " +
			"`data: <Command JSON>`. Commands queued while the agent was away come first. Heartbeat comments keep the " +
			"connection open; the stream ends with `event: unauthorized` when the client is deleted.",
		Responses: map[string]*huma.Response{"200": {Description: "A text/event-stream of Command objects.",
			Content: map[string]*huma.MediaType{"text/event-stream": {Schema: commandSchema}}}},
	}, func(ctx context.Context, _ *agentStreamIn) (*huma.StreamResponse, error) {
		clientID := principalFrom(ctx).ClientID
		return &huma.StreamResponse{Body: func(hctx huma.Context) {
			r, w := humago.Unwrap(hctx)
			hctx.SetHeader("Content-Type", "text/event-stream")
			hctx.SetHeader("Cache-Control", "no-store")
			hctx.SetHeader("X-Accel-Buffering", "no")
			hctx.SetStatus(http.StatusOK)
			st := &agentStream{s: s, w: w, rc: http.NewResponseController(w), clientID: clientID,
				authorization: r.Header.Get("Authorization")}
			st.run(r.Context())
		}}, nil
	})
}

// agentStream is one agent's open command stream.
type agentStream struct {
	s             *Server
	w             http.ResponseWriter
	rc            *http.ResponseController
	clientID      string
	authorization string
}

// run sends commands until the agent leaves, the server shuts down, a
// write fails, or the client is deleted. A command is marked delivered
// only once it was written and flushed; one written but lost with the
// connection is therefore sent again on the next stream.
func (st *agentStream) run(ctx context.Context) {
	feed := st.s.opts.Agents.Subscribe(st.clientID)
	defer feed.Close()
	if st.write([]byte("retry: 3000\n\n")) != nil {
		return
	}
	heartbeat := time.NewTicker(st.s.opts.Heartbeat)
	defer heartbeat.Stop()
	recheck := time.NewTicker(agentRecheck)
	defer recheck.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-feed.Gone():
			st.write([]byte("event: unauthorized\ndata: {}\n\n"))
			return
		case <-feed.Closing():
			return
		case <-feed.C():
			cmds, err := feed.Pending(ctx)
			if err != nil {
				st.s.log.Warn("read agent commands", "client_id", st.clientID, "err", err, "request_id", RequestID(ctx))
				continue // the next poll tries again
			}
			for i := range cmds {
				if st.send(&cmds[i]) != nil {
					return
				}
				if err := feed.Delivered(ctx, cmds[i].ID); err != nil {
					st.s.log.Warn("mark agent command delivered", "client_id", st.clientID, "command_id", cmds[i].ID, "err", err)
				}
			}
		case <-heartbeat.C:
			if st.write([]byte(": heartbeat\n\n")) != nil {
				return
			}
		case <-recheck.C:
			_, err := st.s.authenticate(ctx, st.authorization, "")
			if coffer.IsKind(err, coffer.KindUnauthenticated) {
				st.write([]byte("event: unauthorized\ndata: {}\n\n"))
				return
			}
			if err != nil { // the store is unreachable: keep the stream, check again later
				st.s.log.Warn("recheck agent credential", "client_id", st.clientID, "err", err, "request_id", RequestID(ctx))
			}
		}
	}
}

func (st *agentStream) send(cmd *protocol.Command) error {
	data, err := json.Marshal(cmd)
	if err != nil {
		return err
	}
	return st.write(fmt.Appendf(nil, "event: command\nid: %s\ndata: %s\n\n", cmd.ID, data))
}

// write sends one chunk with a fresh write deadline (see stream.write).
func (st *agentStream) write(b []byte) error {
	st.rc.SetWriteDeadline(time.Now().Add(st.s.opts.WriteTimeout))
	if _, err := st.w.Write(b); err != nil {
		return err
	}
	return st.rc.Flush()
}
