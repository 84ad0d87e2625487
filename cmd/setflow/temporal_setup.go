package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"go.temporal.io/sdk/client"

	"github.com/setflow/setflow/config"
	"github.com/setflow/setflow/internal/temporalsetup"
)

// runTemporal implements `setflow temporal setup`: register setflow's custom
// search attributes on the namespace (idempotent; the worker does the same
// at start when it is allowed to).
func runTemporal(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] != "setup" {
		fmt.Fprintln(os.Stderr, "usage: setflow temporal setup [-temporal-address host:port] [-temporal-namespace ns]")
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			return flag.ErrHelp
		}
		return errors.New("unknown temporal command")
	}
	c := newCommon("temporal setup")
	c.tmp.Register(c.fs)
	log, err := c.parse(args[1:])
	if err != nil {
		return err
	}
	tc, topts, err := openTemporal(ctx, &c.tmp, log)
	if err != nil {
		return err
	}
	defer tc.Close()
	added, err := temporalsetup.Register(ctx, tc, topts.Namespace)
	if err != nil {
		return err
	}
	if len(added) == 0 {
		fmt.Printf("namespace %s: setflow's search attributes are registered\n", topts.Namespace)
		return nil
	}
	fmt.Printf("namespace %s: registered %s\n", topts.Namespace, strings.Join(added, ", "))
	return nil
}

// openTemporal connects an operator command to Temporal with the options
// every command uses (see temporalOptions).
func openTemporal(ctx context.Context, t *config.Temporal, log *slog.Logger) (client.Client, client.Options, error) {
	topts, err := temporalOptions(t, log)
	if err != nil {
		return nil, topts, err
	}
	tc, err := dialOnce(ctx, topts)
	return tc, topts, err
}

// dialOnce connects to Temporal without waiting for it (unlike dialTemporal,
// for the long-running commands): an operator command fails at once.
func dialOnce(ctx context.Context, topts client.Options) (client.Client, error) {
	tc, err := client.DialContext(ctx, topts)
	if err != nil {
		return nil, fmt.Errorf("temporal: %w", err)
	}
	return tc, nil
}

// ensureSearchAttributes makes sure the namespace has setflow's search
// attributes before the worker runs workflows that set them (an unregistered
// attribute fails the workflow task). It registers missing ones; where the
// worker may not (Temporal Cloud, a locked-down namespace) it says what to run.
func ensureSearchAttributes(ctx context.Context, log *slog.Logger, tc client.Client, namespace string) error {
	added, err := temporalsetup.Register(ctx, tc, namespace)
	if err != nil {
		return fmt.Errorf("%w (register them with `setflow temporal setup` or your Temporal admin tooling; see README, Operating setflow)", err)
	}
	if len(added) > 0 {
		log.Info("registered search attributes", "namespace", namespace, "attributes", added)
	}
	return nil
}
