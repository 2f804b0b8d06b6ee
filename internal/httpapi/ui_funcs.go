package httpapi

import (
	"errors"
	"fmt"
	"html/template"
	"math"
	"net/url"
	"strings"
	"time"

	"github.com/cofferhq/coffer"
)

// uiFuncs are the functions every template may call.
func uiFuncs(static *staticFiles) template.FuncMap {
	return template.FuncMap{
		"asset":    static.url,
		"rfc3339":  func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
		"clock":    func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") },
		"bytes":    humanBytes,
		"duration": humanDuration,
		"elapsed":  elapsed,
		"percent":  percent,
		"rate":     rate,
		"deref":    derefTime,
		"add":      func(a, b int) int { return a + b },
		"dict":     dict,
		"join":     strings.Join,
		"query":    withQuery,
		"stateClass": func(s coffer.JobState) string {
			return stateClass[s]
		},
	}
}

// stateClass maps job states to the badge class that colours them.
var stateClass = map[coffer.JobState]string{
	coffer.JobQueued:    "badge-info",
	coffer.JobRunning:   "badge-info",
	coffer.JobSucceeded: "badge-success",
	coffer.JobPartial:   "badge-warning",
	coffer.JobFailed:    "badge-error",
	coffer.JobCanceled:  "badge-warning",
}

// humanBytes formats a byte count with binary units: "0 B", "1.5 KiB",
// "12.0 GiB". It takes any integer type templates hand it.
func humanBytes(v any) string {
	var n float64
	switch x := v.(type) {
	case int:
		n = float64(x)
	case int64:
		n = float64(x)
	case uint64:
		n = float64(x)
	case float64:
		n = x
	default:
		return fmt.Sprint(v)
	}
	if math.Abs(n) < 1024 {
		return fmt.Sprintf("%.0f B", n)
	}
	units := []string{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	u := -1
	for math.Abs(n) >= 1024 && u < len(units)-1 {
		n /= 1024
		u++
	}
	return fmt.Sprintf("%.1f %s", n, units[u])
}

// humanDuration formats a duration for people: "850 ms", "42 s",
// "3 min 5 s", "2 h 10 min", "3 d 4 h".
func humanDuration(d time.Duration) string {
	switch {
	case d < 0:
		return "0 s"
	case d < time.Second:
		return fmt.Sprintf("%d ms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%d s", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%d min %d s", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%d h %d min", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%d d %d h", int(d.Hours())/24, int(d.Hours())%24)
}

// elapsed is how long a job ran: from start to finish, or to now while it
// runs; 0 before it started.
func elapsed(start, finish *time.Time) time.Duration {
	if start == nil {
		return 0
	}
	if finish == nil {
		return time.Since(*start)
	}
	return finish.Sub(*start)
}

// percent is part of whole in percent, 0–100, as an integer; 0 when the
// whole is unknown.
func percent(part, whole any) int {
	p, w := toFloat(part), toFloat(whole)
	if w <= 0 {
		return 0
	}
	return int(math.Min(100, math.Max(0, 100*p/w)))
}

// rate formats bytes per second over d ("12.3 MiB/s"), "" for no time.
func rate(n any, d time.Duration) string {
	if d <= 0 {
		return ""
	}
	return humanBytes(toFloat(n)/d.Seconds()) + "/s"
}

func toFloat(v any) float64 {
	switch x := v.(type) {
	case int:
		return float64(x)
	case int64:
		return float64(x)
	case uint64:
		return float64(x)
	case float64:
		return x
	}
	return 0
}

func derefTime(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return *t
}

// dict builds a map from key, value pairs, so that a template can hand a
// partial several values: {{template "x" dict "Backup" . "Compact" true}}.
func dict(kv ...any) (map[string]any, error) {
	if len(kv)%2 != 0 {
		return nil, errors.New("dict needs key, value pairs")
	}
	m := make(map[string]any, len(kv)/2)
	for i := 0; i < len(kv); i += 2 {
		k, ok := kv[i].(string)
		if !ok {
			return nil, fmt.Errorf("dict key %v is not a string", kv[i])
		}
		m[k] = kv[i+1]
	}
	return m, nil
}

// withQuery returns base with its query values replaced by key, value
// pairs (an empty value removes the key), for filter and paging links:
// {{query .Data.Path "cursor" .Data.Next}}.
func withQuery(base string, kv ...string) (string, error) {
	if len(kv)%2 != 0 {
		return "", errors.New("query needs key, value pairs")
	}
	u, err := url.Parse(base)
	if err != nil {
		return "", err
	}
	q := u.Query()
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == "" {
			q.Del(kv[i])
		} else {
			q.Set(kv[i], kv[i+1])
		}
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}
