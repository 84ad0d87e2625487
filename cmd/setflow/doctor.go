package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/setflow/setflow/codec"
	"github.com/setflow/setflow/config"
	"github.com/setflow/setflow/internal/temporalsetup"
	"github.com/setflow/setflow/kakaoapi"
	"github.com/setflow/setflow/mailer"
	"github.com/setflow/setflow/migrations"
	"github.com/setflow/setflow/secevent"
)

// runDoctor is `setflow doctor`: it checks a configuration against the real
// endpoints before go-live — a wrong issuer, audience, admin key or app id
// answers every genuine delivery with 4xx, which Kakao counts as errors and
// answers by pausing the webhook — and exits non-zero on any failure.
func runDoctor(ctx context.Context, args []string) error { return doctor(ctx, args, os.Stdout) }

// Check outcomes. SKIP is for what the configuration turns off.
const (
	checkPass = "PASS"
	checkFail = "FAIL"
	checkSkip = "SKIP"
)

type doctorRun struct {
	c      *common
	out    io.Writer
	http   *http.Client
	failed int
	total  int
	// jwksURL is the key set discovery named ("" when none was found).
	jwksURL string
	// temporal is the connected client, nil when Temporal is unreachable.
	temporal client.Client
}

func (d *doctorRun) report(name, status, detail string) {
	d.total++
	if status == checkFail {
		d.failed++
	}
	// Details quote URLs and library errors: never a secret.
	fmt.Fprintf(d.out, "%-4s  %-20s %s\n", status, name, config.Secrets().Scrub(detail))
}

func doctor(ctx context.Context, args []string, out io.Writer) error {
	c := newCommon("doctor")
	c.ing.Register(c.fs)
	c.kko.Register(c.fs)
	c.tmp.Register(c.fs)
	c.wrk.Reactions.Register(c.fs)
	c.wrk.TestUsers.Register(c.fs)
	timeout := c.fs.Duration("timeout", 10*time.Second, "bound on each check")
	log, err := c.parse(args)
	if err != nil {
		return err
	}
	d := &doctorRun{c: c, out: out, http: &http.Client{Timeout: *timeout,
		// Kakao does not follow redirects, nor does setflow's key fetch.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	step := func(f func(ctx context.Context)) {
		cctx, cancel := context.WithTimeout(ctx, *timeout)
		defer cancel()
		f(cctx)
	}
	fmt.Fprintf(out, "setflow doctor: checking this configuration against its endpoints\n\n")
	d.settings()
	d.keys()
	step(d.discovery)
	step(d.jwks)
	step(d.kakaoAdminKeys)
	step(d.postgres)
	step(func(ctx context.Context) {
		topts, err := temporalOptions(&c.tmp, log)
		if err == nil {
			d.temporal, err = client.DialContext(ctx, topts)
		}
		if err != nil {
			d.report("temporal", checkFail, fmt.Sprintf("%s (namespace %s): %v", c.tmp.Address, c.tmp.Namespace, err))
			return
		}
		d.report("temporal", checkPass, fmt.Sprintf("%s, namespace %s", c.tmp.Address, c.tmp.Namespace))
	})
	if d.temporal != nil {
		defer d.temporal.Close()
	}
	step(d.searchAttributes)
	step(d.smtp)
	step(d.crm)
	fmt.Fprintln(out)
	if d.failed > 0 {
		return fmt.Errorf("%d of %d checks failed", d.failed, d.total)
	}
	fmt.Fprintf(out, "all %d checks passed\n", d.total)
	return nil
}

// settings: what the commands would refuse at start-up.
func (d *doctorRun) settings() {
	c := d.c
	errs := []error{c.ing.Validate(), c.kko.Validate(), c.wrk.Reactions.Validate(), c.wrk.TestUsers.Validate()}
	if err := errors.Join(errs...); err != nil {
		d.report("settings", checkFail, strings.ReplaceAll(err.Error(), "\n", "; "))
		return
	}
	d.report("settings", checkPass, fmt.Sprintf("issuer %s, %d audience(s), %d test account(s) in shadow",
		c.ing.Issuer, len(c.ing.AudienceList()), len(c.wrk.TestUsers.IDs)))
}

// keys: the audit key and the payload encryption keys.
func (d *doctorRun) keys() {
	if missing := (config.KeyNeeds{AuditKey: true}).Missing(); len(missing) > 0 {
		d.report("audit key", checkFail, errors.Join(missing...).Error())
	} else {
		d.report("audit key", checkPass, config.EnvAuditKey+" is set")
	}
	ring, err := codec.ConfiguredKeyRing(d.c.tmp.CodecKeys)
	switch {
	case errors.Is(err, codec.ErrNoKeys):
		d.report("codec keys", checkFail, (config.KeyNeeds{CodecKeys: true}).Missing()[0].Error())
	case err != nil:
		d.report("codec keys", checkFail, err.Error())
	default:
		d.report("codec keys", checkPass, fmt.Sprintf("%d key(s), current %s", len(ring.IDs()), ring.CurrentID()))
	}
}

// discovery reads the issuer's ssf-configuration, else sse-configuration,
// and requires its issuer to be the configured one exactly.
func (d *doctorRun) discovery(ctx context.Context) {
	issuer := d.c.ing.Issuer
	urls, err := secevent.WellKnownURLs(issuer)
	if err != nil {
		d.report("discovery", checkFail, fmt.Sprintf("issuer %q: %v", issuer, err))
		return
	}
	var problems []string
	for _, u := range urls {
		body, status, err := d.get(ctx, u, nil)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", u, err))
			continue
		}
		if status == http.StatusNotFound {
			problems = append(problems, u+": 404")
			continue
		}
		if status != http.StatusOK {
			problems = append(problems, fmt.Sprintf("%s: HTTP %d", u, status))
			continue
		}
		var doc struct {
			Issuer  string `json:"issuer"`
			JWKSURI string `json:"jwks_uri"`
		}
		if err := json.Unmarshal(body, &doc); err != nil {
			d.report("discovery", checkFail, fmt.Sprintf("%s is not a JSON configuration document", u))
			return
		}
		if doc.Issuer != issuer {
			d.report("discovery", checkFail, fmt.Sprintf("%s names issuer %q, SETFLOW_ISSUER is %q: every SET would be refused", u, doc.Issuer, issuer))
			return
		}
		d.jwksURL = doc.JWKSURI
		d.report("discovery", checkPass, fmt.Sprintf("%s: issuer matches, jwks_uri %s", u, doc.JWKSURI))
		return
	}
	if !d.c.ing.Discovery {
		d.report("discovery", checkSkip, "no discovery document ("+strings.Join(problems, "; ")+"); SETFLOW_KEY_DISCOVERY is off, the pinned JWKS is used")
		return
	}
	d.report("discovery", checkFail, "no discovery document: "+strings.Join(problems, "; "))
}

