// Command setflow receives Kakao's webhooks and runs their reactions on
// Temporal. Sub-commands: ingress, relay, worker, migrate, dev, send, events,
// audit, codec-server, bench.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/setflow/setflow/config"
)

type command struct {
	name  string
	short string
	run   func(ctx context.Context, args []string) error
}

var commands = []command{
	{"ingress", "serve the webhook endpoints (verify, store in the inbox, answer)", runIngress},
	{"relay", "move inbox entries to Temporal", runRelay},
	{"worker", "run the reaction workflows and activities", runWorker},
	{"migrate", "apply the database migrations", runMigrate},
	{"dev", "run ingress, relay and worker in one process with a local signing key", runDev},
	{"send", "sign a test Security Event Token with the dev key and POST it", runSend},
	{"events", "list, show and retry events (operators)", runEvents},
	{"audit", "verify the audit chain or show an event's audit trail", runAudit},
	{"codec-server", "decrypt payloads for the Temporal UI (SETFLOW_CODEC_KEYS)", runCodecServer},
	{"bench", "measure verification and ingress throughput against the real inbox", runBench},
	{"temporal", "setup: register setflow's search attributes on the namespace", runTemporal},
	{"holds", "list, approve or reject work held by the blast-radius guard", runHolds},
	{"policy", "test FILE: what a candidate policy would change on stored events", runPolicy},
	{"doctor", "check a configuration against its real endpoints before go-live", runDoctor},
	{"version", "print the build's version", runVersion},
}

func usage() {
	fmt.Fprintf(os.Stderr, "usage: setflow <command> [flags]\n\ncommands:\n")
	for _, c := range commands {
		fmt.Fprintf(os.Stderr, "  %-13s %s\n", c.name, c.short)
	}
	fmt.Fprintf(os.Stderr, "\nRun 'setflow <command> -h' for a command's flags and environment variables.\n")
}

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	name := os.Args[1]
	if name == "-h" || name == "--help" || name == "help" {
		usage()
		return
	}
	// The first SIGTERM or interrupt asks for a graceful stop (readiness
	// fails, requests drain, the relay's batch and the worker's running
	// activities finish within their timeouts); a second one ends the
	// process at once (the signal's default action).
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop()
	}()
	for _, c := range commands {
		if c.name == name {
			err := c.run(ctx, os.Args[2:])
			flushTracing()
			if errors.Is(err, flag.ErrHelp) {
				return
			}
			if err != nil && !errors.Is(err, context.Canceled) {
				// A library's error may quote a URL with its password.
				fmt.Fprintf(os.Stderr, "setflow %s: %s\n", name, config.Secrets().Scrub(err.Error()))
				os.Exit(1)
			}
			return
		}
	}
	fmt.Fprintf(os.Stderr, "setflow: unknown command %q\n\n", name)
	usage()
	os.Exit(2)
}
