package httpapi

import (
	"context"
	"net/http"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/server/auth"
	"github.com/danielgtaylor/huma/v2"
)

// UserPath names a user in the URL.
type UserPath struct {
	ID string `path:"id" maxLength:"64" doc:"The user id."`
}

type userOut struct {
	Body struct {
		User User `json:"user"`
	}
}

func newUserOut(u *coffer.User) *userOut {
	out := &userOut{}
	out.Body.User = toUser(u)
	return out
}

func (s *Server) registerUsers() {
	tags := []string{"users"}
	type userListIn struct {
		OffsetParams
		Role     string `query:"role" enum:"admin,operator,viewer" doc:"Only users with this role."`
		Disabled string `query:"disabled" enum:"true,false" doc:"Only disabled (true) or enabled (false) users."`
	}
	handle(s, Manage, huma.Operation{
		OperationID: "list-users", Method: http.MethodGet, Path: "/api/v1/users", Tags: tags,
		Summary: "List users", Description: "Accounts ordered by username, offset-paginated.",
	}, func(ctx context.Context, in *userListIn) (*struct{ Body *Page[User] }, error) {
		f := metadb.UserFilter{Role: coffer.Role(in.Role), Offset: in.offset(), Limit: in.PageSize}
		if in.Disabled != "" {
			d := in.Disabled == "true"
			f.Disabled = &d
		}
		users, total, err := s.opts.Auth.ListUsers(ctx, f)
		if err != nil {
			return nil, err
		}
		items := make([]User, len(users))
		for i := range users {
			items[i] = toUser(&users[i])
		}
		return &struct{ Body *Page[User] }{offsetPage(items, in.OffsetParams, total)}, nil
	})

	type userCreateIn struct {
		Body struct {
			Username string `json:"username" minLength:"1" maxLength:"64" doc:"Letters, digits, '.', '_', '@', '-'; unique regardless of letter case."`
			Password string `json:"password" minLength:"8" maxLength:"1024"`
			Role     string `json:"role" enum:"admin,operator,viewer"`
		}
	}
	handle(s, Manage, huma.Operation{
		OperationID: "create-user", Method: http.MethodPost, Path: "/api/v1/users", Tags: tags,
		Summary: "Create a user", DefaultStatus: http.StatusCreated, Errors: []int{http.StatusConflict},
	}, func(ctx context.Context, in *userCreateIn) (*userOut, error) {
		u, err := s.opts.Auth.CreateUser(ctx, principalFrom(ctx), auth.NewUser{Username: in.Body.Username,
			Password: in.Body.Password, Role: coffer.Role(in.Body.Role)})
		if err != nil {
			return nil, err
		}
		return newUserOut(u), nil
	})

	handle(s, Manage, huma.Operation{
		OperationID: "get-user", Method: http.MethodGet, Path: "/api/v1/users/{id}", Tags: tags,
		Summary: "Get a user", Errors: []int{http.StatusNotFound},
	}, func(ctx context.Context, in *UserPath) (*userOut, error) {
		u, err := s.opts.Auth.GetUser(ctx, in.ID)
		if err != nil {
			return nil, err
		}
		return newUserOut(u), nil
	})

	type userPatchIn struct {
		UserPath
		Body struct {
			Username *string `json:"username,omitempty" minLength:"1" maxLength:"64"`
			Role     *string `json:"role,omitempty" enum:"admin,operator,viewer"`
			Disabled *bool   `json:"disabled,omitempty" doc:"Disabling ends the user's sessions and stops their API tokens at once."`
		}
	}
	handle(s, Manage, huma.Operation{
		OperationID: "update-user", Method: http.MethodPatch, Path: "/api/v1/users/{id}", Tags: tags,
		Summary:     "Change a user",
		Description: "Renames, changes the role of, disables or enables an account. The last active admin cannot be demoted or disabled.",
		Errors:      []int{http.StatusNotFound, http.StatusConflict},
	}, func(ctx context.Context, in *userPatchIn) (*userOut, error) {
		ch := auth.UserChanges{Username: in.Body.Username, Disabled: in.Body.Disabled}
		if in.Body.Role != nil {
			r := coffer.Role(*in.Body.Role)
			ch.Role = &r
		}
		u, err := s.opts.Auth.UpdateUser(ctx, principalFrom(ctx), in.ID, ch)
		if err != nil {
			return nil, err
		}
		return newUserOut(u), nil
	})

	handle(s, Manage, huma.Operation{
		OperationID: "delete-user", Method: http.MethodDelete, Path: "/api/v1/users/{id}", Tags: tags,
		Summary: "Delete a user", Description: "Deletes the account with its sessions and API tokens. The last active admin cannot be deleted.",
		Errors: []int{http.StatusNotFound, http.StatusConflict},
	}, func(ctx context.Context, in *UserPath) (*struct{ Body CommandResult }, error) {
		if err := s.opts.Auth.DeleteUser(ctx, principalFrom(ctx), in.ID); err != nil {
			return nil, err
		}
		return &struct{ Body CommandResult }{CommandResult{Message: "User deleted.", Success: true, ID: in.ID}}, nil
	})

	type passwordChangeIn struct {
		UserPath
		Body struct {
			OldPassword string `json:"old_password,omitempty" maxLength:"1024" doc:"Your current password; required when changing your own."`
			NewPassword string `json:"new_password" minLength:"8" maxLength:"1024"`
		}
	}
	handle(s, Read, huma.Operation{
		OperationID: "set-password", Method: http.MethodPut, Path: "/api/v1/users/{id}/password", Tags: tags,
		Summary: "Change a password",
		Description: "Users change their own password with the current one; their other sessions end. " +
			"Admins reset anyone else's without it; all of that user's sessions end.",
		Errors: []int{http.StatusNotFound},
	}, func(ctx context.Context, in *passwordChangeIn) (*struct{ Body CommandResult }, error) {
		if err := s.opts.Auth.ChangePassword(ctx, principalFrom(ctx), in.ID, in.Body.OldPassword, in.Body.NewPassword); err != nil {
			return nil, err
		}
		return &struct{ Body CommandResult }{CommandResult{Message: "Password changed.", Success: true, ID: in.ID}}, nil
	})
}
