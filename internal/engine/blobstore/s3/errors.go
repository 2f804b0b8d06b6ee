package s3

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"

	"github.com/minio/minio-go/v7"

	"github.com/cofferhq/coffer/internal/engine/blobstore"
)

// transientCode reports whether an S3 error code says the request may
// succeed later. 5xx, 408 and 429 are transient whatever their code.
func transientCode(code string) bool {
	switch code {
	case "RequestTimeout", "SlowDown", "SlowDownRead", "SlowDownWrite",
		"Throttling", "ThrottlingException", "RequestLimitExceeded", "RequestThrottled",
		"InternalError", "ServiceUnavailable", "OperationAborted",
		"ConditionalRequestConflict": // a concurrent conditional write: retry, then 412
		return true
	}
	return false
}

// accessCode reports whether an S3 error code means the credentials or
// their permissions are wrong.
func accessCode(code string) bool {
	switch code {
	case "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken",
		"ExpiredToken", "AllAccessDisabled", "AccountProblem", "InvalidSecurity",
		"AuthorizationHeaderMalformed",
		"XAdminUserNotFound": // Versity Gateway's unknown access key, with status 404
		return true
	}
	return false
}

// objectError wraps err from operation op on object name: the message names
// both and the backend's location, the blobstore sentinels match, and
// retryable failures are marked Transient.
func (b *Backend) objectError(op, name string, err error) error {
	cause, transient := b.classify(err)
	err = fmt.Errorf("%s %s at %s: %w", op, name, b.location, cause)
	if transient {
		return blobstore.Transient(err)
	}
	return err
}

// setupError explains why New's check failed.
func (b *Backend) setupError(err error) error {
	cause, transient := b.classify(err)
	switch {
	case errors.As(cause, new(*configError)):
		return cause
	case transient && isNetwork(err):
		return blobstore.Transient(fmt.Errorf("s3: cannot reach %s: %w", b.endpoint, err))
	case transient:
		return blobstore.Transient(fmt.Errorf("s3: check bucket %s at %s: %w", b.bucket, b.endpoint, cause))
	}
	return fmt.Errorf("s3: check bucket %s at %s: %w", b.bucket, b.endpoint, cause)
}

// classify turns a minio-go or transport error into the error to wrap —
// a blobstore or package sentinel where one applies — and whether it is
// worth retrying.
func (b *Backend) classify(err error) (error, bool) {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err, false // the caller gave up; nothing to retry
	}
	if errors.Is(err, errSize) {
		return err, false
	}
	var resp minio.ErrorResponse
	if errors.As(err, &resp) && (resp.StatusCode != 0 || resp.Code != "") {
		return b.classifyResponse(resp)
	}
	if isTLSProblem(err) {
		return b.tlsError(err), false
	}
	if isNetwork(err) {
		return err, true
	}
	return err, false
}

func (b *Backend) classifyResponse(resp minio.ErrorResponse) (error, bool) {
	status := resp.StatusCode
	switch {
	case resp.Code == "NoSuchBucket":
		return configErrorf(ErrNoSuchBucket, "s3: bucket %s does not exist at %s: create it or fix the name", b.bucket, b.endpoint), false
	case accessCode(resp.Code):
		return b.accessDenied(resp), false
	case resp.Code == "NoSuchKey" || (status == http.StatusNotFound && resp.Code == "404 Not Found"):
		return blobstore.ErrNotFound, false
	case resp.Code == "NoSuchUpload":
		// Someone aborted this multipart upload (a lifecycle rule, a
		// cleanup); a new one may well succeed.
		return errors.New(describe(resp)), true
	case status == http.StatusPreconditionFailed || resp.Code == "PreconditionFailed":
		return blobstore.ErrExists, false
	case status == http.StatusRequestedRangeNotSatisfiable || resp.Code == "InvalidRange":
		return blobstore.ErrRange, false
	case status == http.StatusBadRequest && strings.Contains(resp.Message, "HTTP request to an HTTPS server"):
		return configErrorf(nil, "s3: TLS mismatch at %s: the server expects https; turn TLS on or fix the port", b.endpoint), false
	case status == http.StatusForbidden:
		return b.accessDenied(resp), false
	case transientCode(resp.Code) || status >= 500 || status == http.StatusRequestTimeout || status == http.StatusTooManyRequests:
		return errors.New(describe(resp)), true
	}
	return errors.New(describe(resp)), false
}

func (b *Backend) accessDenied(resp minio.ErrorResponse) error {
	return configErrorf(ErrAccessDenied, "s3: access denied for bucket %s at endpoint %s: check the access key and secret (%s)",
		b.bucket, b.endpoint, describe(resp))
}

// describe renders a server error as "HTTP 503 SlowDown Please reduce
// your request rate.", leaving out what minio-go fills in from the status
// line when the answer had no error document.
func describe(resp minio.ErrorResponse) string {
	var s []string
	status := strconv.Itoa(resp.StatusCode)
	if resp.StatusCode != 0 { // 0: minio-go refused the request itself
		s = append(s, "HTTP "+status)
	}
	if resp.Code != "" && !strings.HasPrefix(resp.Code, status) {
		s = append(s, resp.Code)
	} else if text := http.StatusText(resp.StatusCode); text != "" {
		s = append(s, text)
	}
	msg := strings.TrimSpace(resp.Message)
	if len(msg) > 200 {
		msg = msg[:200] + "…"
	}
	if msg != "" && !strings.HasPrefix(msg, status) {
		s = append(s, msg)
	}
	return strings.Join(s, " ")
}

// isNetwork reports whether err is a failure to talk to the server at all,
// or a connection that broke midway.
func isNetwork(err error) bool {
	var netErr net.Error
	return errors.As(err, &netErr) ||
		errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ECONNABORTED) ||
		errors.Is(err, syscall.EPIPE)
}

// isTLSProblem reports whether err is a TLS mismatch or an untrusted
// certificate: configuration, not weather.
func isTLSProblem(err error) bool {
	var (
		unknownAuthority x509.UnknownAuthorityError
		hostname         x509.HostnameError
		invalid          x509.CertificateInvalidError
		record           tls.RecordHeaderError
		verify           *tls.CertificateVerificationError
	)
	return errors.As(err, &unknownAuthority) || errors.As(err, &hostname) ||
		errors.As(err, &invalid) || errors.As(err, &record) || errors.As(err, &verify) ||
		strings.Contains(err.Error(), "server gave HTTP response to HTTPS client")
}

func (b *Backend) tlsError(err error) error {
	var record tls.RecordHeaderError
	if errors.As(err, &record) || strings.Contains(err.Error(), "server gave HTTP response to HTTPS client") {
		return configErrorf(err, "s3: TLS mismatch at %s: the server speaks plain HTTP; turn TLS off or fix the port (%v)", b.endpoint, err)
	}
	return configErrorf(err, "s3: TLS certificate of %s is not trusted: give the CA that signed it, or fix the host name (%v)", b.endpoint, err)
}

// configError is a failure only a change of configuration or of the server
// fixes; its message says which and what to do.
type configError struct {
	msg  string
	kind error // ErrAccessDenied, ErrNoSuchBucket, the TLS error, or nil
}

func configErrorf(kind error, format string, args ...any) error {
	return &configError{msg: fmt.Sprintf(format, args...), kind: kind}
}

func (e *configError) Error() string { return e.msg }
func (e *configError) Unwrap() error { return e.kind }
