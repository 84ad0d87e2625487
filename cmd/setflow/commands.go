package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"go.temporal.io/sdk/client"
	"golang.org/x/sync/errgroup"

	"github.com/setflow/setflow/codec"
	"github.com/setflow/setflow/config"
	"github.com/setflow/setflow/ingress"
	"github.com/setflow/setflow/kakaoapi"
	"github.com/setflow/setflow/metrics"
	"github.com/setflow/setflow/migrations"
	"github.com/setflow/setflow/secevent"
	"github.com/setflow/setflow/simulator"
)

// common parses the flags every long-running command shares.
type common struct {
	fs  *flag.FlagSet
	db  config.Database
	tmp config.Temporal
	log config.Log
	ing config.Ingress
	kko config.Kakao
	// wrk: the worker's back ends (worker, dev).
	wrk config.Worker
	// key: the audit key (ingress, relay, worker, dev).
	key config.AuditKey
	adm config.Admin
	// svc: the metrics and probe ports, trc: tracing (long-running
	// commands only).
	svc config.Service
	trc config.Tracing
	// rel prunes dispatched inbox entries (relay, dev).
	rel config.Relay
	// aud: the relay's audit checkpoints (relay, dev).
	aud config.Audit
	// keys and needs: the command refuses to start without the keys it
	// needs unless -insecure-dev-keys (see requireKeys).
	keys  config.KeyPolicy
	needs config.KeyNeeds
	// sd is how the command stops on SIGTERM (defaults unless its flags
	// are registered).
	sd config.Shutdown
}

// requireKeys makes the command refuse to start without these keys, unless
// -insecure-dev-keys is given; call before parse. `setflow dev` does not call
// it: it runs with its development keys.
func (c *common) requireKeys(needs config.KeyNeeds) {
	c.needs = needs
	c.keys.Register(c.fs)
}

// relayFlags adds the relay's own flags.
func (c *common) relayFlags() {
	c.rel.Register(c.fs)
	c.aud.Register(c.fs)
}

// serveMetrics adds the -metrics-listen and tracing flags; call before parse.
func (c *common) serveMetrics(def string) {
	c.svc.RegisterMetrics(c.fs, def)
	c.trc.Register(c.fs)
}

func newCommon(name string) *common {
	c := &common{fs: flag.NewFlagSet("setflow "+name, flag.ContinueOnError), sd: config.DefaultShutdown()}
	c.db.Register(c.fs)
	c.log.Register(c.fs)
	c.key.Register(c.fs)
	return c
}

