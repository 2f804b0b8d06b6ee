package auth

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
)

var usernamePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$`)

const (
	minPasswordLen = 8    // characters
	maxPasswordLen = 1024 // bytes
)

func invalidField(field, format string, args ...any) error {
	return coffer.Errorf(coffer.KindInvalid, "invalid_"+field, format, args...).With("field", field)
}

func validateUsername(name string) error {
	if !usernamePattern.MatchString(name) {
		return invalidField("username",
			"username %q is not valid: use 1 to 64 letters, digits, '.', '_', '@' or '-', starting with a letter or digit", name)
	}
	return nil
}

func validatePassword(pw string) error {
	if utf8.RuneCountInString(pw) < minPasswordLen {
		return invalidField("password", "the password is too short: use at least %d characters", minPasswordLen)
	}
	if len(pw) > maxPasswordLen {
		return invalidField("password", "the password is too long: use at most %d bytes", maxPasswordLen)
	}
	return nil
}

func validateRole(r coffer.Role) error {
	if !r.Valid() {
		return invalidField("role", "role %q is not valid: use admin, operator or viewer", r)
	}
	return nil
}

// NewUser is what CreateUser needs.
type NewUser struct {
	Username string
	Password string
	Role     coffer.Role
}

// CreateUser adds an account.
func (s *Service) CreateUser(ctx context.Context, actor *coffer.Principal, in NewUser) (*coffer.User, error) {
	u, err := s.newUser(ctx, in)
	if err != nil {
		return nil, err
	}
	s.audit(ctx, actor, &coffer.Event{Level: coffer.LevelInfo, Code: "user.created", Title: "User created",
		Message:  fmt.Sprintf("%s created the %s account %s.", actor.Username, u.Role, quote(u.Username)),
		Resource: userRef(u), Audience: coffer.RoleAdmin, UserID: u.ID})
	return u, nil
}

func (s *Service) newUser(ctx context.Context, in NewUser) (*coffer.User, error) {
	if err := validateUsername(in.Username); err != nil {
		return nil, err
	}
	if err := validatePassword(in.Password); err != nil {
		return nil, err
	}
	if err := validateRole(in.Role); err != nil {
		return nil, err
	}
	u := &coffer.User{Username: in.Username, Role: in.Role}
	var err error
	if herr := s.hash(ctx, func() { u.PasswordHash, err = hashPassword(in.Password) }); herr != nil {
		return nil, herr
	}
	if err != nil {
		return nil, err
	}
	if err := s.store.CreateUser(ctx, u); err != nil {
		return nil, err
	}
	return u, nil
}

// GetUser returns one account.
func (s *Service) GetUser(ctx context.Context, id string) (*coffer.User, error) {
	return s.store.GetUser(ctx, id)
}

// ListUsers returns one page of accounts and the total matching the filter.
func (s *Service) ListUsers(ctx context.Context, f metadb.UserFilter) ([]coffer.User, int, error) {
	if f.Role != "" {
		if err := validateRole(f.Role); err != nil {
			return nil, 0, err
		}
	}
	return s.store.ListUsers(ctx, f)
}

// UserChanges names what UpdateUser changes; nil fields stay.
type UserChanges struct {
	Username *string
	Role     *coffer.Role
	Disabled *bool
}

// UpdateUser renames, re-roles, disables or enables an account. Disabling
// ends the user's sessions and stops their API tokens at once. Nobody may
// disable or demote themselves (ask another admin), and the last active
// admin can never be demoted or disabled.
func (s *Service) UpdateUser(ctx context.Context, actor *coffer.Principal, id string, ch UserChanges) (*coffer.User, error) {
	if ch.Username != nil {
		if err := validateUsername(*ch.Username); err != nil {
			return nil, err
		}
	}
	if ch.Role != nil {
		if err := validateRole(*ch.Role); err != nil {
			return nil, err
		}
	}
	before, err := s.store.GetUser(ctx, id)
	if err != nil {
		return nil, err
	}
	if id == actor.UserID {
		if ch.Disabled != nil && *ch.Disabled {
			return nil, coffer.Errorf(coffer.KindConflict, "cannot_disable_self", "you cannot disable your own account: ask another admin")
		}
		if ch.Role != nil && *ch.Role != before.Role {
			return nil, coffer.Errorf(coffer.KindConflict, "cannot_change_own_role", "you cannot change your own role: ask another admin")
		}
	}
	u, err := s.store.UpdateUser(ctx, id, metadb.UserUpdate{Username: ch.Username, Role: ch.Role, Disabled: ch.Disabled})
	if err != nil {
		return nil, err
	}
	if changes := describeChanges(before, u); changes != "" {
		s.audit(ctx, actor, &coffer.Event{Level: coffer.LevelInfo, Code: "user.updated", Title: "User changed",
			Message:  fmt.Sprintf("%s changed the account %s: %s.", actor.Username, quote(u.Username), changes),
			Resource: userRef(u), Audience: coffer.RoleAdmin, UserID: u.ID})
	}
	return u, nil
}

func describeChanges(before, after *coffer.User) string {
	var out []string
	if before.Username != after.Username {
		out = append(out, fmt.Sprintf("renamed from %s", quote(before.Username)))
	}
	if before.Role != after.Role {
		out = append(out, fmt.Sprintf("role %s → %s", before.Role, after.Role))
	}
	if before.Disabled != after.Disabled {
		out = append(out, map[bool]string{true: "disabled", false: "enabled"}[after.Disabled])
	}
	return strings.Join(out, ", ")
}

// DeleteUser removes an account with its sessions and tokens.
func (s *Service) DeleteUser(ctx context.Context, actor *coffer.Principal, id string) error {
	if id == actor.UserID {
		return coffer.Errorf(coffer.KindConflict, "cannot_delete_self", "you cannot delete your own account: ask another admin")
	}
	u, err := s.store.DeleteUser(ctx, id)
	if err != nil {
		return err
	}
	s.audit(ctx, actor, &coffer.Event{Level: coffer.LevelWarning, Code: "user.deleted", Title: "User deleted",
		Message:  fmt.Sprintf("%s deleted the account %s.", actor.Username, quote(u.Username)),
		Resource: userRef(u), Audience: coffer.RoleAdmin})
	return nil
}

// ChangePassword sets a user's password. Users change their own with the
// current one (the other sessions end; the one making the change stays);
// an admin may reset anyone else's without it (all their sessions end).
func (s *Service) ChangePassword(ctx context.Context, actor *coffer.Principal, id, oldPassword, newPassword string) error {
	self := id == actor.UserID
	if !self && !actor.Can(coffer.PermManage) {
		return coffer.Errorf(coffer.KindForbidden, "forbidden", "only an admin may set another user's password")
	}
	u, err := s.store.GetUser(ctx, id)
	if err != nil {
		return err
	}
	if self {
		if oldPassword == "" {
			return invalidField("old_password", "give your current password in old_password to change it")
		}
		var ok bool
		if err := s.hash(ctx, func() { ok, _, _ = verifyPassword(u.PasswordHash, oldPassword) }); err != nil {
			return err
		}
		if !ok {
			return coffer.Errorf(coffer.KindForbidden, "wrong_password", "the current password is wrong").With("field", "old_password")
		}
	}
	if err := validatePassword(newPassword); err != nil {
		return err
	}
	var h string
	if herr := s.hash(ctx, func() { h, err = hashPassword(newPassword) }); herr != nil {
		return herr
	}
	if err != nil {
		return err
	}
	if _, err := s.store.UpdateUser(ctx, id, metadb.UserUpdate{PasswordHash: &h}); err != nil {
		return err
	}
	keep := ""
	if self && actor.Kind == coffer.PrincipalSession {
		keep = actor.CredentialID
	}
	if _, err := s.store.DeleteUserSessions(ctx, id, keep); err != nil {
		return err
	}
	e := &coffer.Event{Level: coffer.LevelInfo, Code: "user.password_changed", Title: "Password changed",
		Message:  quote(u.Username) + " changed their password.",
		Resource: userRef(u), Audience: coffer.RoleAdmin, UserID: u.ID}
	if !self {
		e.Code, e.Title = "user.password_reset", "Password reset"
		e.Message = fmt.Sprintf("%s reset the password of %s.", actor.Username, quote(u.Username))
	}
	s.audit(ctx, actor, e)
	return nil
}

// intersect keeps the permissions of have that are in want, in have's order.
func intersect(have, want []coffer.Permission) []coffer.Permission {
	var out []coffer.Permission
	for _, p := range have {
		if slices.Contains(want, p) {
			out = append(out, p)
		}
	}
	return out
}
