package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/setflow/setflow/config"
	"github.com/setflow/setflow/ingress"
	"github.com/setflow/setflow/migrations"
	"github.com/setflow/setflow/secevent"
	"github.com/setflow/setflow/simulator"
)

// common parses the flags every long-running command shares.
type common struct {
	fs  *flag.FlagSet
	db  config.Database
	tmp config.Temporal
	ses config.Sessions
	log config.Log
	ing config.Ingress
}

func newCommon(name string) *common {
	c := &common{fs: flag.NewFlagSet("setflow "+name, flag.ContinueOnError)}
	c.db.Register(c.fs)
	c.log.Register(c.fs)
	return c
}

func (c *common) parse(args []string) (*slog.Logger, error) {
	if err := c.fs.Parse(args); err != nil {
		return nil, err
	}
	if c.fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %s", strings.Join(c.fs.Args(), " "))
	}
	log, err := c.log.Logger()
	if err != nil {
		return nil, err
	}
	slog.SetDefault(log)
	return log, nil
}

func runMigrate(ctx context.Context, args []string) error {
	c := newCommon("migrate")
	log, err := c.parse(args)
	if err != nil {
		return err
	}
	db, err := openDB(ctx, c.db.URL)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := migrations.Up(ctx, db.DB); err != nil {
		return err
	}
	cur, latest, err := migrations.Status(ctx, db.DB)
	if err != nil {
		return err
	}
	log.Info("schema up to date", "version", cur, "latest", latest)
	return nil
}

func (c *common) verifier() (*secevent.Verifier, error) {
	if err := c.ing.Validate(); err != nil {
		return nil, err
	}
	var keys secevent.KeySource
	if c.ing.Discovery {
		keys = secevent.NewDiscovery(secevent.DiscoveryOptions{Issuer: c.ing.Issuer})
	} else {
		keys = secevent.NewJWKS(c.ing.Issuer, secevent.JWKSOptions{URL: c.ing.JWKSURL})
	}
	return secevent.NewVerifier(secevent.Config{
		Issuer: c.ing.Issuer, Audiences: c.ing.AudienceList(), Keys: keys, MaxAge: c.ing.MaxAge,
	})
}

func runIngress(ctx context.Context, args []string) error {
	c := newCommon("ingress")
	c.ing.Register(c.fs)
	log, err := c.parse(args)
	if err != nil {
		return err
	}
	v, err := c.verifier()
	if err != nil {
		return err
	}
	db, err := openDB(ctx, c.db.URL)
	if err != nil {
		return err
	}
	defer db.Close()
	srv := newIngress(db, log, v, c.ing.MaxBody)
	return serveHTTP(ctx, log, ingress.HTTPServer(c.ing.Listen, srv.Handler()))
}

func runRelay(ctx context.Context, args []string) error {
	c := newCommon("relay")
	c.tmp.Register(c.fs)
	log, err := c.parse(args)
	if err != nil {
		return err
	}
	topts, err := c.tmp.ClientOptions(log)
	if err != nil {
		return err
	}
	db, err := openDB(ctx, c.db.URL)
	if err != nil {
		return err
	}
	defer db.Close()
	return runRelayLoop(ctx, log, db, c.db.URL, topts)
}

func runWorker(ctx context.Context, args []string) error {
	c := newCommon("worker")
	c.tmp.Register(c.fs)
	c.ses.Register(c.fs)
	log, err := c.parse(args)
	if err != nil {
		return err
	}
	topts, err := c.tmp.ClientOptions(log)
	if err != nil {
		return err
	}
	db, err := openDB(ctx, c.db.URL)
	if err != nil {
		return err
	}
	defer db.Close()
	return runWorkerLoop(ctx, log, db, c.ses.Schema, topts)
}

// Development identity: `setflow dev` accepts exactly what `setflow send` signs.
const (
	devIssuer   = "https://dev.setflow.local"
	devAudience = "setflow-dev-app"
	devKeyPath  = ".setflow-dev/signing-key.pem"
)

