package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"github.com/cofferhq/coffer"
	"github.com/danielgtaylor/huma/v2"
)

// statusOf is the one table from error kinds to HTTP status codes.
var statusOf = map[coffer.Kind]int{
	coffer.KindInvalid:         http.StatusBadRequest,
	coffer.KindUnauthenticated: http.StatusUnauthorized,
	coffer.KindForbidden:       http.StatusForbidden,
	coffer.KindNotFound:        http.StatusNotFound,
	coffer.KindConflict:        http.StatusConflict,
	coffer.KindTooLarge:        http.StatusRequestEntityTooLarge,
	coffer.KindRateLimited:     http.StatusTooManyRequests,
	coffer.KindUnavailable:     http.StatusServiceUnavailable,
	coffer.KindTimeout:         http.StatusGatewayTimeout,
	coffer.KindInternal:        http.StatusInternalServerError,
}

// codeOfStatus names errors that arise in the HTTP machinery itself
// (routing, body parsing) rather than in a service.
var codeOfStatus = map[int]string{
	http.StatusBadRequest:            "invalid_request",
	http.StatusUnauthorized:          "authentication_required",
	http.StatusForbidden:             "forbidden",
	http.StatusNotFound:              "not_found",
	http.StatusMethodNotAllowed:      "method_not_allowed",
	http.StatusNotAcceptable:         "not_acceptable",
	http.StatusRequestEntityTooLarge: "request_too_large",
	http.StatusUnsupportedMediaType:  "unsupported_media_type",
	http.StatusUnprocessableEntity:   "invalid_request",
	http.StatusInternalServerError:   "internal_error",
}

const internalDetail = "an unexpected error occurred on the server; it has been logged — quote the correlation_id when reporting it"

// APIError is the error envelope every non-2xx response carries.
type APIError struct {
	Code          string         `json:"code" doc:"Stable machine-readable error code, e.g. user_not_found." example:"user_not_found"`
	Detail        string         `json:"detail" doc:"A sentence for a person: what went wrong and what to do." example:"no user with id \"01J…\""`
	Metadata      map[string]any `json:"metadata" doc:"Structured context: the fields that failed validation, limits, retry_after_seconds."`
	CorrelationID string         `json:"correlation_id" doc:"The request id; also the X-Request-Id header and in the server log line."`
	status        int
}

// Error implements error.
func (e *APIError) Error() string { return e.Code + ": " + e.Detail }

// GetStatus implements huma.StatusError.
func (e *APIError) GetStatus() int { return e.status }

// FieldError is one entry of metadata.fields in a validation error.
type FieldError struct {
	Location string `json:"location"`
	Message  string `json:"message"`
}

// installErrorHook makes huma build Coffer's envelope for every error it
// writes: validation, body limits, content negotiation, and whatever a
// handler returns. huma keeps this hook in package variables; the hook
// holds no per-server state, so installing it once serves every Server.
var installErrorHook = sync.OnceFunc(func() {
	huma.NewErrorWithContext = func(hctx huma.Context, status int, msg string, errs ...error) huma.StatusError {
		var ctx context.Context
		if hctx != nil {
			ctx = hctx.Context()
		}
		e := toAPIError(ctx, status, msg, errs...)
		if hctx != nil {
			setErrorHeaders(hctx.SetHeader, e)
		}
		return e
	}
	huma.NewError = func(status int, msg string, errs ...error) huma.StatusError {
		return toAPIError(nil, status, msg, errs...)
	}
})

// toAPIError converts what huma or a handler produced into the envelope. A
// *coffer.Error anywhere in errs decides code, status and detail; huma's
// own validation details become metadata.fields.
func toAPIError(ctx context.Context, status int, msg string, errs ...error) *APIError {
	info := requestInfoFrom(ctx)
	e := &APIError{Metadata: map[string]any{}}
	if info != nil {
		e.CorrelationID = info.id
	}
	for _, err := range errs {
		var ce *coffer.Error
		if errors.As(err, &ce) {
			fillFromCoffer(e, ce)
			if e.status == http.StatusInternalServerError && info != nil {
				info.setErr(err)
			}
			return e
		}
		var ae *APIError
		if errors.As(err, &ae) {
			c := *ae
			c.CorrelationID = e.CorrelationID
			return &c
		}
	}

	e.status = status
	if status == http.StatusUnprocessableEntity {
		e.status = http.StatusBadRequest // Coffer reports every invalid input as 400
	}
	e.Code = codeOfStatus[status]
	if e.Code == "" {
		e.Code = strings.ToLower(strings.ReplaceAll(http.StatusText(status), " ", "_"))
	}
	var fields []FieldError
	var plain []string
	for _, err := range errs {
		var d *huma.ErrorDetail
		if errors.As(err, &d) && d.Location != "" {
			fields = append(fields, FieldError{Location: fieldLocation(d), Message: d.Message})
		} else if err != nil {
			plain = append(plain, err.Error())
		}
	}
	switch {
	case status >= 500:
		if info != nil && len(errs) > 0 {
			info.setErr(errors.Join(errs...))
		}
		e.Detail = internalDetail
	case len(fields) > 0:
		e.Metadata["fields"] = fields
		e.Detail = fmt.Sprintf("the request is not valid: %s: %s", fields[0].Location, fields[0].Message)
		if len(fields) > 1 {
			e.Detail += fmt.Sprintf(" (and %d more problems, listed in metadata.fields)", len(fields)-1)
		}
	case status == http.StatusRequestEntityTooLarge:
		e.Detail = "the request body is too large"
		if info != nil && info.maxBody > 0 {
			e.Metadata["limit_bytes"] = info.maxBody
			e.Detail += fmt.Sprintf(": the limit is %d bytes", info.maxBody)
		}
	default:
		e.Detail = msg
		if len(plain) > 0 {
			e.Detail += ": " + strings.Join(plain, "; ")
		}
	}
	return e
}

// requiredProperty matches huma's message for a missing property, which it
// reports at the enclosing object's location.
var requiredProperty = regexp.MustCompile(`^expected required property (\S+) to be present$`)

// fieldLocation points a validation error at the field itself.
func fieldLocation(d *huma.ErrorDetail) string {
	if m := requiredProperty.FindStringSubmatch(d.Message); m != nil {
		return d.Location + "." + m[1]
	}
	return d.Location
}

func fillFromCoffer(e *APIError, ce *coffer.Error) {
	e.status = statusOf[ce.Kind]
	if e.status == 0 {
		e.status = http.StatusInternalServerError
	}
	e.Code, e.Detail = ce.Code, ce.Detail
	for k, v := range ce.Meta {
		e.Metadata[k] = v
	}
	if e.status >= 500 && ce.Kind == coffer.KindInternal {
		e.Code, e.Detail, e.Metadata = "internal_error", internalDetail, map[string]any{}
	}
}

// setErrorHeaders adds the headers some errors call for.
func setErrorHeaders(set func(name, value string), e *APIError) {
	switch e.status {
	case http.StatusUnauthorized:
		set("WWW-Authenticate", `Bearer realm="coffer"`)
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		if s, ok := e.Metadata["retry_after_seconds"].(int); ok {
			set("Retry-After", strconv.Itoa(s))
		}
	}
}

// writeError writes an error envelope outside huma (routing, panics,
// cross-origin refusals).
func writeError(w http.ResponseWriter, r *http.Request, err error) {
	e := toAPIError(r.Context(), http.StatusInternalServerError, "", err)
	setErrorHeaders(w.Header().Set, e)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(e.status)
	json.NewEncoder(w).Encode(e)
}
