package metadb

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/oklog/ulid/v2"
)

const planColumns = `id, name, group_name, client_id, repository_id, schedule, timezone, start_at, end_at,
	include_paths, exclude_patterns, pre_commands, post_commands, retention, compression, full_every, one_fs,
	enabled, created_by, created_at, updated_at, command_timeout_seconds`

func scanPlan(row rowScanner) (*coffer.Plan, error) {
	var p coffer.Plan
	var createdBy sql.NullString
	var timeoutSeconds int64
	err := row.Scan(&p.ID, &p.Name, &p.Group, &p.ClientID, &p.RepositoryID, &p.Schedule, &p.Timezone,
		nullUTC{&p.StartAt}, nullUTC{&p.EndAt}, planList{&p.Include}, planList{&p.Exclude},
		planList{&p.PreCommands}, planList{&p.PostCommands}, jsonObject{&p.Retention}, &p.Compression,
		&p.FullEvery, &p.OneFileSystem, &p.Enabled, &createdBy, utc{&p.CreatedAt}, utc{&p.UpdatedAt}, &timeoutSeconds)
	if err != nil {
		return nil, err
	}
	p.CreatedBy = createdBy.String
	p.CommandTimeout = time.Duration(timeoutSeconds) * time.Second
	return &p, nil
}

// planList scans a list stored by jsonArg; unlike jsonList, an empty list
// scans as an empty, non-nil slice.
type planList struct{ p *[]string }

// Scan implements sql.Scanner.
func (s planList) Scan(v any) error {
	*s.p = []string{}
	text, err := jsonText(v)
	if err != nil || text == "" {
		return err
	}
	if err := json.Unmarshal([]byte(text), s.p); err != nil {
		return fmt.Errorf("decode list: %w", err)
	}
	if *s.p == nil { // "null"
		*s.p = []string{}
	}
	return nil
}

// normalizePlan puts p in the form the store returns it: times in UTC with
// microsecond precision, lists empty rather than nil.
func normalizePlan(p *coffer.Plan) {
	p.StartAt, p.EndAt = tsPtr(p.StartAt), tsPtr(p.EndAt)
	p.CommandTimeout = p.CommandTimeout.Truncate(time.Second)
	for _, l := range []*[]string{&p.Include, &p.Exclude, &p.PreCommands, &p.PostCommands} {
		if *l == nil {
			*l = []string{}
		}
	}
}

func errPlanNotFound(id string) error {
	return coffer.Errorf(coffer.KindNotFound, "plan_not_found", "no plan with id %q", id).With("plan_id", id)
}

func errPlanNameTaken(name string) error {
	return coffer.Errorf(coffer.KindConflict, "plan_name_taken",
		"a plan named %q already exists (names are compared without regard to letter case): choose another name", name).
		With("name", name)
}

// CreatePlan stores a new plan, assigning its ID, CreatedAt and UpdatedAt.
// A name another plan has in any letter case is "plan_name_taken"; a
// CreatedBy that names no user is "user_not_found" ("" for none). The
// client is not checked: that is the service's job.
func (db *DB) CreatePlan(ctx context.Context, p *coffer.Plan) error {
	out := *p
	normalizePlan(&out)
	now := db.now()
	out.ID = ulid.Make().String()
	out.CreatedAt, out.UpdatedAt = now, now
	_, err := db.sql.ExecContext(ctx, `INSERT INTO plans (`+planColumns+`, name_key)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23)`,
		out.ID, out.Name, out.Group, out.ClientID, out.RepositoryID, out.Schedule, out.Timezone, out.StartAt, out.EndAt,
		jsonArg[string](out.Include), jsonArg[string](out.Exclude), jsonArg[string](out.PreCommands),
		jsonArg[string](out.PostCommands), jsonValue{out.Retention}, out.Compression, out.FullEvery, out.OneFileSystem,
		out.Enabled, nullString(out.CreatedBy), out.CreatedAt, out.UpdatedAt, int64(out.CommandTimeout/time.Second),
		nameKey(out.Name))
	switch {
	case isUniqueViolation(err):
		return errPlanNameTaken(out.Name)
	case isForeignKeyViolation(err):
		return coffer.Errorf(coffer.KindNotFound, "user_not_found", "no user with id %q (the plan's creator)", out.CreatedBy).
			With("user_id", out.CreatedBy)
	case err != nil:
		return fmt.Errorf("insert plan: %w", err)
	}
	*p = out
	return nil
}

