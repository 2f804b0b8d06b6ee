package agents

import (
	"context"
	"encoding/json"
	"fmt"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/protocol"
)

// pendingBatch is how many commands one fetch of a stream's queue returns.
const pendingBatch = 100

// Enqueue stores a command for clientID's agent and wakes the client's
// command streams on this replica (streams on other replicas find it
// within PollInterval). The command's ID is assigned here and returned; it
// is the id the agent sees. A command reaches an agent at least once: an
// agent with two open streams may see it twice.
func (s *Service) Enqueue(ctx context.Context, clientID string, cmd protocol.Command) (string, error) {
	payloads := map[string]bool{protocol.CommandBackup: cmd.Backup != nil, protocol.CommandRestore: cmd.Restore != nil,
		protocol.CommandListDir: cmd.ListDir != nil, protocol.CommandCancel: cmd.Cancel != nil}
	set := 0
	for _, ok := range payloads {
		if ok {
			set++
		}
	}
	if !payloads[cmd.Kind] || set != 1 {
		return "", fmt.Errorf("enqueue agent command: a %q command must carry exactly its own payload", cmd.Kind)
	}
	if _, err := s.store.GetClient(ctx, clientID); err != nil {
		return "", err
	}
	// The stored payload carries no id: the row's id is the command's, and
	// it is set on delivery (see Feed.Pending).
	cmd.ID = ""
	payload, err := json.Marshal(cmd)
	if err != nil {
		return "", fmt.Errorf("encode agent command: %w", err)
	}
	c := &coffer.AgentCommand{ClientID: clientID, Kind: cmd.Kind, Payload: payload}
	if err := s.store.EnqueueCommand(ctx, c); err != nil {
		return "", err
	}
	s.mu.Lock()
	for f := range s.feeds[clientID] {
		f.signal()
	}
	s.mu.Unlock()
	return c.ID, nil
}

// Feed is one open command stream of a client on this replica. C fires
// when the client may have new commands; the stream then calls Pending,
// writes what it gets, and reports each written command with Delivered.
type Feed struct {
	s        *Service
	clientID string
	c        chan struct{}
	gone     chan struct{}
	goneOnce sync.Once
	stop     chan struct{}
	done     chan struct{}
}

// Subscribe opens a command feed for clientID. C fires at once (commands
// queued while the agent was away), on every Enqueue for the client on
// this replica, and every PollInterval. Close it when the stream ends.
func (s *Service) Subscribe(clientID string) *Feed {
	f := &Feed{s: s, clientID: clientID, c: make(chan struct{}, 1), gone: make(chan struct{}),
		stop: make(chan struct{}), done: make(chan struct{})}
	f.signal()
	s.mu.Lock()
	if s.feeds[clientID] == nil {
		s.feeds[clientID] = map[*Feed]struct{}{}
	}
	s.feeds[clientID][f] = struct{}{}
	s.mu.Unlock()
	go f.poll(s.opts.PollInterval)
	return f
}

// poll wakes the feed periodically for commands other replicas enqueued.
func (f *Feed) poll(every time.Duration) {
	defer close(f.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-f.stop:
			return
		case <-t.C:
			f.signal()
		}
	}
}

func (f *Feed) signal() {
	select {
	case f.c <- struct{}{}:
	default:
	}
}

// C fires when the client may have undelivered commands.
func (f *Feed) C() <-chan struct{} { return f.c }

// Gone is closed when the client is deleted on this replica: the stream
// should end.
func (f *Feed) Gone() <-chan struct{} { return f.gone }

// Closing is closed when the server shuts down: the stream should end so
// that the agent reconnects elsewhere.
func (f *Feed) Closing() <-chan struct{} { return f.s.closing }

// Pending returns the client's undelivered commands, oldest first, each
// with its id set. A stored command that cannot be decoded is logged and
// marked delivered, so it cannot block the queue.
func (f *Feed) Pending(ctx context.Context) ([]protocol.Command, error) {
	rows, err := f.s.store.PendingCommands(ctx, f.clientID, pendingBatch)
	if err != nil {
		return nil, err
	}
	if len(rows) == pendingBatch {
		f.signal() // more are waiting: come back after these
	}
	cmds := make([]protocol.Command, 0, len(rows))
	for _, r := range rows {
		var cmd protocol.Command
		if err := json.Unmarshal(r.Payload, &cmd); err != nil {
			f.s.log.Error("undecodable agent command dropped", "client_id", f.clientID, "command_id", r.ID, "err", err)
			if err := f.s.store.MarkCommandDelivered(ctx, r.ID); err != nil {
				return nil, err
			}
			continue
		}
		cmd.ID = r.ID
		cmds = append(cmds, cmd)
	}
	return cmds, nil
}

// Delivered records that the command with id was written to the stream.
func (f *Feed) Delivered(ctx context.Context, id string) error {
	return f.s.store.MarkCommandDelivered(ctx, id)
}

// Close ends the feed and waits for its poller.
func (f *Feed) Close() {
	f.s.mu.Lock()
	delete(f.s.feeds[f.clientID], f)
	if len(f.s.feeds[f.clientID]) == 0 {
		delete(f.s.feeds, f.clientID)
	}
	f.s.mu.Unlock()
	close(f.stop)
	<-f.done
}

