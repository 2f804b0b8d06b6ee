package coffer

import (
	"strings"
	"testing"
)

func TestPathAndExcludeProblems(t *testing.T) {
	for p, want := range map[string]string{
		"/etc":                                "",
		"/":                                   "",
		"etc":                                 "not absolute",
		"/etc/":                               "not clean",
		"/a//b":                               "not clean",
		"/a/../b":                             "not clean",
		"/a\x00b":                             "NUL",
		"/" + strings.Repeat("x", MaxPathLen): "longer than 4096",
	} {
		if got := PathProblem(p); (want == "") != (got == "") || !strings.Contains(got, want) {
			t.Errorf("PathProblem(%.20q) = %q, want %q", p, got, want)
		}
	}
	for p, want := range map[string]string{
		"*.tmp":                              "",
		"":                                   "empty",
		"a\x00":                              "NUL",
		strings.Repeat("x", MaxExcludeLen+1): "longer than 4096",
	} {
		if got := ExcludeProblem(p); (want == "") != (got == "") || !strings.Contains(got, want) {
			t.Errorf("ExcludeProblem(%.20q) = %q, want %q", p, got, want)
		}
	}
}