func (c *common) parse(args []string) (*slog.Logger, error) {
	if err := config.Parse(c.fs, args); err != nil {
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
	// Groups a command did not register hold valid zero values.
	if err := errors.Join(c.sd.Validate(), c.rel.Validate(), c.trc.Validate()); err != nil {
		return nil, err
	}
	if c.needs != (config.KeyNeeds{}) {
		if err := c.keys.Enforce(log, c.needs); err != nil {
			return nil, err
		}
	}
	return log, nil
}

// openTool is the start of an operator command (events, holds): it parses
// the flags, wherever they stand among the arguments, builds the logger and
// opens the database. The caller closes db.
func (c *common) openTool(ctx context.Context, args []string) (*slog.Logger, *sqlx.DB, error) {
	if err := parseFlagsAnywhere(c.fs, args); err != nil {
		return nil, nil, err
	}
	log, err := c.log.Logger()
	if err != nil {
		return nil, nil, err
	}
	db, err := openDB(ctx, c.db.URL)
	if err != nil {
		return nil, nil, err
	}
	return log, db, nil
}

func runMigrate(ctx context.Context, args []string) error {
	c := newCommon("migrate")
	wait := c.fs.Bool("wait", false, "apply nothing: wait until the schema is at this binary's version (an init container's job while the migrate Job runs)")
	waitFor := c.fs.Duration("wait-timeout", 10*time.Minute, "give up -wait after this long")
	log, err := c.parse(args)
	if err != nil {
		return err
	}
	db, err := openDB(ctx, c.db.URL)
	if err != nil {
		return err
	}
	defer db.Close()
	if *wait {
		return waitForSchema(ctx, log, db.DB, *waitFor)
	}
	if err := migrations.Up(ctx, db.DB); err != nil {
		return err
	}
	if err := sealAudit(ctx, log, db); err != nil {
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
		keys = secevent.NewDiscovery(secevent.DiscoveryOptions{Issuer: c.ing.Issuer,
			// The pinned URL is the fallback when neither well-known document exists.
			JWKS: secevent.JWKSOptions{URL: c.ing.JWKSURL}})
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
	c.kko.Register(c.fs)
	c.sd.RegisterDelay(c.fs)
	c.sd.RegisterTimeout(c.fs)
	c.serveMetrics("")
	c.requireKeys(config.KeyNeeds{AuditKey: true})
	log, err := c.parse(args)
	if err != nil {
		return err
	}
	metrics.Serve(ctx, log, c.svc.MetricsListen)
	startTracing(ctx, log, "setflow-ingress", c.trc)
	v, err := c.verifier()
	if err != nil {
		return err
	}
	if err := c.kko.Validate(); err != nil {
		return err
	}
	db, err := openDB(ctx, c.db.URL)
	if err != nil {
		return err
	}
	defer db.Close()
	srv := newIngress(db, log, v, c.ing)
	defer recordUnknowns(ctx, log, db, srv)()
	if err := configureKakao(ctx, log, srv, &c.kko, c.ing.Issuer, c.key.Bytes(log)); err != nil {
		return err
	}
	return serveHTTP(ctx, log, ingress.HTTPServer(c.ing.Listen, tracedHandler(srv.Handler())), srv.Drain, c.sd)
}

func runRelay(ctx context.Context, args []string) error {
	c := newCommon("relay")
	c.relayFlags()
	c.sd.RegisterTimeout(c.fs)
	log, topts, db, err := c.backendService(ctx, args)
	if err != nil {
		return err
	}
	defer db.Close()
	stopHealth, err := startServiceHealth(ctx, log, c.svc.HealthListen, db.DB, topts)
	if err != nil {
		return err
	}
	defer stopHealth()
	reportBacklog(db)
	return runRelayLoop(ctx, log, db, c.db.URL, topts, c.rel.InboxRetention, c.sd.Timeout, c.aud, c.key)
}

// backendService is the start of the relay and the worker: it adds the
// Temporal, metrics and probe flags and the keys both refuse to start
// without, then runs temporalService. The caller closes db.
func (c *common) backendService(ctx context.Context, args []string) (*slog.Logger, client.Options, *sqlx.DB, error) {
	c.tmp.Register(c.fs)
	c.serveMetrics("")
	c.svc.RegisterHealth(c.fs)
	c.requireKeys(config.KeyNeeds{AuditKey: true, CodecKeys: true})
	return c.temporalService(ctx, args)
}

// temporalService parses the flags, serves metrics, and builds the Temporal
// options and the database handle: the start of every long-running command
// that talks to Temporal. The caller closes db.
func (c *common) temporalService(ctx context.Context, args []string) (*slog.Logger, client.Options, *sqlx.DB, error) {
	log, err := c.parse(args)
	if err != nil {
		return nil, client.Options{}, nil, err
	}
	metrics.Serve(ctx, log, c.svc.MetricsListen)
	startTracing(ctx, log, serviceName(c.fs.Name()), c.trc)
	topts, err := temporalOptions(&c.tmp, log)
	if err != nil {
		return nil, client.Options{}, nil, err
	}
	db, err := openDB(ctx, c.db.URL)
	if err != nil {
		return nil, client.Options{}, nil, err
	}
	return log, topts, db, nil
}

func runWorker(ctx context.Context, args []string) error {
	c := newCommon("worker")
	c.wrk.Register(c.fs)
	c.adm.Register(c.fs, "", config.KakaoIssuer)
	c.sd.RegisterWorker(c.fs)
	log, topts, db, err := c.backendService(ctx, args)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := startAdmin(ctx, log, db, c.adm, c.wrk.Identity, c.key); err != nil {
		return err
	}
	stopHealth, err := startServiceHealth(ctx, log, c.svc.HealthListen, db.DB, topts)
	if err != nil {
		return err
	}
	defer stopHealth()
	return runWorkerLoop(ctx, log, db, c.wrk, topts, c.sd.WorkerStopTimeout)
}

// Development identity: `setflow dev` accepts exactly what `setflow send` signs.
const (
	devIssuer   = "https://dev.setflow.local"
	devAudience = "setflow-dev-app"
	devKeyPath  = config.DevKeyPath
	// The admin key and app id `setflow dev` accepts on the other three
	// webhooks. Development only: a real key comes from SETFLOW_KAKAO_ADMIN_KEYS.
	devAdminKey = config.DevAdminKey
	devAppID    = "setflow-dev"
	// devStatusToken is the status API's token under `setflow dev` when
	// SETFLOW_STATUS_TOKENS is unset.
	devStatusToken = config.DevStatusToken
)

// configureKakao sets up the admin-key webhooks and the optional IP allowlist
// on srv, and keeps Kakao's IP list fresh until ctx ends. keyHash is the audit
// key (see auditKey), which keys the unlink dedupe key.
func configureKakao(ctx context.Context, log *slog.Logger, srv *ingress.Server, k *config.Kakao, issuer string, keyHash []byte) error {
	srv.Kakao = ingress.Kakao{AdminKeys: k.AdminKeys, AppID: k.AppID, Issuer: issuer, UnlinkWindow: k.UnlinkDedupeWindow, KeyHash: keyHash}
	if err := srv.Kakao.Validate(); err != nil {
		return err
	}
	if !k.Enabled() {
		log.Warn("no " + config.EnvKakaoAdminKeys + ": the unlink, Talk Share and Talk Channel webhooks answer 401")
	}
	if !k.AllowlistEnabled() {
		return nil
	}
	static, err := k.AllowlistPrefixes()
	if err != nil {
		return err
	}
	trusted, err := k.TrustedProxyPrefixes()
	if err != nil {
		return err
	}
	al := &ingress.IPAllowlist{Static: static, Trusted: trusted, Log: log}
	if k.IPAllowlistFromKakao {
		al.Source = &kakaoapi.InboundIPs{BaseURL: k.APIURL, Key: k.AdminKeys[0]}
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		next := k.IPAllowlistRefresh
		if err := al.Refresh(rctx); err != nil {
			log.Error("kakao ip list unavailable; only the configured networks are allowed until it loads", "error", err)
			next = 10 * time.Second
		}
		cancel()
		go func() {
			t := time.NewTimer(next)
			defer t.Stop()
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			al.Run(ctx, k.IPAllowlistRefresh)
		}()
	}
	srv.Allowlist = al
	log.Info("ip allowlist on", "static_networks", len(static), "kakao_networks", len(al.Fetched()), "trusted_proxies", len(trusted))
	return nil
}

func runDev(ctx context.Context, args []string) error {
	c := newCommon("dev")
	c.tmp.Register(c.fs)
	c.relayFlags()
	c.wrk.Register(c.fs)
	c.adm.Register(c.fs, ":8082", devIssuer)
	c.sd.RegisterTimeout(c.fs)
	c.sd.RegisterWorker(c.fs)
	// No load balancer to tell: the ingress drains at once.
	c.sd.Delay = 0
	c.ing.RegisterServer(c.fs)
	var dev config.Dev
	dev.RegisterKey(c.fs)
	c.serveMetrics(":9090")
	log, topts, db, err := c.temporalService(ctx, args)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := migrations.Up(ctx, db.DB); err != nil {
		return err
	}
	if len(c.adm.Tokens) == 0 && c.adm.TLSClientCA == "" {
		c.adm.Tokens = []string{devStatusToken}
	}
	if err := startAdmin(ctx, log, db, c.adm, c.wrk.Identity, c.key); err != nil {
		return err
	}
	reportBacklog(db)
	key, err := simulator.LoadOrCreateKey(dev.KeyPath)
	if err != nil {
		return err
	}
	// Tell `setflow send` and `setflow audit user` on this machine where the
	// key is and which issuer this server accepts.
	if abs, err := filepath.Abs(dev.KeyPath); err == nil {
		if err := saveDevState(devState{KeyPath: abs, Issuer: devIssuer}); err != nil {
			log.Warn("could not record the dev state for setflow send", "error", err)
		}
	}
	v, err := devVerifier(key)
	if err != nil {
		return err
	}
	srv := newIngress(db, log, v, c.ing)
	srv.Kakao = ingress.Kakao{AdminKeys: []string{devAdminKey}, AppID: devAppID, Issuer: devIssuer, KeyHash: c.key.Bytes(log)}
	defer recordUnknowns(ctx, log, db, srv)()
	if err := srv.Kakao.Validate(); err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/", tracedHandler(srv.Handler()))
	mux.Handle("/dev/jwks.json", key.JWKSHandler())
	// With payload encryption on, the Temporal UI decrypts through this
	// endpoint (up.sh starts the dev server with --ui-codec-endpoint).
	if ring, err := codec.ConfiguredKeyRing(c.tmp.CodecKeys); err == nil {
		mux.Handle("/codec/", http.StripPrefix("/codec", codec.Handler(ring, codec.HandlerOptions{
			CORSOrigins: []string{"http://localhost:8233", "http://127.0.0.1:8233"}})))
	}
	printDevBanner(c, topts)
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return serveHTTP(ctx, log, ingress.HTTPServer(c.ing.Listen, mux), srv.Drain, c.sd) })
	g.Go(func() error {
		return runRelayLoop(ctx, log, db, c.db.URL, topts, c.rel.InboxRetention, c.sd.Timeout, c.aud, c.key)
	})
	g.Go(func() error { return runWorkerLoop(ctx, log, db, c.wrk, topts, c.sd.WorkerStopTimeout) })
	return g.Wait()
}

