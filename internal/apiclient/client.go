// Package apiclient is the Go client of Coffer's REST API as an enrolled
// agent uses it: the /api/v1/agent/... routes, with the request and
// response bodies of package protocol.
//
// Every failed call returns an error; one the server answered with its
// error envelope is an *Error carrying the stable code (errors.As).
// Idempotent calls (heartbeats, blob checks and uploads, progress, commit,
// reads) are retried on network errors and on 429, 502, 503 and 504 with
// exponential backoff and jitter, honouring Retry-After; a 4xx other than
// 429 is never retried, and neither are the calls that create something
// (Enroll, and StartBackup/StartRestore without an id).
package apiclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Options configure a Client.
type Options struct {
	// Server is the server's base URL, e.g. https://coffer.example.com
	// (a trailing /api/v1 is accepted).
	Server string
	// Credential is the agent credential (cfr_a_…) sent as a bearer token;
	// empty for Enroll.
	Credential string
	// HTTPClient sends the requests (default: a client with no overall
	// timeout, since the command stream lives for hours, that keeps
	// enough idle connections for parallel uploads).
	HTTPClient *http.Client
	// UserAgent is the User-Agent header (default "coffer-agent").
	UserAgent string
	// Retry bounds the retries of idempotent calls (zero fields: 5
	// attempts, waits from 0.5 s up to 8 s).
	Retry Retry
}

// Retry is a retry policy: up to Attempts tries, waiting a random time
// between half and all of Min, 2×Min, 4×Min … (at most Max) between them,
// or what the server's Retry-After asks (at most a minute).
type Retry struct {
	Attempts int
	Min, Max time.Duration
}

// The default retry policy.
const (
	defaultAttempts = 5
	defaultMinWait  = 500 * time.Millisecond
	defaultMaxWait  = 8 * time.Second
)

// Client calls the agent routes of one server. It is safe for concurrent use.
type Client struct {
	base  string // scheme://host[:port]/api/v1
	cred  string
	hc    *http.Client
	ua    string
	retry Retry

	mu          sync.Mutex
	lastEventID string // of the command stream, sent as Last-Event-ID on reconnect
}

// New returns a Client for opts.Server.
func New(opts Options) (*Client, error) {
	u, err := url.Parse(strings.TrimSpace(opts.Server))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("server URL %q: want http(s)://host[:port], e.g. https://coffer.example.com:8080", opts.Server)
	}
	base := strings.TrimSuffix(strings.TrimRight(u.Scheme+"://"+u.Host+u.Path, "/"), "/api/v1")
	c := &Client{base: base + "/api/v1", cred: opts.Credential, hc: opts.HTTPClient, ua: opts.UserAgent, retry: opts.Retry}
	if c.hc == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 16
		c.hc = &http.Client{Transport: t}
	}
	if c.ua == "" {
		c.ua = "coffer-agent"
	}
	if c.retry.Attempts <= 0 {
		c.retry.Attempts = defaultAttempts
	}
	if c.retry.Min <= 0 {
		c.retry.Min = defaultMinWait
	}
	if c.retry.Max <= 0 {
		c.retry.Max = defaultMaxWait
	}
	c.retry.Max = max(c.retry.Max, c.retry.Min)
	return c, nil
}

// Error is a non-2xx answer of the server. Code is the stable machine code
// of the error envelope ("missing_blobs", "backup_not_found"); it is empty
// when the answer was not the envelope (a proxy's error page, say).
type Error struct {
	Status        int
	Code          string
	Detail        string
	CorrelationID string
	Metadata      map[string]any
	op            string // what was asked, e.g. "POST /api/v1/agent/heartbeat"
}

// Error says what was refused and why, with the code.
func (e *Error) Error() string {
	if e.Code == "" {
		return fmt.Sprintf("%s: %s", e.op, e.Detail)
	}
	return fmt.Sprintf("server refused %s: %s (%s)", e.op, e.Detail, e.Code)
}

// IsCode reports whether err is an *Error with the given code.
func IsCode(err error, code string) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

// IsStatus reports whether err is an *Error with the given HTTP status.
func IsStatus(err error, status int) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == status
}

// request is one API call.
type request struct {
	method, path string
	query        url.Values
	body         []byte
	contentType  string
	accept       string
	noAuth       bool
	retry        bool
	header       http.Header
}

func (r *request) op() string { return r.method + " /api/v1" + r.path }

// maxJSONBody bounds a JSON response read into memory.
const maxJSONBody = 64 << 20

// callJSON sends in (nil: no body) as JSON and decodes the 2xx answer into
// out (nil: discard).
func (c *Client) callJSON(ctx context.Context, r request, in, out any) error {
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("%s: encode request: %w", r.op(), err)
		}
		r.body, r.contentType = b, "application/json"
	}
	return c.call(ctx, r, func(resp *http.Response) error {
		b, err := io.ReadAll(io.LimitReader(resp.Body, maxJSONBody))
		if err != nil {
			return &netError{fmt.Errorf("%s: read response: %w", r.op(), err)}
		}
		if out == nil {
			return nil
		}
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s: decode response: %w (the server may run an incompatible version)", r.op(), err)
		}
		return nil
	})
}

