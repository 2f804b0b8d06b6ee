package httpapi

import (
	"cmp"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/protocol"
	"github.com/cofferhq/coffer/internal/server/plans"
)

// The live file browser of a client's machine: GET
// /ui/clients/{id}/files?path=<dir>&pick=<0|1> asks the client's agent for
// the entries of dir (agents.Service.ListDir) and answers with the
// fragment client_files, whose root is a <div class="fs-browser">. Its
// breadcrumbs and directories (li[data-path] button.open-dir) load the same
// fragment for another directory over that root (hx-target "closest
// .fs-browser", outerHTML), so it works inside any container.
//
// On a client's page (pick=0) every entry has an "Add to plan" form (a
// select name=plan of the client's plans and a button.add-to-plan) that
// posts to POST /clients/{id}/files/include and shows the outcome in
// #file-browser-status.
//
// Pick mode (pick=1) is the contract with the plan form: every entry has
// instead
//
//	<button type="button" class="small pick-path" data-path="<path>"
//	  hx-get="/ui/plans/include-row?path=<path, query-escaped>"
//	  hx-target="#include-list" hx-swap="beforeend">Add</button>
//
// so the plan form, which serves /ui/plans/include-row and holds
// #include-list, adds the path to its include editor.

// fsMaxEntries bounds the entries one listing shows: a directory with
// more is better narrowed down than scrolled through.
const fsMaxEntries = 1000

// fsBrowserData is the file browser fragment's data.
type fsBrowserData struct {
	ClientID string
	Path     string
	Crumbs   []fsCrumb
	Entries  []fsEntry
	Hidden   int // entries beyond fsMaxEntries
	Pick     bool
	PickURL  string // adds Path itself to the plan form (pick mode)
	// Plans are the client's plans an entry can be added to (not in pick
	// mode); NewPlan is where to create one.
	Plans   []coffer.Plan
	NewPlan string
	CSRF    string
	// Error says why the directory could not be listed and what to do;
	// Retry loads the same listing again.
	Error string
	Retry string
}

// fsCrumb is one step of the path to the directory shown.
type fsCrumb struct {
	Name, URL string
}

// fsEntry is one entry of the directory shown.
type fsEntry struct {
	Name, Path, Type string
	Size             int64
	Mtime            time.Time
	// Open loads the directory (directories only); PickURL adds the path
	// to the plan form (pick mode).
	Open, PickURL string
}

// Dir reports whether the entry is a directory one can open.
func (e *fsEntry) Dir() bool { return e.Type == "dir" }

// uiClientFiles answers the file browser fragment: the listing of one
// directory, or why there is none and what to do about it.
func (s *Server) uiClientFiles(w http.ResponseWriter, r *http.Request, c *uiContext) {
	ctx := r.Context()
	id := r.PathValue("id")
	dir := cmp.Or(r.URL.Query().Get("path"), "/")
	pick := r.URL.Query().Get("pick") == "1"
	data := &fsBrowserData{ClientID: id, Path: dir, Pick: pick, CSRF: c.csrf,
		NewPlan: "/plans/new?client=" + url.QueryEscape(id)}
	if strings.HasPrefix(dir, "/") {
		data.Path = path.Clean(dir)
		data.Crumbs = fsCrumbs(id, data.Path, pick)
	}
	data.Retry = fsURL(id, data.Path, pick)
	res, err := s.opts.Agents.ListDir(ctx, c.p, id, dir, 0)
	if err != nil {
		e := toAPIError(ctx, http.StatusInternalServerError, "", err)
		data.Error = sentence(e.Detail)
		s.renderFragment(w, r, e.status, "client_files", data)
		return
	}
	data.Entries, data.Hidden = fsEntries(id, data.Path, res.Entries, pick)
	if pick {
		data.PickURL = pickURL(data.Path)
	}
	if !pick && s.opts.Plans != nil {
		ps, _, err := s.opts.Plans.List(ctx, metadb.PlanFilter{ClientID: id, Limit: clientPlansShown})
		if err != nil {
			s.uiFail(w, r, c, err)
			return
		}
		data.Plans = ps
	}
	s.renderFragment(w, r, http.StatusOK, "client_files", data)
}

// fsURL is the file browser fragment of dir on client id.
func fsURL(id, dir string, pick bool) string {
	u := "/ui/clients/" + url.PathEscape(id) + "/files?path=" + url.QueryEscape(dir)
	if pick {
		u += "&pick=1"
	}
	return u
}

// pickURL adds p to the plan form's include list (served by the plans UI).
func pickURL(p string) string { return "/ui/plans/include-row?path=" + url.QueryEscape(p) }

