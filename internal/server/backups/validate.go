package backups

import "github.com/cofferhq/coffer"

// Limits on what a backup may be asked to cover.
const (
	MaxPaths      = 1000
	MaxPathLen    = coffer.MaxPathLen
	MaxExcludes   = 10000
	MaxExcludeLen = coffer.MaxExcludeLen
)

// validatePaths checks the paths of an ad-hoc backup: 1 to MaxPaths
// absolute, clean paths without NUL bytes, each at most MaxPathLen bytes.
func validatePaths(paths []string) error {
	if len(paths) == 0 {
		return coffer.Errorf(coffer.KindInvalid, "paths_required", "name at least one absolute path to back up").
			With("field", "paths")
	}
	if len(paths) > MaxPaths {
		return coffer.Errorf(coffer.KindInvalid, "too_many_paths", "%d paths exceed the limit of %d: back up a common parent instead",
			len(paths), MaxPaths).With("field", "paths").With("limit", MaxPaths)
	}
	for i, p := range paths {
		if why := coffer.PathProblem(p); why != "" {
			return coffer.Errorf(coffer.KindInvalid, "invalid_path", "path %d %q %s", i, truncate(p), why).
				With("field", "paths").With("index", i)
		}
	}
	return nil
}

// validateExcludes checks exclude patterns: at most MaxExcludes, each
// 1 to MaxExcludeLen bytes without NUL bytes.
func validateExcludes(patterns []string) error {
	if len(patterns) > MaxExcludes {
		return coffer.Errorf(coffer.KindInvalid, "too_many_excludes", "%d exclude patterns exceed the limit of %d: merge them into fewer, broader patterns",
			len(patterns), MaxExcludes).With("field", "exclude").With("limit", MaxExcludes)
	}
	for i, p := range patterns {
		if why := coffer.ExcludeProblem(p); why != "" {
			return coffer.Errorf(coffer.KindInvalid, "invalid_exclude", "exclude pattern %d %q %s", i, truncate(p), why).
				With("field", "exclude").With("index", i)
		}
	}
	return nil
}

// truncate shortens s for an error message.
func truncate(s string) string {
	if len(s) > 100 {
		return s[:100] + "…"
	}
	return s
}