// jwks fetches and parses the key set the verifier will use, with the
// verifier's own parser.
func (d *doctorRun) jwks(ctx context.Context) {
	u := d.c.ing.JWKSURL
	if d.c.ing.Discovery && d.jwksURL != "" {
		u = d.jwksURL
	}
	if u == "" {
		d.report("jwks", checkFail, "no JWKS URL: set SETFLOW_JWKS_URL or turn on SETFLOW_KEY_DISCOVERY")
		return
	}
	j := secevent.NewJWKS(d.c.ing.Issuer, secevent.JWKSOptions{URL: u, HTTPClient: d.http})
	if err := j.Refresh(ctx); err != nil {
		d.report("jwks", checkFail, fmt.Sprintf("%s: %v", u, err))
		return
	}
	d.report("jwks", checkPass, u+": reachable, signature keys parsed")
}

// kakaoAdminKeys calls Kakao's IP list API with every configured admin key:
// the call the IP allowlist makes, and the cheapest one that proves a key.
func (d *doctorRun) kakaoAdminKeys(ctx context.Context) {
	k := d.c.kko
	if len(k.AdminKeys) == 0 {
		d.report("kakao admin key", checkSkip, config.EnvKakaoAdminKeys+" is not set: the unlink and Talk webhooks answer 503 and Kakao API steps are skipped")
		return
	}
	var networks int
	for i, key := range k.AdminKeys {
		nets, err := (&kakaoapi.InboundIPs{BaseURL: k.APIURL, Key: key, Client: d.http}).Fetch(ctx)
		if err != nil {
			d.report("kakao admin key", checkFail, fmt.Sprintf("key %d of %d: %v (a 401 means Kakao does not accept it)", i+1, len(k.AdminKeys), err))
			return
		}
		networks = len(nets)
	}
	d.report("kakao admin key", checkPass, fmt.Sprintf("%d key(s) accepted by %s/v1/system/ips (%d callback networks); app id %s is not checkable here: compare it with the console",
		len(k.AdminKeys), strings.TrimRight(k.APIURL, "/"), networks, k.AppID))
}

// postgres: reachable, and its schema at this binary's migration version.
func (d *doctorRun) postgres(ctx context.Context) {
	db, err := openDB(ctx, d.c.db.URL)
	if err != nil {
		d.report("postgres", checkFail, err.Error())
		return
	}
	defer db.Close()
	current, latest, err := migrations.Status(ctx, db.DB)
	switch {
	case err != nil:
		d.report("postgres", checkFail, fmt.Sprintf("schema version unreadable (run setflow migrate): %v", err))
	case current < latest:
		d.report("postgres", checkFail, fmt.Sprintf("schema at version %d, this binary needs %d: run setflow migrate", current, latest))
	case current > latest:
		d.report("postgres", checkFail, fmt.Sprintf("schema at version %d is newer than this binary's %d: deploy the newer binary", current, latest))
	default:
		d.report("postgres", checkPass, fmt.Sprintf("reachable, schema at version %d", current))
	}
}

