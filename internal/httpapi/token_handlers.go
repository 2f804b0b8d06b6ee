package httpapi

import (
	"context"
	"net/http"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/server/auth"
	"github.com/danielgtaylor/huma/v2"
)

// APIToken is a personal access token on the wire, without its secret.
type APIToken struct {
	ID         string     `json:"id"`
	UserID     string     `json:"user_id"`
	Name       string     `json:"name"`
	Prefix     string     `json:"prefix" doc:"The first characters of the secret, to recognise it."`
	Scopes     []string   `json:"scopes" doc:"read, operate, manage — never more than the owner's role grants."`
	CreatedAt  time.Time  `json:"created_at"`
	ExpiresAt  *time.Time `json:"expires_at" nullable:"true" doc:"null: never expires."`
	LastUsedAt *time.Time `json:"last_used_at" nullable:"true"`
	Expired    bool       `json:"expired"`
}

func (s *Server) toToken(t *coffer.APIToken) APIToken {
	return APIToken{ID: t.ID, UserID: t.UserID, Name: t.Name, Prefix: t.Prefix, Scopes: permStrings(t.Scopes),
		CreatedAt: t.CreatedAt, ExpiresAt: t.ExpiresAt, LastUsedAt: t.LastUsedAt,
		Expired: t.ExpiresAt != nil && !s.opts.Now().Before(*t.ExpiresAt)}
}

func (s *Server) registerTokens() {
	tags := []string{"tokens"}
	type tokenListIn struct {
		All bool `query:"all" doc:"Every user's tokens (admins only)."`
	}
	handle(s, Read, huma.Operation{
		OperationID: "list-tokens", Method: http.MethodGet, Path: "/api/v1/tokens", Tags: tags,
		Summary: "List API tokens", Description: "Your API tokens, newest first (secrets are never shown again).",
	}, func(ctx context.Context, in *tokenListIn) (*struct{ Body Collection[APIToken] }, error) {
		toks, err := s.opts.Auth.ListTokens(ctx, principalFrom(ctx), in.All)
		if err != nil {
			return nil, err
		}
		items := make([]APIToken, len(toks))
		for i := range toks {
			items[i] = s.toToken(&toks[i])
		}
		return &struct{ Body Collection[APIToken] }{Collection[APIToken]{Items: items, Total: len(items)}}, nil
	})

	type tokenCreateIn struct {
		Body struct {
			Name      string     `json:"name" minLength:"1" maxLength:"100"`
			Scopes    []string   `json:"scopes,omitempty" maxItems:"3" uniqueItems:"true" doc:"Default: everything your credential holds." items.enum:"read,operate,manage"`
			ExpiresAt *time.Time `json:"expires_at,omitempty" doc:"Default: never."`
		}
	}
	type tokenCreateOut struct {
		CacheControl string `header:"Cache-Control"`
		Body         struct {
			Token  APIToken `json:"token"`
			Secret string   `json:"secret" doc:"The token itself (cfr_t_…). Shown only in this response: store it now."`
		}
	}
	handle(s, Read, huma.Operation{
		OperationID: "create-token", Method: http.MethodPost, Path: "/api/v1/tokens", Tags: tags,
		Summary: "Create an API token", Description: "Issues a personal access token for scripts. Its secret is returned once.",
		DefaultStatus: http.StatusCreated, Errors: []int{http.StatusConflict},
	}, func(ctx context.Context, in *tokenCreateIn) (*tokenCreateOut, error) {
		nt := auth.NewToken{Name: in.Body.Name, ExpiresAt: in.Body.ExpiresAt}
		for _, sc := range in.Body.Scopes {
			nt.Scopes = append(nt.Scopes, coffer.Permission(sc))
		}
		secret, tok, err := s.opts.Auth.CreateToken(ctx, principalFrom(ctx), nt)
		if err != nil {
			return nil, err
		}
		out := &tokenCreateOut{CacheControl: "no-store"}
		out.Body.Token, out.Body.Secret = s.toToken(tok), secret
		return out, nil
	})

	type tokenRevokeIn struct {
		ID string `path:"id" maxLength:"64"`
	}
	handle(s, Read, huma.Operation{
		OperationID: "revoke-token", Method: http.MethodDelete, Path: "/api/v1/tokens/{id}", Tags: tags,
		Summary: "Revoke an API token", Description: "Your own tokens; admins may revoke anyone's.",
		Errors: []int{http.StatusNotFound},
	}, func(ctx context.Context, in *tokenRevokeIn) (*struct{ Body CommandResult }, error) {
		if err := s.opts.Auth.RevokeToken(ctx, principalFrom(ctx), in.ID); err != nil {
			return nil, err
		}
		return &struct{ Body CommandResult }{CommandResult{Message: "API token revoked.", Success: true, ID: in.ID}}, nil
	})
}
