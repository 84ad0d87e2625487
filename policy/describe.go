package policy

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// Matches reports whether every `when` field of the step equals the event
// payload's (the payload decoded as a JSON object).
func (s Step) Matches(payload map[string]any) bool {
	for k, want := range s.When {
		got, ok := payload[k]
		if !ok || fmt.Sprint(got) != want {
			return false
		}
	}
	return true
}

// String names a step with its parameters: send_notice(notice=account-hijacked).
func (s Step) String() string {
	if len(s.Params) == 0 {
		return s.Name
	}
	keys := make([]string, 0, len(s.Params))
	for k := range s.Params {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + s.Params[k]
	}
	return s.Name + "(" + strings.Join(parts, ",") + ")"
}

// StepsFor describes the steps p would run for one event (type URI, short
// name, payload), in order: steps whose condition does not hold are left
// out, and a shadow reaction's steps are marked "shadow:". It runs nothing:
// `setflow policy test` compares two policies with it.
func StepsFor(p *Policy, eventType, name string, payload json.RawMessage) []string {
	r := p.For(eventType, name)
	fields := map[string]any{}
	_ = json.Unmarshal(payload, &fields)
	var out []string
	for _, st := range r.Steps {
		if !st.Matches(fields) {
			continue
		}
		d := st.String()
		if r.Shadow {
			d = "shadow:" + d
		}
		out = append(out, d)
	}
	return out
}