// devVerifier accepts what `setflow send` signs with the dev key.
func devVerifier(key *simulator.Key) (*secevent.Verifier, error) {
	keys, err := secevent.NewStaticKeys(devIssuer, key.JWKS())
	if err != nil {
		return nil, err
	}
	return secevent.NewVerifier(secevent.Config{Issuer: devIssuer, Audiences: []string{devAudience}, Keys: keys})
}

// printDevBanner tells the developer where everything of `setflow dev` is
// and how to send it events.
func printDevBanner(c *common, topts client.Options) {
	fmt.Fprintf(os.Stderr, `
setflow dev is starting
  ingress:     http://localhost%[1]s%[2]s   (issuer %[3]s, audience %[4]s)
  dev JWKS:    http://localhost%[1]s/dev/jwks.json
  Temporal:    %[5]s   (UI: http://localhost:8233)
  status API:  http://localhost%[11]s/v1/subjects/1234   (Authorization: Bearer %[12]s unless SETFLOW_STATUS_TOKENS is set)
  send a test event:   go run ./cmd/setflow send account-disabled --user 1234 --field reason=hijacking
  other webhooks:      %[6]s, %[7]s, %[8]s
                       (admin key %[9]q, app id %[10]q)
                       go run ./cmd/setflow send --webhook unlink --user 1234
                       go run ./cmd/setflow send --webhook talk-share --field campaign=spring
                       go run ./cmd/setflow send --webhook talk-channel --user 1234 --field event=blocked

`, listenPort(c.ing.Listen), ingress.PathAccountStatus, devIssuer, devAudience, topts.HostPort,
		ingress.PathUnlink, ingress.PathTalkShare, ingress.PathTalkChannel, devAdminKey, devAppID, listenPort(c.adm.Listen), devStatusToken)
}

