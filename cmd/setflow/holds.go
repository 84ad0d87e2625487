package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/user"
	"strings"
	"text/tabwriter"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/setflow/setflow/config"
	"github.com/setflow/setflow/guard"
	"github.com/setflow/setflow/guard/guarddb"
	"github.com/setflow/setflow/workflows"
)

const holdsUsage = `usage: setflow holds list [-all] [-event NAME] [-since 1h] [-json]
       setflow holds approve|reject <event-key>... [-by NAME] [-note TEXT]
       setflow holds approve|reject -all [-event NAME] [-since 1h] [-dry-run] [-by NAME] [-note TEXT]`

// runHolds implements `setflow holds`: the work the blast-radius guard held
// (package guard), and operators' decisions on it. A decision is recorded in
// the database with who made it, then each held workflow is signalled; the
// workflow reads the decision back and writes it to the audit trail.
func runHolds(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] != "list" && args[0] != "approve" && args[0] != "reject" {
		fmt.Fprintln(os.Stderr, holdsUsage)
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			return flag.ErrHelp
		}
		return errors.New("unknown holds command")
	}
	sub := args[0]
	c := newCommon("holds " + sub)
	o := registerHoldsFlags(c)
	log, db, err := c.openTool(ctx, args[1:])
	if err != nil {
		return err
	}
	defer db.Close()
	g := guarddb.NewStore(db, guard.Limit{})
	switch sub {
	case "list":
		return listHolds(ctx, g, o)
	case "approve", "reject":
		return decideHoldsCommand(ctx, c, log, g, sub, o)
	}
	return fmt.Errorf("unknown holds command %q (list, approve, reject)", sub)
}

// holdsOptions are the flags of `setflow holds`.
type holdsOptions struct {
	all            bool
	eventName      string
	since          time.Duration
	asJSON, dryRun bool
	op             config.Operator
	note           string
}

func registerHoldsFlags(c *common) *holdsOptions {
	o := &holdsOptions{}
	c.tmp.Register(c.fs)
	c.fs.BoolVar(&o.all, "all", false, "list: decided holds too; approve/reject: every pending hold the filters select")
	c.fs.StringVar(&o.eventName, "event", "", "only holds of this event name (e.g. account-disabled)")
	c.fs.DurationVar(&o.since, "since", 0, "only holds made within this long (e.g. 1h)")
	c.fs.BoolVar(&o.asJSON, "json", false, "list: print JSON lines")
	c.fs.BoolVar(&o.dryRun, "dry-run", false, "approve/reject: list what would be decided, decide nothing")
	o.op.RegisterName(c.fs)
	c.fs.StringVar(&o.note, "note", "", "why, for the audit trail")
	return o
}

// filter selects holds by -event and -since; pending: undecided ones only.
func (o *holdsOptions) filter(pending bool) guard.Filter {
	f := guard.Filter{EventName: o.eventName, Pending: pending}
	if o.since > 0 {
		f.Since = time.Now().Add(-o.since)
	}
	return f
}

// listHolds is `setflow holds list`.
func listHolds(ctx context.Context, g guard.Guard, o *holdsOptions) error {
	holds, err := g.List(ctx, o.filter(!o.all))
	if err != nil {
		return err
	}
	return printHolds(os.Stdout, holds, o.asJSON)
}

// decideHoldsCommand is `setflow holds approve|reject` (sub): the holds
// named by key, or with -all every pending one the filters select.
func decideHoldsCommand(ctx context.Context, c *common, log *slog.Logger, g guard.Guard, sub string, o *holdsOptions) error {
	d := guard.Approved
	if sub == "reject" {
		d = guard.Rejected
	}
	keys := c.fs.Args()
	if o.all == (len(keys) > 0) {
		return errors.New(holdsUsage)
	}
	by := operatorName(o.op)
	if strings.TrimSpace(by) == "" {
		return errors.New("say who decides: -by NAME or SETFLOW_OPERATOR")
	}
	if o.dryRun {
		return previewDecision(ctx, g, o.filter(true), keys, sub)
	}
	tc, _, err := openTemporal(ctx, &c.tmp, log)
	if err != nil {
		return err
	}
	defer tc.Close()
	n, err := decideHolds(ctx, g, tc, o.filter(false), keys, d, by, o.note, os.Stdout)
	if err != nil {
		return err
	}
	if n == 0 && len(keys) > 0 {
		return fmt.Errorf("no pending hold for %s", strings.Join(keys, ", "))
	}
	return nil
}