// ListDir asks clientID's agent, on behalf of p, for the entries of the
// directory dirPath (absolute) and waits for its answer at most timeout
// (0: the default). p must be allowed to act on the client
// (coffer.Principal.MayOperate: KindForbidden "client_not_owned" for an
// operator who does not own it). An offline client is KindConflict
// "agent_offline", no answer in time KindTimeout "agent_timeout", and a
// directory the agent could not list KindInvalid "path_not_listable".
func (s *Service) ListDir(ctx context.Context, p *coffer.Principal, clientID, dirPath string, timeout time.Duration) (*protocol.ListDirResult, error) {
	if timeout <= 0 {
		timeout = s.opts.ListDirTimeout
	}
	if !strings.HasPrefix(dirPath, "/") || len(dirPath) > 4096 || strings.ContainsRune(dirPath, 0) {
		return nil, invalidField("path", "path %q is not valid: give an absolute path such as /home", dirPath)
	}
	dirPath = path.Clean(dirPath)
	c, err := s.store.GetClient(ctx, clientID)
	if err != nil {
		return nil, err
	}
	if err := p.MayOperate(c); err != nil {
		return nil, err
	}
	if c.Status != coffer.ClientOnline {
		return nil, coffer.Errorf(coffer.KindConflict, "agent_offline",
			"the agent of %s is offline, so it cannot list directories: start `coffer agent run` on %s and try again",
			quote(c.Name), quote(c.Hostname)).With("client_id", c.ID)
	}

	// Register for the in-process wake-up before the agent can answer.
	// The id is not known until Enqueue returns, so the channel is
	// registered under it right after; an answer that arrives in between
	// is found by the first look at the store.
	id, err := s.Enqueue(ctx, clientID, protocol.Command{Kind: protocol.CommandListDir, ListDir: &protocol.ListDirCommand{Path: dirPath}})
	if err != nil {
		return nil, err
	}
	wake := make(chan struct{}, 1)
	s.mu.Lock()
	s.waiters[id] = wake
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.waiters, id)
		s.mu.Unlock()
	}()

	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	poll := time.NewTicker(s.opts.ResultPoll)
	defer poll.Stop()
	for {
		cmd, err := s.store.GetCommand(ctx, id)
		if err != nil {
			return nil, err
		}
		if cmd.CompletedAt != nil {
			return listResult(cmd, dirPath)
		}
		select {
		case <-ctx.Done():
			s.abandon(ctx, id)
			return nil, ctx.Err()
		case <-deadline.C:
			s.abandon(ctx, id)
			return nil, coffer.Errorf(coffer.KindTimeout, "agent_timeout",
				"the agent of %s did not answer within %s: it may be busy or its connection down; try again", quote(c.Name), timeout).
				With("client_id", c.ID)
		case <-wake:
		case <-poll.C:
		}
	}
}

// abandon keeps a listing nobody waits for any more from being delivered
// to an agent that connects later.
func (s *Service) abandon(ctx context.Context, id string) {
	if err := s.store.MarkCommandDelivered(context.WithoutCancel(ctx), id); err != nil {
		s.log.Debug("mark abandoned listing delivered", "command_id", id, "err", err)
	}
}

func listResult(cmd *coffer.AgentCommand, dirPath string) (*protocol.ListDirResult, error) {
	var res protocol.ListDirResult
	if err := json.Unmarshal(cmd.Result, &res); err != nil {
		return nil, fmt.Errorf("decode directory listing %s: %w", cmd.ID, err)
	}
	if res.Error != "" {
		return nil, coffer.Errorf(coffer.KindInvalid, "path_not_listable", "the agent could not list %q: %s", dirPath, res.Error).
			With("field", "path")
	}
	if res.Entries == nil {
		res.Entries = []protocol.DirEntry{}
	}
	if res.Path == "" {
		res.Path = dirPath
	}
	return &res, nil
}

// maxDirEntries bounds one directory listing.
const maxDirEntries = 100_000

// CompleteListDir records the answer of clientID's agent to the listing
// command requestID and wakes the request waiting for it on this replica.
// A command of another client is KindNotFound "command_not_found".
// Answering twice is harmless.
func (s *Service) CompleteListDir(ctx context.Context, clientID, requestID string, res protocol.ListDirResult) error {
	cmd, err := s.store.GetCommand(ctx, requestID)
	if err != nil {
		return err
	}
	if cmd.ClientID != clientID {
		return coffer.Errorf(coffer.KindNotFound, "command_not_found", "no command with id %q for this client", requestID)
	}
	if cmd.Kind != protocol.CommandListDir {
		return coffer.Errorf(coffer.KindConflict, "not_a_list_dir_command",
			"command %q is a %s command, not list_dir: post only directory listings here", requestID, cmd.Kind)
	}
	if len(res.Entries) > maxDirEntries {
		return coffer.Errorf(coffer.KindTooLarge, "too_many_entries", "a listing may hold at most %d entries, not %d",
			maxDirEntries, len(res.Entries))
	}
	data, err := json.Marshal(res)
	if err != nil {
		return fmt.Errorf("encode directory listing: %w", err)
	}
	if err := s.store.CompleteCommand(ctx, requestID, clientID, data); err != nil {
		return err
	}
	s.mu.Lock()
	if w, ok := s.waiters[requestID]; ok {
		select {
		case w <- struct{}{}:
		default:
		}
	}
	s.mu.Unlock()
	return nil
}