func listenPort(listen string) string {
	if i := strings.LastIndexByte(listen, ':'); i >= 0 {
		return listen[i:]
	}
	return listen
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
	var dev config.Dev
	dev.RegisterSend(fs)
	dev.RegisterKey(fs)
	issuer := fs.String("issuer", devIssuer, "iss claim")
	audience := fs.String("audience", devAudience, "aud claim")
	user := fs.String("user", "1234567890", "Kakao user id (sub)")
	jti := fs.String("jti", "", "jti (default: random); reuse one to see deduplication")
	repeat := fs.Int("repeat", 1, "send the same token this many times (duplicates are answered 202 and run once)")
	extra := fields{}
	fs.Var(extra, "field", "extra event member key=value, repeatable (e.g. reason=hijacking)")
	webhook := fs.String("webhook", "set", "webhook to call: set (a signed SET), unlink, talk-share or talk-channel")
	appID := fs.String("app-id", devAppID, "app_id of an unlink webhook")
	resourceID := fs.String("resource-id", "", "X-Kakao-Resource-ID of a Talk webhook (default: random); reuse one to see deduplication")
	encoding := fs.String("encoding", simulator.EncodingJSON, "unlink and talk-share: query (GET), form or json (POST)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: setflow send [flags] <event-type>...\n       setflow send --webhook unlink|talk-share|talk-channel [flags]\n\nevent types: %s\n\nflags:\n", strings.Join(simulator.EventNames(), ", "))
		fs.PrintDefaults()
	}
	types, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if err := config.EnvError(fs); err != nil {
		return err
	}
	if *webhook != "set" {
		if len(types) > 0 {
			return fmt.Errorf("--webhook %s takes no event types; set members with --field", *webhook)
		}
		return sendWebhook(ctx, *webhook, strings.TrimSuffix(dev.SendURL, ingress.PathAccountStatus), dev.SendAdminKey, *user, *appID, *resourceID, *encoding, extra, max(1, *repeat))
	}
	if len(types) == 0 {
		fs.Usage()
		return errors.New("name at least one event type")
	}
	// Without a key named, send finds the one `setflow dev` uses.
	named := ""
	if config.IsSet(fs, "dev-key") {
		named = dev.KeyPath
	}
	path, err := findDevKey(named)
	if err != nil {
		return err
	}
	key, err := simulator.LoadOrCreateKey(path)
	if err != nil {
		return err
	}
	for _, typ := range types {
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
			status, body, err := simulator.Post(ctx, nil, dev.SendURL, token)
			if err != nil {
				return fmt.Errorf("post %s: %w", typ, err)
			}
			fmt.Printf("%s jti=%s -> %d %s\n", typ, claims["jti"], status, strings.TrimSpace(body))
		}
	}
	return nil
}

