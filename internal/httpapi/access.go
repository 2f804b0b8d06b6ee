package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/protocol"
	"github.com/danielgtaylor/huma/v2"
)

// Access is what a route requires of its caller: nothing (public), or one
// permission. Every route declares it where it is registered — the one
// place authorization by role happens.
type Access struct {
	public bool
	perm   coffer.Permission
}

// The access levels.
var (
	// Public routes: login, liveness and readiness probes, API discovery
	// and the API description. They expose no data.
	Public = Access{public: true}
	// Read routes may be used by every role.
	Read = Access{perm: coffer.PermRead}
	// Operate routes run backups, restores and enrollments.
	Operate = Access{perm: coffer.PermOperate}
	// Manage routes change users, storage and server settings.
	Manage = Access{perm: coffer.PermManage}
	// Agent routes (/api/v1/agent/...) serve enrolled agents only, each
	// with its own client's data; no user credential reaches them.
	Agent = Access{perm: coffer.PermAgent}
)

// SessionCookie is the name of the browser session cookie.
const SessionCookie = "coffer_session"

type principalKey struct{}

// principalFrom returns the authenticated caller; routes that are not
// Public always have one.
func principalFrom(ctx context.Context) *coffer.Principal {
	p, _ := ctx.Value(principalKey{}).(*coffer.Principal)
	return p
}

// handle registers one operation with its access rule, Coffer's defaults
// (body limit, documented errors, security requirements) and the
// authorization middleware.
func handle[I, O any](s *Server, access Access, op huma.Operation, h func(context.Context, *I) (*O, error)) {
	if op.MaxBodyBytes == 0 {
		op.MaxBodyBytes = s.opts.MaxBodyBytes
	}
	op.Errors = append(op.Errors, http.StatusBadRequest, http.StatusInternalServerError)
	if !access.public {
		op.Security = []map[string][]string{{"bearer": {}}, {"session_cookie": {}}}
		if access.perm == coffer.PermAgent {
			op.Security = []map[string][]string{{"agent_credential": {}}}
		}
		op.Errors = append(op.Errors, http.StatusUnauthorized, http.StatusForbidden)
		if op.Extensions == nil {
			op.Extensions = map[string]any{}
		}
		op.Extensions["x-coffer-permission"] = string(access.perm)
		op.Description = strings.TrimSpace(op.Description + "\n\nRequires the `" + string(access.perm) + "` permission.")
	}
	maxBody := op.MaxBodyBytes
	op.Middlewares = append(huma.Middlewares{func(ctx huma.Context, next func(huma.Context)) {
		if info := requestInfoFrom(ctx.Context()); info != nil {
			info.maxBody = maxBody
		}
		s.authorize(access, ctx, next)
	}}, op.Middlewares...)
	huma.Register(s.api, op, h)
}

// authorize authenticates the caller from the Authorization header or the
// session cookie and checks the route's permission.
func (s *Server) authorize(access Access, ctx huma.Context, next func(huma.Context)) {
	if access.public {
		next(ctx)
		return
	}
	p, err := s.authenticate(ctx.Context(), ctx.Header("Authorization"), cookieValue(ctx, SessionCookie))
	if err != nil {
		huma.WriteErr(s.api, ctx, http.StatusUnauthorized, "", err)
		return
	}
	if info := requestInfoFrom(ctx.Context()); info != nil {
		info.setUser(p.Username)
	}
	if !p.Can(access.perm) {
		detail := fmt.Sprintf("this needs the %q permission, which your credential (role %s) does not hold", access.perm, p.Role)
		if p.Kind == coffer.PrincipalAgent || access.perm == coffer.PermAgent {
			detail = "agent credentials reach only /api/v1/agent/... routes, and only agents reach those"
		}
		huma.WriteErr(s.api, ctx, http.StatusForbidden, "", coffer.Errorf(coffer.KindForbidden, "forbidden", "%s", detail).
			With("required_permission", string(access.perm)))
		return
	}
	next(huma.WithValue(ctx, principalKey{}, p))
}

// authenticate resolves the credential of a request. A bearer token wins
// over a cookie.
func (s *Server) authenticate(ctx context.Context, authorization, cookie string) (*coffer.Principal, error) {
	secret := cookie
	if authorization != "" {
		scheme, token, ok := strings.Cut(authorization, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
			return nil, coffer.Errorf(coffer.KindUnauthenticated, "invalid_authorization_header",
				"the Authorization header must be \"Bearer <token>\"")
		}
		secret = strings.TrimSpace(token)
	}
	if secret == "" {
		return nil, coffer.Errorf(coffer.KindUnauthenticated, "authentication_required",
			"log in first: send \"Authorization: Bearer <token>\" with a token from POST /api/v1/auth/login or an API token")
	}
	if strings.HasPrefix(secret, protocol.CredentialPrefix) {
		if s.opts.Agents == nil {
			return nil, coffer.Errorf(coffer.KindUnauthenticated, "invalid_token", "agent credentials are not accepted by this server")
		}
		return s.opts.Agents.Authenticate(ctx, secret)
	}
	return s.opts.Auth.Authenticate(ctx, secret)
}

func cookieValue(ctx huma.Context, name string) string {
	header := ctx.Header("Cookie")
	if header == "" {
		return ""
	}
	cookies, err := http.ParseCookie(header)
	if err != nil {
		return ""
	}
	for _, c := range cookies {
		if c.Name == name {
			return c.Value
		}
	}
	return ""
}
