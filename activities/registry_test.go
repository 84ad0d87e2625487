package activities

import (
	"context"
	"reflect"
	"testing"

	"github.com/setflow/setflow/audit"
	"github.com/setflow/setflow/event"
	"github.com/setflow/setflow/guard"
	"github.com/setflow/setflow/policy"
	"github.com/setflow/setflow/reaction"
)

// Every activity the workflows name is a method of Activities with the
// shape the workflows call it with: a step's takes a reaction.StepInput.
func TestEveryActivityIsImplemented(t *testing.T) {
	fns, err := ByName(&Activities{})
	if err != nil {
		t.Fatal(err)
	}
	step := reflect.TypeOf(func(context.Context, reaction.StepInput) (reaction.StepResult, error) {
		return reaction.StepResult{}, nil
	})
	want := map[string]reflect.Type{
		reaction.PlanReaction: reflect.TypeOf(func(context.Context, event.Envelope) ([]reaction.PlannedEvent, error) { return nil, nil }),
		reaction.RecordAudit:  reflect.TypeOf(func(context.Context, audit.Record) error { return nil }),
		reaction.ParkEvent:    reflect.TypeOf(func(context.Context, reaction.ParkInput) error { return nil }),
		reaction.UnparkEvent:  reflect.TypeOf(func(context.Context, string) error { return nil }),
		reaction.ApplyEvent: reflect.TypeOf(func(context.Context, reaction.ApplyInput) (reaction.ApplyResult, error) {
			return reaction.ApplyResult{}, nil
		}),
		reaction.SyncCRM: reflect.TypeOf(func(context.Context, reaction.SyncInput) (reaction.StepResult, error) {
			return reaction.StepResult{}, nil
		}),
		reaction.RunPurge: reflect.TypeOf(func(context.Context, reaction.RunPurgeInput) (reaction.RunPurgeResult, error) {
			return reaction.RunPurgeResult{}, nil
		}),
		reaction.AdmitDestructive: reflect.TypeOf(func(context.Context, guard.Request) (guard.Verdict, error) { return guard.Verdict{}, nil }),
	}
	for _, d := range policy.Steps() {
		if name := d.Activity(); name != "" {
			want[name] = step
		}
	}
	if len(fns) != len(want) {
		t.Fatalf("%d activities registered, want %d", len(fns), len(want))
	}
	for name, typ := range want {
		if got := reflect.TypeOf(fns[name]); got != typ {
			t.Errorf("%s: %v, want %v", name, got, typ)
		}
	}
}
