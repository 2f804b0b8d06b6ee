package httpapi

import (
	"context"
	"net/http"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/server/auth"
	"github.com/danielgtaylor/huma/v2"
)

// User is an account on the wire. Password hashes never leave the server.
type User struct {
	ID                string     `json:"id"`
	Username          string     `json:"username"`
	Role              string     `json:"role" enum:"admin,operator,viewer"`
	Disabled          bool       `json:"disabled"`
	CreatedAt         time.Time  `json:"created_at"`
	UpdatedAt         time.Time  `json:"updated_at"`
	PasswordChangedAt time.Time  `json:"password_changed_at"`
	LastLoginAt       *time.Time `json:"last_login_at" nullable:"true" doc:"null until the first login."`
}

func toUser(u *coffer.User) User {
	return User{ID: u.ID, Username: u.Username, Role: string(u.Role), Disabled: u.Disabled,
		CreatedAt: u.CreatedAt, UpdatedAt: u.UpdatedAt, PasswordChangedAt: u.PasswordChangedAt, LastLoginAt: u.LastLoginAt}
}

// Credential describes how the caller authenticated.
type Credential struct {
	Kind        string   `json:"kind" enum:"session,api_token"`
	ID          string   `json:"id" doc:"The session or API token id (not its secret)."`
	Permissions []string `json:"permissions" doc:"What this credential may do: read, operate, manage."`
}

func (s *Server) registerAuth() {
	type loginIn struct {
		UserAgent string `header:"User-Agent"`
		Body      struct {
			Username string `json:"username" minLength:"1" maxLength:"64"`
			Password string `json:"password" minLength:"1" maxLength:"1024"`
		}
	}
	type loginOut struct {
		SetCookie    http.Cookie `header:"Set-Cookie"`
		CacheControl string      `header:"Cache-Control"`
		Body         struct {
			AccessToken string    `json:"access_token" doc:"Send as \"Authorization: Bearer <access_token>\"."`
			TokenType   string    `json:"token_type" enum:"bearer"`
			ExpiresAt   time.Time `json:"expires_at"`
		}
	}
	handle(s, Public, huma.Operation{
		OperationID: "login", Method: http.MethodPost, Path: "/api/v1/auth/login", Tags: []string{"auth"},
		Summary: "Log in",
		Description: "Exchanges a username and password for a bearer token; browsers also get an HttpOnly, SameSite=Lax session cookie. " +
			"Repeated failures for one username or from one address answer 429 with retry_after_seconds in the metadata.",
		Errors: []int{http.StatusUnauthorized, http.StatusForbidden, http.StatusTooManyRequests},
	}, func(ctx context.Context, in *loginIn) (*loginOut, error) {
		info := requestInfoFrom(ctx)
		res, err := s.opts.Auth.Login(ctx, auth.LoginRequest{Username: in.Body.Username, Password: in.Body.Password,
			RemoteIP: info.clientIP, UserAgent: in.UserAgent})
		if err != nil {
			return nil, err
		}
		info.setUser(res.User.Username)
		out := &loginOut{CacheControl: "no-store"}
		out.Body.AccessToken, out.Body.TokenType, out.Body.ExpiresAt = res.Token, "bearer", res.Session.ExpiresAt
		out.SetCookie = http.Cookie{Name: SessionCookie, Value: res.Token, Path: "/", Expires: res.Session.ExpiresAt,
			HttpOnly: true, Secure: info.https, SameSite: http.SameSiteLaxMode}
		return out, nil
	})

	type logoutOut struct {
		SetCookie http.Cookie `header:"Set-Cookie"`
		Body      CommandResult
	}
	handle(s, Read, huma.Operation{
		OperationID: "logout", Method: http.MethodPost, Path: "/api/v1/auth/logout", Tags: []string{"auth"},
		Summary: "Log out", Description: "Ends the session the request was authenticated with and clears the cookie.",
	}, func(ctx context.Context, _ *struct{}) (*logoutOut, error) {
		if err := s.opts.Auth.Logout(ctx, principalFrom(ctx)); err != nil {
			return nil, err
		}
		info := requestInfoFrom(ctx)
		return &logoutOut{
			SetCookie: http.Cookie{Name: SessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true,
				Secure: info.https, SameSite: http.SameSiteLaxMode},
			Body: CommandResult{Message: "Logged out.", Success: true},
		}, nil
	})

	type meOut struct {
		Body struct {
			User       User       `json:"user"`
			Credential Credential `json:"credential"`
		}
	}
	handle(s, Read, huma.Operation{
		OperationID: "me", Method: http.MethodGet, Path: "/api/v1/auth/me", Tags: []string{"auth"},
		Summary: "Who am I", Description: "The caller's account and what their credential may do.",
	}, func(ctx context.Context, _ *struct{}) (*meOut, error) {
		p := principalFrom(ctx)
		u, err := s.opts.Auth.GetUser(ctx, p.UserID)
		if err != nil {
			return nil, err
		}
		out := &meOut{}
		out.Body.User = toUser(u)
		out.Body.Credential = Credential{Kind: string(p.Kind), ID: p.CredentialID, Permissions: permStrings(p.Scopes)}
		return out, nil
	})
}

func permStrings(ps []coffer.Permission) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = string(p)
	}
	return out
}
