package auth

import (
	"context"
	"math"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
)

// LoginRequest is one login attempt.
type LoginRequest struct {
	Username  string
	Password  string
	RemoteIP  string
	UserAgent string
}

// LoginResult is a successful login: Token is the session secret, shown
// to the client once.
type LoginResult struct {
	Token   string
	Session *coffer.Session
	User    *coffer.User
}

var errBadCredentials = coffer.Errorf(coffer.KindUnauthenticated, "invalid_credentials",
	"wrong username or password")

// Login checks a username and password and opens a session. Repeated
// failures for one username or from one address are refused with
// "too_many_login_attempts" and retry_after_seconds in the metadata.
func (s *Service) Login(ctx context.Context, req LoginRequest) (*LoginResult, error) {
	now := s.now()
	userKey := strings.ToLower(req.Username)
	if wait := max(s.userLimit.wait(userKey, now), s.ipLimit.wait(req.RemoteIP, now)); wait > 0 {
		secs := int(math.Ceil(wait.Seconds()))
		return nil, coffer.Errorf(coffer.KindRateLimited, "too_many_login_attempts",
			"too many failed logins: wait %d seconds before trying again", secs).With("retry_after_seconds", secs)
	}

	u, err := s.store.GetUserByUsername(ctx, req.Username)
	if err != nil && !coffer.IsKind(err, coffer.KindNotFound) {
		return nil, err
	}
	hash := dummyHash
	if u != nil {
		hash = u.PasswordHash
	}
	var ok, rehash bool
	var verr error
	if err := s.hash(ctx, func() { ok, rehash, verr = verifyPassword(hash, req.Password) }); err != nil {
		return nil, err
	}
	if verr != nil && u != nil {
		s.log.Error("stored password hash is unreadable", "user_id", u.ID, "err", verr)
	}
	if u == nil || !ok {
		s.userLimit.fail(userKey, now)
		s.ipLimit.fail(req.RemoteIP, now)
		e := &coffer.Event{Level: coffer.LevelWarning, Code: "auth.login_failed", Title: "Failed login",
			Message:  "Wrong password for " + quote(req.Username) + " from " + req.RemoteIP + ".",
			Audience: coffer.RoleAdmin}
		if u != nil {
			e.Resource, e.UserID = userRef(u), u.ID
		}
		s.audit(ctx, nil, e)
		return nil, errBadCredentials
	}
	if u.Disabled {
		return nil, coffer.Errorf(coffer.KindForbidden, "account_disabled",
			"the account %q is disabled: ask an administrator to enable it", u.Username)
	}
	if rehash {
		s.upgradeHash(ctx, u, req.Password)
	}

	secret, hashed := NewSecret(PrefixSession)
	sess := &coffer.Session{UserID: u.ID, TokenHash: hashed, ExpiresAt: now.Add(s.sessionTTL),
		UserAgent: clip(req.UserAgent, 256), RemoteIP: req.RemoteIP}
	if err := s.store.CreateSession(ctx, sess); err != nil {
		return nil, err
	}
	if err := s.store.RecordLogin(ctx, u.ID); err != nil {
		s.log.Warn("record login time", "user_id", u.ID, "err", err)
	}
	s.audit(ctx, &coffer.Principal{UserID: u.ID, Username: u.Username}, &coffer.Event{Level: coffer.LevelInfo,
		Code: "auth.login", Title: "Login", Message: quote(u.Username) + " logged in from " + req.RemoteIP + ".",
		Resource: userRef(u), Audience: coffer.RoleAdmin, UserID: u.ID})
	return &LoginResult{Token: secret, Session: sess, User: u}, nil
}

// upgradeHash stores a hash with the current parameters after a successful
// login with an outdated one.
func (s *Service) upgradeHash(ctx context.Context, u *coffer.User, password string) {
	var h string
	var err error
	if s.hash(ctx, func() { h, err = hashPassword(password) }) != nil || err != nil {
		return
	}
	// UpdateUser would stamp password_changed_at; the password did not
	// change, but that is harmless and keeps one write path.
	if _, err := s.store.UpdateUser(ctx, u.ID, metadb.UserUpdate{PasswordHash: &h}); err != nil {
		s.log.Warn("upgrade password hash", "user_id", u.ID, "err", err)
	}
}

// Logout ends the session the principal authenticated with.
func (s *Service) Logout(ctx context.Context, p *coffer.Principal) error {
	if p.Kind != coffer.PrincipalSession {
		return coffer.Errorf(coffer.KindInvalid, "not_a_session",
			"this request was authenticated with an API token, which logout does not end: revoke it with DELETE /api/v1/tokens/{id}")
	}
	return s.store.DeleteSession(ctx, p.CredentialID)
}

var errInvalidToken = coffer.Errorf(coffer.KindUnauthenticated, "invalid_token",
	"the credential is not valid: log in again or use another token")

// Authenticate resolves a bearer secret (session or API token) to the
// principal it stands for. Expired, revoked and unknown secrets and disabled
// accounts are all refused.
func (s *Service) Authenticate(ctx context.Context, secret string) (*coffer.Principal, error) {
	now := s.now()
	switch {
	case strings.HasPrefix(secret, PrefixSession):
		sess, u, err := s.store.SessionByTokenHash(ctx, HashSecret(secret))
		if coffer.IsKind(err, coffer.KindNotFound) {
			return nil, errInvalidToken
		}
		if err != nil {
			return nil, err
		}
		if !now.Before(sess.ExpiresAt) {
			return nil, coffer.Errorf(coffer.KindUnauthenticated, "session_expired", "your session has expired: log in again")
		}
		if err := checkEnabled(u); err != nil {
			return nil, err
		}
		if now.Sub(sess.LastSeenAt) > time.Minute {
			if err := s.store.TouchSession(ctx, sess.ID); err != nil {
				s.log.Warn("touch session", "err", err)
			}
		}
		return &coffer.Principal{Kind: coffer.PrincipalSession, UserID: u.ID, Username: u.Username,
			Role: u.Role, Scopes: u.Role.Permissions(), CredentialID: sess.ID}, nil

	case strings.HasPrefix(secret, PrefixAPIToken):
		tok, u, err := s.store.APITokenByHash(ctx, HashSecret(secret))
		if coffer.IsKind(err, coffer.KindNotFound) {
			return nil, errInvalidToken
		}
		if err != nil {
			return nil, err
		}
		if tok.ExpiresAt != nil && !now.Before(*tok.ExpiresAt) {
			return nil, coffer.Errorf(coffer.KindUnauthenticated, "token_expired",
				"the API token %q has expired: create a new one", tok.Name)
		}
		if err := checkEnabled(u); err != nil {
			return nil, err
		}
		if tok.LastUsedAt == nil || now.Sub(*tok.LastUsedAt) > time.Minute {
			if err := s.store.TouchAPIToken(ctx, tok.ID); err != nil {
				s.log.Warn("touch api token", "err", err)
			}
		}
		return &coffer.Principal{Kind: coffer.PrincipalAPIToken, UserID: u.ID, Username: u.Username,
			Role: u.Role, Scopes: intersect(u.Role.Permissions(), tok.Scopes), CredentialID: tok.ID}, nil
	}
	return nil, errInvalidToken
}

func checkEnabled(u *coffer.User) error {
	if u.Disabled {
		return coffer.Errorf(coffer.KindUnauthenticated, "account_disabled",
			"the account %q is disabled: ask an administrator to enable it", u.Username)
	}
	return nil
}

// clip makes client-supplied text storable: valid UTF-8 (PostgreSQL
// refuses anything else), at most n bytes, cut on a character boundary.
func clip(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
