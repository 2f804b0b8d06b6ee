package main

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/alecthomas/kong"
	"gopkg.in/yaml.v3"
)

// configFile is the --config YAML file: keys are flag names, either at the
// top level or under the command they belong to:
//
//	log-format: json
//	server:
//	  listen: 0.0.0.0:8080
//	  database-url: postgres://coffer@db/coffer
//
// Flags and COFFER_* variables override it. Unknown keys are an error, so a
// typo never silently falls back to a default.
type configFile struct {
	values map[string]any
}

func loadConfig(r io.Reader) (kong.Resolver, error) {
	raw := map[string]any{}
	if err := yaml.NewDecoder(r).Decode(&raw); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("config file: %w", err)
	}
	return &configFile{values: normalise(raw)}, nil
}

// normalise lets keys use - or _ interchangeably.
func normalise(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		if sub, ok := v.(map[string]any); ok {
			v = normalise(sub)
		}
		out[strings.ReplaceAll(k, "_", "-")] = v
	}
	return out
}

func (c *configFile) Resolve(_ *kong.Context, parent *kong.Path, flag *kong.Flag) (any, error) {
	var cmds []string
	for n := parent.Node(); n != nil && n.Type == kong.CommandNode; n = n.Parent {
		cmds = append([]string{n.Name}, cmds...)
	}
	m := c.values
	for _, cmd := range cmds {
		sub, ok := m[cmd].(map[string]any)
		if !ok {
			break
		}
		if v, ok := sub[flag.Name]; ok {
			return v, nil
		}
		m = sub
	}
	return c.values[flag.Name], nil
}

// Validate rejects keys that name no flag.
func (c *configFile) Validate(app *kong.Application) error {
	return validateKeys(c.values, app.Node, "")
}

func validateKeys(values map[string]any, node *kong.Node, prefix string) error {
	known := map[string]bool{}
	for _, f := range allFlags(node) {
		known[f] = true
	}
	children := map[string]*kong.Node{}
	for _, ch := range node.Children {
		if ch.Type == kong.CommandNode {
			children[ch.Name] = ch
		}
	}
	for k, v := range values {
		if ch, ok := children[k]; ok {
			sub, ok := v.(map[string]any)
			if !ok {
				return fmt.Errorf("config file: %s%s must be a mapping of %s's flags", prefix, k, k)
			}
			if err := validateKeys(sub, ch, prefix+k+"."); err != nil {
				return err
			}
			continue
		}
		if k == "config" || k == "help" || !known[k] {
			return fmt.Errorf("config file: unknown key %q: valid keys are %s", prefix+k, strings.Join(sorted(known), ", "))
		}
	}
	return nil
}

// allFlags names the flags of node and, since config keys may be flat, of
// every command below it.
func allFlags(node *kong.Node) []string {
	var out []string
	for _, f := range node.Flags {
		if f.Name != "help" && f.Name != "config" {
			out = append(out, f.Name)
		}
	}
	for _, ch := range node.Children {
		out = append(out, allFlags(ch)...)
	}
	return out
}

func sorted(set map[string]bool) []string {
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
