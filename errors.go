// Package coffer holds Coffer's domain types and its error vocabulary.
//
// It imports only the standard library so that every other package — the
// storage engine, the server services, the HTTP layer, the agent — can share
// these names without depending on each other.
package coffer

import (
	"errors"
	"fmt"
)

// Kind classifies an error by what the caller can do about it. The HTTP layer
// maps each kind to one status code in a single table; nothing else in the
// code base knows about status codes.
type Kind string

// The error kinds. Their string values appear in logs only; clients see Code.
const (
	KindInvalid         Kind = "invalid"         // the request is malformed or a value is out of range
	KindUnauthenticated Kind = "unauthenticated" // no credential, or one that is wrong, expired or revoked
	KindForbidden       Kind = "forbidden"       // authenticated, but not allowed to do this
	KindNotFound        Kind = "not_found"       // the named thing does not exist (or is not visible)
	KindConflict        Kind = "conflict"        // the request clashes with the current state
	KindTooLarge        Kind = "too_large"       // a body or value exceeds a limit
	KindRateLimited     Kind = "rate_limited"    // too many attempts; retry later
	KindUnavailable     Kind = "unavailable"     // a dependency is down; retry later
	KindTimeout         Kind = "timeout"         // a dependency did not answer in time
	KindInternal        Kind = "internal"        // a bug or an unexpected failure
)

// Error is Coffer's error type. Code is a stable machine string clients may
// branch on ("user_not_found"); Detail is a sentence for a person that says
// what went wrong and, where possible, what to do. Meta carries structured
// context for the client (field names, limits). Err is the internal cause: it
// is logged, never sent to a client.
type Error struct {
	Kind   Kind
	Code   string
	Detail string
	Meta   map[string]any
	Err    error
}

// Errorf returns an *Error of the given kind and code with a formatted detail.
func Errorf(kind Kind, code, format string, args ...any) *Error {
	return &Error{Kind: kind, Code: code, Detail: fmt.Sprintf(format, args...)}
}

// Error returns the detail and, when set, the internal cause.
func (e *Error) Error() string {
	if e.Err != nil {
		return e.Detail + ": " + e.Err.Error()
	}
	return e.Detail
}

// Unwrap returns the internal cause.
func (e *Error) Unwrap() error { return e.Err }

// With returns a copy of e with key set to value in its metadata.
func (e *Error) With(key string, value any) *Error {
	c := *e
	c.Meta = make(map[string]any, len(e.Meta)+1)
	for k, v := range e.Meta {
		c.Meta[k] = v
	}
	c.Meta[key] = value
	return &c
}

// Wrap returns a copy of e with cause as its internal cause.
func (e *Error) Wrap(cause error) *Error {
	c := *e
	c.Err = cause
	return &c
}

// ErrorKind returns the kind of the first *Error in err's chain, KindInternal
// for any other non-nil error, and "" for nil.
func ErrorKind(err error) Kind {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return KindInternal
}

// ErrorCode returns the code of the first *Error in err's chain, "internal"
// for any other non-nil error, and "" for nil.
func ErrorCode(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return "internal"
}

// IsKind reports whether err carries an *Error of kind k.
func IsKind(err error, k Kind) bool {
	return err != nil && ErrorKind(err) == k
}