// netError marks a failure of the connection (retryable for idempotent calls).
type netError struct{ err error }

func (e *netError) Error() string { return e.err.Error() }
func (e *netError) Unwrap() error { return e.err }

// call sends r, retrying as its policy allows, and hands a 2xx response to
// handle, whose netError is retried like a failed connection.
func (c *Client) call(ctx context.Context, r request, handle func(*http.Response) error) error {
	for attempt := 1; ; attempt++ {
		resp, err := c.send(ctx, r)
		if err == nil {
			err = handle(resp)
			resp.Body.Close()
			if err == nil {
				return nil
			}
		}
		wait, ok := c.retryable(r, err, attempt)
		if !ok || ctx.Err() != nil {
			return unwrapNet(err)
		}
		if err := sleep(ctx, wait); err != nil {
			return unwrapNet(err)
		}
	}
}

// unwrapNet drops the netError marker so that callers see the cause.
func unwrapNet(err error) error {
	var ne *netError
	if errors.As(err, &ne) {
		return ne.err
	}
	return err
}

// retryable says whether a failed attempt may be repeated, and after how
// long.
func (c *Client) retryable(r request, err error, attempt int) (time.Duration, bool) {
	if !r.retry || attempt >= c.retry.Attempts {
		return 0, false
	}
	var ae *Error
	if errors.As(err, &ae) {
		switch ae.Status {
		case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		default:
			return 0, false
		}
		if d, ok := retryAfter(ae); ok {
			return d, true
		}
		return c.backoff(attempt), true
	}
	var ne *netError
	if errors.As(err, &ne) {
		return c.backoff(attempt), true
	}
	return 0, false
}

// backoff returns a random wait before attempt+1: full jitter over an
// exponentially growing bound, at least half of it so retries do spread out.
func (c *Client) backoff(attempt int) time.Duration {
	d := c.retry.Min << min(attempt-1, 20)
	if d > c.retry.Max || d <= 0 {
		d = c.retry.Max
	}
	return d/2 + rand.N(d/2+1)
}

// retryAfter reads the wait an error asks for: the Retry-After header (kept
// in metadata by send) or metadata.retry_after_seconds.
func retryAfter(e *Error) (time.Duration, bool) {
	var secs float64
	switch v := e.Metadata["retry_after_seconds"].(type) {
	case float64:
		secs = v
	case int:
		secs = float64(v)
	default:
		return 0, false
	}
	if secs < 0 {
		return 0, false
	}
	return min(time.Duration(secs*float64(time.Second)), time.Minute), true
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// send makes one attempt. A 2xx response is returned open; any other
// answer becomes an *Error, a failed connection a *netError.
func (c *Client) send(ctx context.Context, r request) (*http.Response, error) {
	u := c.base + r.path
	if len(r.query) > 0 {
		u += "?" + r.query.Encode()
	}
	var body io.Reader
	if r.body != nil {
		body = bytes.NewReader(r.body)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, u, body)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", r.op(), err)
	}
	for k, v := range r.header {
		req.Header[k] = v
	}
	if r.body != nil {
		req.Header.Set("Content-Type", r.contentType)
	}
	req.Header.Set("Accept", cmpOr(r.accept, "application/json"))
	req.Header.Set("User-Agent", c.ua)
	if !r.noAuth {
		if c.cred == "" {
			return nil, fmt.Errorf("%s: this client has no credential: enroll the agent first (coffer agent enroll)", r.op())
		}
		req.Header.Set("Authorization", "Bearer "+c.cred)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, &netError{fmt.Errorf("%s: %w", r.op(), err)}
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return resp, nil
	}
	defer resp.Body.Close()
	return nil, decodeError(r.op(), resp)
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// decodeError turns a non-2xx response into an *Error.
func decodeError(op string, resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	e := &Error{Status: resp.StatusCode, op: op, CorrelationID: resp.Header.Get("X-Request-Id")}
	var env struct {
		Code          string         `json:"code"`
		Detail        string         `json:"detail"`
		Metadata      map[string]any `json:"metadata"`
		CorrelationID string         `json:"correlation_id"`
	}
	if json.Unmarshal(b, &env) == nil && env.Code != "" {
		e.Code, e.Detail, e.Metadata = env.Code, env.Detail, env.Metadata
		if env.CorrelationID != "" {
			e.CorrelationID = env.CorrelationID
		}
	} else {
		snippet := strings.Join(strings.Fields(string(b[:min(len(b), 200)])), " ")
		if snippet == "" {
			snippet = "empty body"
		}
		e.Detail = fmt.Sprintf("the server answered %s with something other than Coffer's error envelope (is a proxy in the way, or is the URL wrong?): %s",
			resp.Status, snippet)
	}
	if s := resp.Header.Get("Retry-After"); s != "" {
		if secs, err := strconv.Atoi(strings.TrimSpace(s)); err == nil {
			if e.Metadata == nil {
				e.Metadata = map[string]any{}
			}
			e.Metadata["retry_after_seconds"] = float64(secs)
		} else if t, err := http.ParseTime(s); err == nil {
			if e.Metadata == nil {
				e.Metadata = map[string]any{}
			}
			e.Metadata["retry_after_seconds"] = max(0, time.Until(t).Seconds())
		}
	}
	return e
}
