package httpapi

import (
	"cmp"
	"context"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// The UI's forms: what a page shows again after a failed submit, and how a
// service's refusal becomes a message next to the field it names.

// formState is a form as a page shows it again after a failed submit: what
// was typed (secrets excepted: password fields are never filled back in),
// the message of each field that was wrong, and a message about the whole
// form. Templates read it with .Value "name", .Checked "name" and
// .Err "name".
type formState struct {
	values url.Values
	errors map[string]string
	// Error is a message about the whole form ("Repository in use: …").
	Error string
}

// secretFields are the write-only fields of the UI's forms: a form shown
// again never holds what was typed into them.
var secretFields = []string{"password", "new_password", "confirm_password", "current_password", "access_key", "secret_key"}

// newFormState returns a form filled with values (nil: empty), without
// the secret fields.
func newFormState(values url.Values) *formState {
	v := url.Values{}
	for k, vs := range values {
		if !slices.Contains(secretFields, k) && k != csrfField {
			v[k] = vs
		}
	}
	return &formState{values: v, errors: map[string]string{}}
}

// parseForm reads a POST's form fields; a body that cannot be read gets
// the error page (and false).
func (s *Server) parseForm(w http.ResponseWriter, r *http.Request, c *uiContext) (url.Values, bool) {
	r.Body = http.MaxBytesReader(w, r.Body, s.opts.MaxBodyBytes)
	if err := r.ParseForm(); err != nil {
		s.uiError(w, r, c, http.StatusBadRequest, "Form not readable",
			"The form could not be read (it may be too large). Go back, check it and send it again.")
		return nil, false
	}
	return r.PostForm, true
}

// Value is the text of field name.
func (f *formState) Value(name string) string { return strings.TrimSpace(f.values.Get(name)) }

// Checked reports whether checkbox name is ticked (or radio name has value v).
func (f *formState) Checked(name string, v ...string) bool {
	if len(v) > 0 {
		return f.values.Get(name) == v[0]
	}
	return f.values.Get(name) != ""
}

// Err is the message of field name ("" when it is fine).
func (f *formState) Err(name string) string { return f.errors[name] }

// Invalid reports whether a field or the form has a message.
func (f *formState) Invalid() bool { return len(f.errors) > 0 || f.Error != "" }

// set gives field name a message; the first message of a field stays.
func (f *formState) set(name, msg string) {
	if _, ok := f.errors[name]; !ok {
		f.errors[name] = msg
	}
}

// fail shows a service's refusal on the form: next to the field it names
// (fields maps the service's field names to the form's, for those that
// differ), or above the form when it names none the form has.
func (f *formState) fail(ff formFailure, fields map[string]string) {
	name := cmp.Or(fields[ff.field], ff.field)
	if name != "" && (f.values.Has(name) || fields[ff.field] != "") {
		f.set(name, ff.message)
		return
	}
	f.Error = ff.message
}

// formFailure is what a failed form action tells the user: the status to
// answer with, the field at fault (as the service names it, "" for none)
// and a sentence.
type formFailure struct {
	status  int
	field   string
	message string
}

// failureOf turns a service error into a formFailure. Internal details
// never show: an unexpected error is the generic sentence with the request
// id to quote.
func failureOf(ctx context.Context, err error) formFailure {
	e := toAPIError(ctx, http.StatusInternalServerError, "", err)
	msg := sentence(e.Detail)
	if e.status >= 500 && e.CorrelationID != "" {
		msg = strings.TrimSuffix(msg, ".") + ": " + e.CorrelationID + "."
	}
	field, _ := e.Metadata["field"].(string)
	if field == "" {
		field = takenFields[e.Code]
	}
	return formFailure{status: e.status, field: strings.TrimPrefix(field, "body."), message: msg}
}

// takenFields are the fields whose value clashed with another record's,
// for the conflicts that name no field.
var takenFields = map[string]string{
	"endpoint_name_taken":   "display_name",
	"repository_name_taken": "name",
	"username_taken":        "username",
	"token_name_taken":      "name",
}
