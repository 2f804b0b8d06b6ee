package archiver

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/go-git/go-git/v5/plumbing/format/gitignore"
)

// newExcluder parses gitignore patterns matched from "/" (see
// Options.Exclude); nil for none. go-git's parser accepts anything, and a
// malformed glob then silently matches nothing: the checks here turn that
// into an error naming the pattern.
func newExcluder(patterns []string) (gitignore.Matcher, error) {
	if len(patterns) == 0 {
		return nil, nil
	}
	ps := make([]gitignore.Pattern, 0, len(patterns))
	for _, p := range patterns {
		if err := checkPattern(p); err != nil {
			return nil, fmt.Errorf("exclude pattern %q: %w", p, err)
		}
		ps = append(ps, gitignore.ParsePattern(p, nil))
	}
	return gitignore.NewMatcher(ps), nil
}

// checkPattern reports why p is not a pattern go-git matches as gitignore
// would.
func checkPattern(p string) error {
	s := strings.TrimPrefix(p, "!")
	if !strings.HasSuffix(s, `\ `) {
		s = strings.TrimRight(s, " ")
	}
	s = strings.TrimSuffix(s, "/")
	switch {
	case strings.TrimSpace(s) == "" || strings.Trim(s, "/") == "":
		return fmt.Errorf("it matches nothing: give a name or a path, like *.log or /var/cache")
	case strings.HasPrefix(p, "#"):
		return fmt.Errorf(`a leading # starts a comment in a .gitignore file; write \# to match a name starting with #`)
	}
	for _, c := range strings.Split(s, "/") {
		if c == "**" {
			continue
		}
		if strings.Contains(c, "**") {
			return fmt.Errorf("** must be a whole path element, like **/name or dir/**")
		}
		if _, err := filepath.Match(c, ""); err != nil {
			return fmt.Errorf("element %q is not a valid glob (check its brackets and backslashes): %w", c, err)
		}
	}
	return nil
}

// components splits a clean absolute path into its names.
func components(abs string) []string {
	abs = strings.Trim(abs, "/")
	if abs == "" {
		return []string{}
	}
	return strings.Split(abs, "/")
}