// searchAttributes: setflow's custom search attributes on the namespace.
func (d *doctorRun) searchAttributes(ctx context.Context) {
	if d.temporal == nil {
		d.report("search attributes", checkSkip, "temporal is unreachable")
		return
	}
	missing, err := temporalsetup.Missing(ctx, d.temporal, d.c.tmp.Namespace)
	switch {
	case err != nil:
		d.report("search attributes", checkFail, err.Error())
	case len(missing) > 0:
		d.report("search attributes", checkFail, fmt.Sprintf("namespace %s lacks %s: register them (README, Temporal setup)",
			d.c.tmp.Namespace, strings.Join(missing, ", ")))
	default:
		d.report("search attributes", checkPass, "namespace "+d.c.tmp.Namespace+" has all of setflow's")
	}
}

// smtp: the server answers with its 220 greeting (TLS first for "tls").
func (d *doctorRun) smtp(ctx context.Context) {
	r := d.c.wrk.Reactions
	if r.SMTPHost == "" {
		d.report("smtp", checkSkip, "SETFLOW_SMTP_HOST is not set: security notices are not sent")
		return
	}
	port := r.SMTPPort
	if port == 0 {
		switch r.SMTPTLS {
		case mailer.TLSNone:
			port = 25
		case mailer.TLSImplicit:
			port = 465
		default:
			port = 587
		}
	}
	addr := net.JoinHostPort(r.SMTPHost, strconv.Itoa(port))
	var dialer net.Dialer
	conn, err := dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		d.report("smtp", checkFail, fmt.Sprintf("%s: %v", addr, err))
		return
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if r.SMTPTLS == mailer.TLSImplicit {
		tc := tls.Client(conn, &tls.Config{ServerName: r.SMTPHost, MinVersion: tls.VersionTLS12})
		if err := tc.HandshakeContext(ctx); err != nil {
			d.report("smtp", checkFail, fmt.Sprintf("%s: TLS: %v", addr, err))
			return
		}
		conn = tc
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "220") {
		d.report("smtp", checkFail, fmt.Sprintf("%s: no SMTP greeting (%q, %v)", addr, strings.TrimSpace(line), err))
		return
	}
	_, _ = io.WriteString(conn, "QUIT\r\n")
	d.report("smtp", checkPass, fmt.Sprintf("%s answers (TLS mode %s)", addr, r.SMTPTLS))
}

// crm: HubSpot accepts the token on a one-contact read; the generic webhook
// answers at all (a POST-only endpoint may say 405).
func (d *doctorRun) crm(ctx context.Context) {
	r := d.c.wrk.Reactions
	switch r.CRM {
	case "hubspot":
		u := strings.TrimRight(r.HubSpotURL, "/") + "/crm/v3/objects/contacts?limit=1"
		_, status, err := d.get(ctx, u, map[string]string{"Authorization": "Bearer " + r.HubSpotToken})
		switch {
		case err != nil:
			d.report("crm", checkFail, fmt.Sprintf("hubspot %s: %v", r.HubSpotURL, err))
		case status == http.StatusUnauthorized || status == http.StatusForbidden:
			d.report("crm", checkFail, fmt.Sprintf("hubspot %s refuses SETFLOW_HUBSPOT_TOKEN (HTTP %d)", r.HubSpotURL, status))
		case status/100 != 2:
			d.report("crm", checkFail, fmt.Sprintf("hubspot %s: HTTP %d", r.HubSpotURL, status))
		default:
			d.report("crm", checkPass, "hubspot "+r.HubSpotURL+" accepts the token")
		}
	case "webhook":
		_, status, err := d.get(ctx, r.CRMWebhookURL, nil)
		switch {
		case err != nil:
			d.report("crm", checkFail, fmt.Sprintf("webhook %s: %v", config.RedactURL(r.CRMWebhookURL), err))
		case status >= 500:
			d.report("crm", checkFail, fmt.Sprintf("webhook %s: HTTP %d", config.RedactURL(r.CRMWebhookURL), status))
		default:
			d.report("crm", checkPass, fmt.Sprintf("webhook %s answers (HTTP %d to a GET)", config.RedactURL(r.CRMWebhookURL), status))
		}
	default:
		d.report("crm", checkSkip, "SETFLOW_CRM is none")
	}
}

// get fetches u (at most 1 MiB of its body).
func (d *doctorRun) get(ctx context.Context, u string, header map[string]string) ([]byte, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Accept", "application/json")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := d.http.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return body, resp.StatusCode, err
}