// GetPlan returns the plan with the given id, or "plan_not_found".
func (db *DB) GetPlan(ctx context.Context, id string) (*coffer.Plan, error) {
	p, err := scanPlan(db.sql.QueryRowContext(ctx, `SELECT `+planColumns+` FROM plans WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errPlanNotFound(id)
	}
	if err != nil {
		return nil, fmt.Errorf("read plan: %w", err)
	}
	return p, nil
}

// PlanFilter selects plans for ListPlans. Zero fields do not filter.
type PlanFilter struct {
	ClientID string
	Group    string // exact group name
	Enabled  *bool
	Name     string // a substring of the name, in any letter case (% and _ match themselves)
	Limit    int    // at most this many (0: no limit)
	Offset   int
}

// ListPlans returns one page of plans ordered by name (without regard to
// letter case) and id, and how many plans match the filter in all.
func (db *DB) ListPlans(ctx context.Context, f PlanFilter) ([]coffer.Plan, int, error) {
	var w sqlFilter
	if f.ClientID != "" {
		w.add("client_id = " + w.arg(f.ClientID))
	}
	if f.Group != "" {
		w.add("group_name = " + w.arg(f.Group))
	}
	if f.Enabled != nil {
		w.add("enabled = " + w.arg(*f.Enabled))
	}
	if f.Name != "" {
		w.add(`name_key LIKE ` + w.arg("%"+escapeLike(nameKey(f.Name))+"%") + ` ESCAPE '\'`)
	}
	var total int
	if err := db.sql.QueryRowContext(ctx, `SELECT COUNT(*) FROM plans`+w.where(), w.args...).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("count plans: %w", err)
	}
	query := `SELECT ` + planColumns + ` FROM plans` + w.where() + ` ORDER BY name_key, id` + w.page(f.Limit, f.Offset)
	rows, err := queryAll(ctx, db.sql, scanPlan, query, w.args...)
	if err != nil {
		return nil, 0, fmt.Errorf("list plans: %w", err)
	}
	return deref(rows), total, nil
}

// UpdatePlan replaces every editable field of the plan with p's ID (all but
// ID, CreatedBy and CreatedAt) and sets UpdatedAt; on success p holds the
// plan as stored. A missing plan is "plan_not_found", a name another plan
// has in any letter case "plan_name_taken".
func (db *DB) UpdatePlan(ctx context.Context, p *coffer.Plan) error {
	in := *p
	normalizePlan(&in)
	got, err := scanPlan(db.sql.QueryRowContext(ctx, `UPDATE plans SET name = $2, name_key = $3, group_name = $4,
		client_id = $5, repository_id = $6, schedule = $7, timezone = $8, start_at = $9, end_at = $10,
		include_paths = $11, exclude_patterns = $12, pre_commands = $13, post_commands = $14, retention = $15,
		compression = $16, full_every = $17, one_fs = $18, enabled = $19, updated_at = $20, command_timeout_seconds = $21
		WHERE id = $1 RETURNING `+planColumns,
		in.ID, in.Name, nameKey(in.Name), in.Group, in.ClientID, in.RepositoryID, in.Schedule, in.Timezone,
		in.StartAt, in.EndAt, jsonArg[string](in.Include), jsonArg[string](in.Exclude),
		jsonArg[string](in.PreCommands), jsonArg[string](in.PostCommands), jsonValue{in.Retention},
		in.Compression, in.FullEvery, in.OneFileSystem, in.Enabled, db.now(), int64(in.CommandTimeout/time.Second)))
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return errPlanNotFound(in.ID)
	case isUniqueViolation(err):
		return errPlanNameTaken(in.Name)
	case err != nil:
		return fmt.Errorf("update plan: %w", err)
	}
	*p = *got
	return nil
}

// DeletePlan removes the plan with the given id and returns it, or
// "plan_not_found". Its backups stay, as history.
func (db *DB) DeletePlan(ctx context.Context, id string) (*coffer.Plan, error) {
	p, err := scanPlan(db.sql.QueryRowContext(ctx, `DELETE FROM plans WHERE id = $1 RETURNING `+planColumns, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errPlanNotFound(id)
	}
	if err != nil {
		return nil, fmt.Errorf("delete plan: %w", err)
	}
	return p, nil
}
