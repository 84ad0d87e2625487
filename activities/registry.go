package activities

import (
	"fmt"
	"reflect"

	"github.com/setflow/setflow/policy"
	"github.com/setflow/setflow/reaction"
)

// Names lists the activity types the workflows run: each built-in step's
// (policy's steps table) and the reaction's own (package reaction).
func Names() []string {
	names := reaction.Activities()
	for _, d := range policy.Steps() {
		if name := d.Activity(); name != "" {
			names = append(names, name)
		}
	}
	return names
}

// ByName returns the method of a that implements each of Names, for the
// worker to register under that name. A name a has no method for is an
// error: the worker refuses to start rather than fail the step's first event.
func ByName(a *Activities) (map[string]any, error) {
	v := reflect.ValueOf(a)
	out := map[string]any{}
	for _, name := range Names() {
		m := v.MethodByName(name)
		if !m.IsValid() {
			return nil, fmt.Errorf("activities: no method implements activity %s", name)
		}
		out[name] = m.Interface()
	}
	return out, nil
}