func runDev(ctx context.Context, args []string) error {
	c := newCommon("dev")
	c.tmp.Register(c.fs)
	c.ses.Register(c.fs)
	var listen, keyPath string
	c.fs.StringVar(&listen, "listen", envOr("SETFLOW_LISTEN", ":8080"), "HTTP listen address (env SETFLOW_LISTEN)")
	c.fs.StringVar(&keyPath, "dev-key", envOr("SETFLOW_DEV_KEY", devKeyPath), "development signing key, created if missing (env SETFLOW_DEV_KEY)")
	log, err := c.parse(args)
	if err != nil {
		return err
	}
	topts, err := c.tmp.ClientOptions(log)
	if err != nil {
		return err
	}
	db, err := openDB(ctx, c.db.URL)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := migrations.Up(ctx, db.DB); err != nil {
		return err
	}
	key, err := simulator.LoadOrCreateKey(keyPath)
	if err != nil {
		return err
	}
	keys, err := secevent.NewStaticKeys(devIssuer, key.JWKS())
	if err != nil {
		return err
	}
	v, err := secevent.NewVerifier(secevent.Config{Issuer: devIssuer, Audiences: []string{devAudience}, Keys: keys})
	if err != nil {
		return err
	}
	srv := newIngress(db, log, v, 0)
	mux := http.NewServeMux()
	mux.Handle("/", srv.Handler())
	mux.Handle("/dev/jwks.json", key.JWKSHandler())

	fmt.Fprintf(os.Stderr, `
setflow dev is starting
  ingress:     http://localhost%[1]s%[2]s   (issuer %[3]s, audience %[4]s)
  dev JWKS:    http://localhost%[1]s/dev/jwks.json
  Temporal:    %[5]s   (UI: http://localhost:8233)
  send a test event:   go run ./cmd/setflow send account-disabled --user 1234 --field reason=hijacking

`, listenPort(listen), ingress.PathAccountStatus, devIssuer, devAudience, topts.HostPort)

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return serveHTTP(ctx, log, ingress.HTTPServer(listen, mux)) })
	g.Go(func() error { return runRelayLoop(ctx, log, db, c.db.URL, topts) })
	g.Go(func() error { return runWorkerLoop(ctx, log, db, c.ses.Schema, topts) })
	return g.Wait()
}

func listenPort(listen string) string {
	if i := strings.LastIndexByte(listen, ':'); i >= 0 {
		return listen[i:]
	}
	return listen
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// fields collects repeated -field key=value flags.
type fields map[string]any

func (f fields) String() string { return fmt.Sprint(map[string]any(f)) }
func (f fields) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return errors.New("want key=value")
	}
	f[k] = v
	return nil
}

func runSend(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("setflow send", flag.ContinueOnError)
	url := fs.String("url", envOr("SETFLOW_SEND_URL", "http://localhost:8080"+ingress.PathAccountStatus), "ingress URL (env SETFLOW_SEND_URL)")
	keyPath := fs.String("dev-key", envOr("SETFLOW_DEV_KEY", devKeyPath), "signing key (env SETFLOW_DEV_KEY)")
	issuer := fs.String("issuer", devIssuer, "iss claim")
	audience := fs.String("audience", devAudience, "aud claim")
	user := fs.String("user", "1234567890", "Kakao user id (sub)")
	jti := fs.String("jti", "", "jti (default: random); reuse one to see deduplication")
	repeat := fs.Int("repeat", 1, "send the same token this many times (duplicates are answered 202 and run once)")
	extra := fields{}
	fs.Var(extra, "field", "extra event member key=value, repeatable (e.g. reason=hijacking)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: setflow send [flags] <event-type>...\n\nevent types: %s\n\nflags:\n", strings.Join(simulator.EventNames(), ", "))
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return errors.New("name at least one event type")
	}
	key, err := simulator.LoadOrCreateKey(*keyPath)
	if err != nil {
		return err
	}
	for _, typ := range fs.Args() {
		claims, err := simulator.SET{Issuer: *issuer, Audience: *audience, UserID: *user, EventType: typ,
			Fields: extra, JTI: *jti, IssuedAt: time.Now()}.Claims()
		if err != nil {
			return err
		}
		token, err := key.Sign(claims)
		if err != nil {
			return err
		}
		for range max(1, *repeat) {
			status, body, err := simulator.Post(ctx, nil, *url, token)
			if err != nil {
				return fmt.Errorf("post %s: %w", typ, err)
			}
			fmt.Printf("%s jti=%s -> %d %s\n", typ, claims["jti"], status, strings.TrimSpace(body))
		}
	}
	return nil
}
