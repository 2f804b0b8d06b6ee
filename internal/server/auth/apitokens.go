package auth

import (
	"context"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cofferhq/coffer"
)

// NewToken is what CreateToken needs. Scopes default to everything the
// creating credential holds; ExpiresAt nil means the token never expires.
type NewToken struct {
	Name      string
	Scopes    []coffer.Permission
	ExpiresAt *time.Time
}

// CreateToken issues an API token to the actor and returns its secret,
// which is never retrievable again. A token can hold no scope the
// credential creating it lacks.
func (s *Service) CreateToken(ctx context.Context, actor *coffer.Principal, in NewToken) (string, *coffer.APIToken, error) {
	name := strings.TrimSpace(in.Name)
	if name == "" || utf8.RuneCountInString(name) > 100 {
		return "", nil, invalidField("name", "give the token a name of 1 to 100 characters")
	}
	scopes := in.Scopes
	if len(scopes) == 0 {
		scopes = actor.Scopes
	}
	for _, p := range scopes {
		if !p.Valid() {
			return "", nil, invalidField("scopes", "scope %q is not valid: use read, operate or manage", p)
		}
		if !actor.Can(p) {
			return "", nil, coffer.Errorf(coffer.KindForbidden, "scope_not_held",
				"you cannot create a token with scope %q: your credential does not hold it", p).With("field", "scopes")
		}
	}
	scopes = intersect(coffer.Permissions, scopes) // canonical order, no repeats
	if in.ExpiresAt != nil && !in.ExpiresAt.After(s.now()) {
		return "", nil, invalidField("expires_at", "expires_at must be in the future")
	}
	secret, hash := NewSecret(PrefixAPIToken)
	tok := &coffer.APIToken{UserID: actor.UserID, Name: name, Prefix: displayPrefix(secret), TokenHash: hash,
		Scopes: scopes, ExpiresAt: in.ExpiresAt}
	if err := s.store.CreateAPIToken(ctx, tok); err != nil {
		return "", nil, err
	}
	s.audit(ctx, actor, &coffer.Event{Level: coffer.LevelInfo, Code: "token.created", Title: "API token created",
		Message:  fmt.Sprintf("%s created the API token %s with scopes %s.", actor.Username, quote(tok.Name), joinScopes(tok.Scopes)),
		Resource: tokenRef(tok), Audience: coffer.RoleAdmin, UserID: tok.UserID})
	return secret, tok, nil
}

// ListTokens returns the actor's tokens, or with all=true (admins only)
// every user's.
func (s *Service) ListTokens(ctx context.Context, actor *coffer.Principal, all bool) ([]coffer.APIToken, error) {
	if all {
		if !actor.Can(coffer.PermManage) {
			return nil, coffer.Errorf(coffer.KindForbidden, "forbidden", "only an admin may list every user's tokens")
		}
		return s.store.ListAPITokens(ctx, "")
	}
	return s.store.ListAPITokens(ctx, actor.UserID)
}

// RevokeToken deletes a token. Users revoke their own; admins anyone's.
// Someone else's token is reported as not found to non-admins.
func (s *Service) RevokeToken(ctx context.Context, actor *coffer.Principal, id string) error {
	tok, err := s.store.GetAPIToken(ctx, id)
	if err != nil {
		return err
	}
	if tok.UserID != actor.UserID && !actor.Can(coffer.PermManage) {
		return coffer.Errorf(coffer.KindNotFound, "token_not_found", "no API token with id %q", id)
	}
	if err := s.store.DeleteAPIToken(ctx, id); err != nil {
		return err
	}
	s.audit(ctx, actor, &coffer.Event{Level: coffer.LevelInfo, Code: "token.revoked", Title: "API token revoked",
		Message:  fmt.Sprintf("%s revoked the API token %s.", actor.Username, quote(tok.Name)),
		Resource: tokenRef(tok), Audience: coffer.RoleAdmin, UserID: tok.UserID})
	return nil
}

func tokenRef(t *coffer.APIToken) coffer.ResourceRef {
	return coffer.ResourceRef{Type: "api_token", ID: t.ID}
}

func joinScopes(ps []coffer.Permission) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = string(p)
	}
	return strings.Join(s, ", ")
}
