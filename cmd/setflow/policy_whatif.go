package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/setflow/setflow/config"
	"github.com/setflow/setflow/event"
	"github.com/setflow/setflow/inbox"
	"github.com/setflow/setflow/policy"
)

// runPolicy implements `setflow policy test FILE`: evaluate a candidate policy
// against stored events and print, per event type, what would run
// differently from the current policy. It reads the inbox and runs nothing.
func runPolicy(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] != "test" {
		fmt.Fprintln(os.Stderr, "usage: setflow policy test FILE [-since 24h] [-type T] [-current FILE]")
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			return flag.ErrHelp
		}
		return errors.New("unknown policy command")
	}
	c := newCommon("policy test")
	since := c.fs.Duration("since", 24*time.Hour, "events received within this long")
	typ := c.fs.String("type", "", "only this event type (short name such as account-disabled, or the full URI)")
	inForce, err := config.FromEnv[config.Reactions]()
	if err != nil {
		return err
	}
	current := c.fs.String("current", inForce.PolicyFile, "the policy in force (default: env SETFLOW_POLICY_FILE; empty: the built-in default)")
	limit := c.fs.Int("limit", 100000, "at most this many stored events")
	if err := parseFlagsAnywhere(c.fs, args[1:]); err != nil {
		return err
	}
	if c.fs.NArg() != 1 {
		return errors.New("usage: setflow policy test FILE [-since 24h] [-type T] [-current FILE]")
	}
	if _, err := c.log.Logger(); err != nil {
		return err
	}
	candidate, err := policy.Load(c.fs.Arg(0))
	if err != nil {
		return fmt.Errorf("candidate policy: %w", err)
	}
	cur := policy.Default()
	if *current != "" {
		if cur, err = policy.Load(*current); err != nil {
			return fmt.Errorf("current policy: %w", err)
		}
	}
	db, err := openDB(ctx, c.db.URL)
	if err != nil {
		return err
	}
	defer db.Close()
	events, err := storedEvents(ctx, inbox.NewPostgres(db), time.Now().Add(-*since), *limit)
	if err != nil {
		return err
	}
	return printWhatIf(os.Stdout, whatIf(cur, candidate, events, *typ), *since)
}

// storedEvents reads the events of the inbox entries received since then.
func storedEvents(ctx context.Context, store inbox.Store, since time.Time, limit int) ([]event.Event, error) {
	entries, err := store.List(ctx, inbox.Filter{From: since, Limit: limit, OldestFirst: true})
	if err != nil {
		return nil, err
	}
	var out []event.Event
	for _, e := range entries {
		out = append(out, e.Envelope.Events...)
	}
	return out, nil
}

// typeDiff is what a candidate policy changes for one event type.
type typeDiff struct {
	Name    string
	Events  int
	Before  []string
	After   []string
	Changed int // events whose steps differ
}

// whatIf plans every event under both policies. Steps are compared as they
// would run for each event: a `when` condition is evaluated on the event.
func whatIf(cur, cand *policy.Policy, events []event.Event, only string) []typeDiff {
	byName := map[string]*typeDiff{}
	var order []string
	for _, ev := range events {
		if only != "" && ev.Name != only && ev.Type != only {
			continue
		}
		d := byName[ev.Name]
		before := policy.StepsFor(cur, ev.Type, ev.Name, ev.Payload)
		after := policy.StepsFor(cand, ev.Type, ev.Name, ev.Payload)
		if d == nil {
			d = &typeDiff{Name: ev.Name, Before: before, After: after}
			byName[ev.Name] = d
			order = append(order, ev.Name)
		}
		d.Events++
		if !slices.Equal(before, after) {
			d.Changed++
			d.Before, d.After = before, after
		}
	}
	slices.Sort(order)
	out := make([]typeDiff, 0, len(order))
	for _, n := range order {
		out = append(out, *byName[n])
	}
	return out
}

func printWhatIf(w io.Writer, diffs []typeDiff, since time.Duration) error {
	if len(diffs) == 0 {
		_, err := fmt.Fprintf(w, "no stored events in the last %s\n", since)
		return err
	}
	changed := 0
	for _, d := range diffs {
		if d.Changed == 0 {
			fmt.Fprintf(w, "%-28s %5d events  unchanged\n", d.Name, d.Events)
			continue
		}
		changed += d.Changed
		fmt.Fprintf(w, "%-28s %5d events  %d would run differently\n", d.Name, d.Events, d.Changed)
		for _, s := range d.Before {
			if !slices.Contains(d.After, s) {
				fmt.Fprintf(w, "    - %s\n", s)
			}
		}
		for _, s := range d.After {
			if !slices.Contains(d.Before, s) {
				fmt.Fprintf(w, "    + %s\n", s)
			}
		}
		if len(d.Before) > 0 && len(d.After) > 0 && sameSet(d.Before, d.After) {
			fmt.Fprintf(w, "    order: %s -> %s\n", strings.Join(d.Before, ", "), strings.Join(d.After, ", "))
		}
	}
	_, err := fmt.Fprintf(w, "\n%d event(s) of the last %s would run differently; nothing was run\n", changed, since)
	return err
}

func sameSet(a, b []string) bool {
	x, y := slices.Clone(a), slices.Clone(b)
	slices.Sort(x)
	slices.Sort(y)
	return slices.Equal(x, y)
}