// sendWebhook calls one of the admin-key webhooks of `setflow dev` the way
// Kakao does. The admin key comes from SETFLOW_SEND_ADMIN_KEY (default: the
// dev key, config.Dev), never from a flag.
func sendWebhook(ctx context.Context, kind, baseURL, adminKey, user, appID, resourceID, encoding string, extra fields, repeat int) error {
	d := simulator.Delivery{Encoding: encoding, AdminKey: adminKey, ResourceID: resourceID}
	switch kind {
	case "unlink":
		d.Path = ingress.PathUnlink
		d.Fields = map[string]any{"app_id": appID, "user_id": user, "referrer_type": "UNLINK_FROM_APPS"}
	case "talk-share":
		d.Path = ingress.PathTalkShare
		d.Fields = map[string]any{"CHAT_TYPE": "MemoChat", "HASH_CHAT_ID": "dev-" + simulator.NewID()[:8]}
	case "talk-channel":
		d.Path, d.Encoding = ingress.PathTalkChannel, simulator.EncodingJSON
		d.Fields = map[string]any{"event": "added", "id": user, "id_type": "app_user_id",
			"channel_public_id": "_setflowdev", "channel_uuid": "@setflow-dev", "updated_at": time.Now().UTC().Format(time.RFC3339)}
	default:
		return fmt.Errorf("unknown webhook %q (want set, unlink, talk-share or talk-channel)", kind)
	}
	if kind != "unlink" && d.ResourceID == "" {
		d.ResourceID = simulator.NewID()
	}
	for k, v := range extra {
		d.Fields[k] = v
	}
	c := &http.Client{Timeout: 5 * time.Second}
	for range repeat {
		req, err := d.Request(ctx, baseURL)
		if err != nil {
			return err
		}
		resp, err := c.Do(req)
		if err != nil {
			return fmt.Errorf("%s: %w", kind, err)
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		fmt.Printf("%s %s resource_id=%s -> %d %s\n", kind, req.Method, d.ResourceID, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	return nil
}

// parseInterspersed parses flags before and after positional arguments
// (`send account-disabled --user 1234`), which package flag alone stops at.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return positional, nil
		}
		positional = append(positional, args[0])
		args = args[1:]
	}
}