// previewDecision is -dry-run: it lists the pending holds a decision would
// take (f, narrowed to keys when given) and decides nothing.
func previewDecision(ctx context.Context, g guard.Guard, f guard.Filter, keys []string, sub string) error {
	holds, err := g.List(ctx, f)
	if err != nil {
		return err
	}
	holds = onlyKeys(holds, keys)
	for _, h := range holds {
		fmt.Printf("would %s %s\t%s\t%s\n", sub, h.EventKey, h.EventName, strings.Join(h.Steps, ","))
	}
	fmt.Printf("would %s %d hold(s)\n", sub, len(holds))
	return nil
}

// operatorName is who decides: -by (SETFLOW_OPERATOR), else the OS user.
func operatorName(op config.Operator) string {
	if op.Name != "" {
		return op.Name
	}
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return ""
}

func onlyKeys(holds []guard.Hold, keys []string) []guard.Hold {
	if len(keys) == 0 {
		return holds
	}
	want := map[string]bool{}
	for _, k := range keys {
		want[k] = true
	}
	var out []guard.Hold
	for _, h := range holds {
		if want[h.EventKey] {
			out = append(out, h)
		}
	}
	return out
}

// decideHolds records the decision for the selected pending holds (keys, or
// the filter when keys is empty), then wakes their workflows. A workflow that
// cannot be signalled still finds the decision when it asks the guard again
// (within a quarter of an hour).
func decideHolds(ctx context.Context, g guard.Guard, tc client.Client, f guard.Filter, keys []string,
	d guard.Decision, by, note string, out io.Writer) (int, error) {
	var decided []guard.Hold
	if len(keys) == 0 {
		hs, err := g.Decide(ctx, f, d, by, note)
		if err != nil {
			return 0, err
		}
		decided = hs
	}
	for _, k := range keys {
		kf := f
		kf.EventKey = k
		hs, err := g.Decide(ctx, kf, d, by, note)
		if err != nil {
			return len(decided), err
		}
		decided = append(decided, hs...)
	}
	var unsignalled int
	for _, h := range decided {
		if err := tc.SignalWorkflow(ctx, h.WorkflowID, "", workflows.SignalHoldDecision, h.EventKey); err != nil {
			unsignalled++
			fmt.Fprintf(out, "%s %s: recorded; its workflow %s was not signalled (%v): it picks the decision up when it checks again\n",
				d, h.EventKey, h.WorkflowID, err)
			continue
		}
		fmt.Fprintf(out, "%s %s\t%s\t%s\n", d, h.EventKey, h.EventName, strings.Join(h.Steps, ","))
	}
	fmt.Fprintf(out, "%s %d hold(s) as %s\n", d, len(decided), by)
	if unsignalled > 0 {
		return len(decided), fmt.Errorf("%d workflow(s) not signalled", unsignalled)
	}
	return len(decided), nil
}

func printHolds(out io.Writer, holds []guard.Hold, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(out)
		for _, h := range holds {
			if err := enc.Encode(h); err != nil {
				return err
			}
		}
		return nil
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "HELD\tEVENT KEY\tEVENT\tSTEPS\tSUBJECT\tDECISION\tREASON")
	for _, h := range holds {
		decision := "pending"
		if h.Decision != nil {
			decision = *h.Decision
			if h.DecidedBy != nil {
				decision += " by " + *h.DecidedBy
			}
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", h.HeldAt.Format(time.RFC3339), h.EventKey, h.EventName,
			strings.Join(h.Steps, ","), shortHash(h.SubjectHash), decision, h.Reason)
	}
	return w.Flush()
}

func shortHash(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}
