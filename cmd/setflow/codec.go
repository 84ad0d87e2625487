package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/setflow/setflow/codec"
	"github.com/setflow/setflow/config"
	"github.com/setflow/setflow/metrics"
)

// applyCodec turns on payload encryption for a Temporal client or worker when
// SETFLOW_CODEC_KEYS is set. Every process talking to the namespace (relay,
// worker, operator commands) must use the same key ring.
func applyCodec(opts *client.Options, log *slog.Logger, keys string) error {
	ring, err := codec.ConfiguredKeyRing(keys)
	if errors.Is(err, codec.ErrNoKeys) {
		log.Warn("payload encryption off: " + codec.EnvKeys + " is not set, workflow inputs, results and errors are stored in clear in Temporal")
		return nil
	}
	if err != nil {
		return err
	}
	opts.DataConverter = codec.DataConverter(ring)
	opts.FailureConverter = codec.FailureConverter(ring)
	log.Info("payload encryption on", "current_key_id", ring.CurrentID(), "key_ids", ring.IDs())
	return nil
}

// runCodecServer serves the remote codec for the Temporal UI and CLI
// (Temporal UI: Settings → Data Encoder, or TEMPORAL_CODEC_ENDPOINT; CLI:
// --codec-endpoint http://host:8081 --codec-auth "Bearer <token>").
func runCodecServer(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("setflow codec-server", flag.ContinueOnError)
	var lc config.Log
	lc.Register(fs)
	var keys config.KeyPolicy
	keys.Register(fs)
	var cc config.Codec
	cc.Register(fs)
	var svc config.Service
	svc.RegisterMetrics(fs, "")
	listen := &cc.Listen
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: setflow codec-server [flags]\n\n"+
			"Decrypts (and encrypts) Temporal payloads for the Temporal UI and CLI.\n\n"+
			"environment (secrets, never flags):\n"+
			"  %s  key ring id:base64key[,id:base64key…], first = current (required)\n"+
			"  %s  bearer token required on /encode and /decode (required unless -%s)\n\nflags:\n",
			codec.EnvKeys, codec.EnvAuthToken, config.FlagInsecureDevKeys)
		fs.PrintDefaults()
	}
	if err := config.Parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	log, err := lc.Logger()
	if err != nil {
		return err
	}
	slog.SetDefault(log)

	if err := keys.Enforce(log, config.KeyNeeds{CodecAuthToken: true}); err != nil {
		return err
	}
	ring, err := codec.ConfiguredKeyRing(cc.Keys)
	if err != nil {
		return fmt.Errorf("%w (the codec server needs the workers' key ring)", err)
	}
	token := cc.AuthToken
	if token == "" {
		// Only with -insecure-dev-keys.
		log.Warn("codec server has no " + codec.EnvAuthToken + ": anyone who can reach it can decrypt payloads")
		if !codecLoopback(*listen) {
			log.Warn("codec server listens beyond loopback without a token", "listen", *listen)
		}
	}
	originList := cc.CORSOrigins

	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.Handle("/", metrics.InstrumentCodec(codec.Handler(ring, codec.HandlerOptions{CORSOrigins: originList, AuthToken: token})))
	srv := &http.Server{
		Addr:              *listen,
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}

	metrics.Serve(ctx, log, svc.MetricsListen)
	return serve(ctx, "codec server", srv, func() {
		log.Info("codec server listening", "addr", *listen, "cors_origins", originList,
			"auth", token != "", "current_key_id", ring.CurrentID(), "key_ids", ring.IDs())
	})
}

// codecLoopback reports whether listen binds only a loopback address.
func codecLoopback(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
