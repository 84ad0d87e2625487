// Package policy maps event types to the ordered reaction steps that run for
// them. The built-in default is product.md's reaction table; a service
// overrides it per event type with a YAML (or JSON) file, without code changes.
//
//	version: 1
//	events:
//	  account-disabled:
//	    steps:
//	      - revoke_sessions
//	      - lock_account
//	      - send_notice: {notice: account-hijacked, when: {reason: hijacking}}
//	  credential-change:
//	    shadow: true          # log and audit what would run, run nothing
//	  user-unlinked:
//	    steps:
//	      - revoke_sessions
//	      - mark_unlinked
//	      - schedule_purge: {after: 720h}
//
// Event types are named by their short name ("account-disabled") or full URI;
// a URI entry wins over a short-name entry. "*" applies to unknown types.
package policy

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Step is one reaction step with its parameters.
type Step struct {
	Name   string            `json:"name"`
	Params map[string]string `json:"params,omitempty"`
	// When, if set, runs the step only when every named event field equals
	// the given value (e.g. reason: hijacking).
	When map[string]string `json:"when,omitempty"`
}

// Reaction is what runs for one event type.
type Reaction struct {
	Steps []Step `json:"steps"`
	// Shadow audits the steps as "shadow" and runs none: a safe way to try a
	// policy change on live traffic.
	Shadow bool `json:"shadow,omitempty"`
}

// Policy is a validated mapping from event type to reaction.
type Policy struct {
	byType map[string]Reaction
}

// For returns the reaction for an event, looked up by full type URI, then
// short name, then "*". Unknown types get no steps (stored and audited only).
func (p *Policy) For(eventType, name string) Reaction {
	if r, ok := p.byType[eventType]; ok {
		return r
	}
	if r, ok := p.byType[name]; ok {
		return r
	}
	return p.byType["*"]
}

// Types lists the configured event types, sorted.
func (p *Policy) Types() []string {
	out := make([]string, 0, len(p.byType))
	for t := range p.byType {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// file is the on-disk shape.
type file struct {
	Version int                  `yaml:"version"`
	Events  map[string]fileEntry `yaml:"events"`
}

type fileEntry struct {
	Steps  []yaml.Node `yaml:"steps"`
	Shadow bool        `yaml:"shadow"`
	// Replace: false merges nothing — an entry always replaces the default for
	// its type; the field exists to make that explicit in files.
}

// Load reads a policy file and lays it over the default: each event type named
// in the file replaces the default reaction for that type.
func Load(path string, extra ...string) (*Policy, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	p, err := Parse(data, extra...)
	if err != nil {
		return nil, fmt.Errorf("policy %s: %w", path, err)
	}
	return p, nil
}

// Parse decodes and validates a policy document (YAML or JSON). extra names
// steps the service registered itself, beyond the built-in catalogue.
func Parse(data []byte, extra ...string) (*Policy, error) {
	var f file
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("not a valid policy document: %w", err)
	}
	if f.Version != 1 {
		return nil, fmt.Errorf("version must be 1, got %d", f.Version)
	}
	known := catalogue(extra)
	p := Default()
	var errs []error
	for typ, entry := range f.Events {
		if strings.TrimSpace(typ) == "" {
			errs = append(errs, errors.New("events: empty event type"))
			continue
		}
		r := Reaction{Shadow: entry.Shadow}
		for i, node := range entry.Steps {
			st, err := decodeStep(&node)
			if err == nil {
				err = validate(st, known)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("events.%s.steps[%d] (line %d): %w", typ, i, node.Line, err))
				continue
			}
			r.Steps = append(r.Steps, st)
		}
		p.byType[typ] = r
	}
	if len(errs) > 0 {
		sort.Slice(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
		return nil, errors.Join(errs...)
	}
	return p, nil
}

// decodeStep accepts `name` or `name: {param: value, when: {field: value}}`.
func decodeStep(n *yaml.Node) (Step, error) {
	switch n.Kind {
	case yaml.ScalarNode:
		return Step{Name: n.Value}, nil
	case yaml.MappingNode:
		if len(n.Content) != 2 {
			return Step{}, errors.New("a step is a name or a single `name: {params}` mapping")
		}
		st := Step{Name: n.Content[0].Value}
		var raw map[string]any
		if err := n.Content[1].Decode(&raw); err != nil {
			return Step{}, fmt.Errorf("step %s: parameters must be a mapping: %w", st.Name, err)
		}
		for k, v := range raw {
			if k == "when" {
				cond, ok := v.(map[string]any)
				if !ok {
					return Step{}, fmt.Errorf("step %s: when must map event fields to values", st.Name)
				}
				st.When = map[string]string{}
				for ck, cv := range cond {
					st.When[ck] = fmt.Sprint(cv)
				}
				continue
			}
			if st.Params == nil {
				st.Params = map[string]string{}
			}
			switch v.(type) {
			case map[string]any, []any:
				return Step{}, fmt.Errorf("step %s: parameter %s must be a scalar", st.Name, k)
			}
			st.Params[k] = fmt.Sprint(v)
		}
		return st, nil
	}
	return Step{}, errors.New("a step is a name or a single `name: {params}` mapping")
}

// paramCheck validates one parameter value.
type paramCheck func(string) error

func oneOf(vals ...string) paramCheck {
	return func(v string) error {
		for _, x := range vals {
			if v == x {
				return nil
			}
		}
		return fmt.Errorf("must be one of %s", strings.Join(vals, ", "))
	}
}

func durationParam(v string) error {
	d, err := time.ParseDuration(v)
	if err != nil {
		return fmt.Errorf("must be a duration like 720h: %v", err)
	}
	if d < 0 {
		return errors.New("must not be negative")
	}
	return nil
}

func validate(st Step, known map[string]map[string]paramCheck) error {
	params, ok := known[st.Name]
	if !ok {
		names := make([]string, 0, len(known))
		for n := range known {
			names = append(names, n)
		}
		sort.Strings(names)
		return fmt.Errorf("unknown step %q (known: %s)", st.Name, strings.Join(names, ", "))
	}
	for k, v := range st.Params {
		check, ok := params[k]
		if params == nil { // extension steps take any parameters
			continue
		}
		if !ok {
			return fmt.Errorf("step %s has no parameter %q", st.Name, k)
		}
		if check != nil {
			if err := check(v); err != nil {
				return fmt.Errorf("step %s: %s %w", st.Name, k, err)
			}
		}
	}
	return nil
}