// fsCrumbs are the steps from / to dir, each loading its directory.
func fsCrumbs(id, dir string, pick bool) []fsCrumb {
	crumbs := []fsCrumb{{Name: "/", URL: fsURL(id, "/", pick)}}
	p := ""
	for _, name := range strings.Split(strings.Trim(dir, "/"), "/") {
		if name == "" {
			continue
		}
		p += "/" + name
		crumbs = append(crumbs, fsCrumb{Name: name, URL: fsURL(id, p, pick)})
	}
	return crumbs
}

// fsEntries are the entries of directory dir, directories first, then by
// name, and how many beyond fsMaxEntries were left out. Names that are not
// one path element are dropped: the agent answers for its own machine, but
// a path shown here should be the path added to a plan.
func fsEntries(id, dir string, entries []protocol.DirEntry, pick bool) ([]fsEntry, int) {
	es := slices.DeleteFunc(slices.Clone(entries), func(e protocol.DirEntry) bool {
		return e.Name == "" || e.Name == "." || e.Name == ".." || strings.ContainsAny(e.Name, "/\x00")
	})
	slices.SortFunc(es, func(a, b protocol.DirEntry) int {
		if (a.Type == "dir") != (b.Type == "dir") {
			if a.Type == "dir" {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Name, b.Name)
	})
	hidden := max(0, len(es)-fsMaxEntries)
	es = es[:len(es)-hidden]
	out := make([]fsEntry, len(es))
	for i, e := range es {
		p := path.Join(dir, e.Name)
		out[i] = fsEntry{Name: e.Name, Path: p, Type: e.Type, Size: e.Size, Mtime: e.Mtime}
		if e.Type == "dir" {
			out[i].Open = fsURL(id, p, pick)
		}
		if pick {
			out[i].PickURL = pickURL(p)
		}
	}
	return out, hidden
}

// uiClientAddInclude adds a path of the client's machine to the include
// list of one of its plans, once: a path already there is left alone.
func (s *Server) uiClientAddInclude(w http.ResponseWriter, r *http.Request, c *uiContext) {
	ctx := r.Context()
	id := r.PathValue("id")
	planID, p := r.PostFormValue("plan"), r.PostFormValue("path")
	switch {
	case s.opts.Plans == nil:
		s.uiError(w, r, c, http.StatusNotFound, "No plans", "This server has no backup plans to add paths to.")
		return
	case planID == "":
		s.uiError(w, r, c, http.StatusBadRequest, "Choose a plan", "Choose the plan to add the path to.")
		return
	case coffer.PathProblem(p) != "":
		s.uiError(w, r, c, http.StatusBadRequest, "Invalid path",
			sentence(fmt.Sprintf("the path %q %s", p, coffer.PathProblem(p))))
		return
	}
	pl, err := s.opts.Plans.Get(ctx, planID)
	if err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	if pl.ClientID != id {
		s.uiError(w, r, c, http.StatusBadRequest, "Another client's plan",
			fmt.Sprintf("Plan %q backs up another client: choose one of this client's plans.", pl.Name))
		return
	}
	msg := fmt.Sprintf("%s is already in plan %q.", p, pl.Name)
	if parent := includedParent(pl.Include, p); parent != "" {
		msg = fmt.Sprintf("%s is already backed up by plan %q, as part of %s.", p, pl.Name, parent)
	} else if !slices.Contains(pl.Include, p) {
		spec := planSpec(pl)
		spec.Include = append(slices.Clone(pl.Include), p)
		if _, err := s.opts.Plans.Update(ctx, c.p, pl.ID, spec); err != nil {
			s.uiFail(w, r, c, err)
			return
		}
		msg = fmt.Sprintf("Added %s to plan %q.", p, pl.Name)
	}
	if isHTMX(r) {
		s.renderFragment(w, r, http.StatusOK, "client_include_done", msg)
		return
	}
	s.uiDone(w, r, "/clients/"+url.PathEscape(id), msg)
}

// includedParent returns the path of include that p lies inside, or "".
func includedParent(include []string, p string) string {
	for _, inc := range include {
		if inc != p && (inc == "/" || strings.HasPrefix(p, inc+"/")) {
			return inc
		}
	}
	return ""
}

// planSpec is the spec that leaves plan p as it is, for changing one
// thing of it with plans.Service.Update. Its commands go back unchanged,
// which operators may do too.
func planSpec(p *coffer.Plan) plans.Spec {
	enabled := p.Enabled
	return plans.Spec{Name: p.Name, Group: p.Group, ClientID: p.ClientID, RepositoryID: p.RepositoryID,
		Schedule: p.Schedule, Timezone: p.Timezone, StartAt: p.StartAt, EndAt: p.EndAt,
		Include: p.Include, Exclude: p.Exclude, PreCommands: p.PreCommands, PostCommands: p.PostCommands,
		CommandTimeout: p.CommandTimeout, Retention: p.Retention, Compression: p.Compression,
		FullEvery: p.FullEvery, OneFileSystem: p.OneFileSystem, Enabled: &enabled}
}
