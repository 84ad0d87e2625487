package secevent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"golang.org/x/sync/singleflight"
)

// DiscoveryOptions configures a Discovery key source.
type DiscoveryOptions struct {
	Issuer     string        // required; the discovered "issuer" must equal it exactly
	HTTPClient *http.Client  // default: a client that follows no redirects
	Timeout    time.Duration // bound on one discovery document fetch; default 2s
	// JWKS configures the key set found through discovery. Its URL is not
	// used for discovery; when set, it is the pinned fallback used only if
	// neither discovery document can be fetched (never when a document was
	// fetched but names another issuer).
	JWKS JWKSOptions
}

// TransmitterConfiguration is the part of an SSF (or legacy SSE) transmitter
// configuration metadata document that a receiver needs.
type TransmitterConfiguration struct {
	Issuer                   string
	JWKSURI                  string
	DeliveryMethodsSupported []string // a string in Kakao's document, an array per SSF
	// Source is the URL the document was read from ("" for the pinned fallback).
	Source string
}

// Discovery is a KeySource that finds the issuer's JWKS through
// /.well-known/ssf-configuration, falling back to the legacy
// /.well-known/sse-configuration that Kakao documents, and then to the
// pinned JWKS URL if one is configured. The well-known segment is inserted
// between host and issuer path (RFC 8414 §3.1 style).
//
// The discovered configuration is cached for JWKS.MaxKeyAge and re-read
// afterwards; failed discovery is retried at most once per
// JWKS.MinRefreshInterval.
type Discovery struct {
	opts DiscoveryOptions
	fetchPolicy
	sf singleflight.Group

	mu           sync.Mutex
	cfg          *TransmitterConfiguration
	jwks         *JWKS
	discoveredAt time.Time
	lastAttempt  time.Time
	lastErr      error
}

// errIssuerMismatch marks a discovery document naming another issuer.
var errIssuerMismatch = errors.New("discovery document issuer does not match the configured issuer")

// NewDiscovery returns a Discovery key source.
func NewDiscovery(opts DiscoveryOptions) *Discovery {
	d := &Discovery{
		opts:        opts,
		fetchPolicy: newFetchPolicy(opts.HTTPClient, opts.Timeout, opts.JWKS.MinRefreshInterval, opts.JWKS.MaxKeyAge, opts.JWKS.Now),
	}
	if d.opts.JWKS.HTTPClient == nil {
		d.opts.JWKS.HTTPClient = d.client
	}
	return d
}

// WellKnownURLs returns the discovery URLs tried for issuer, in order.
func WellKnownURLs(issuer string) ([]string, error) {
	u, err := url.Parse(issuer)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return nil, errors.New("issuer is not an absolute URL")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, errors.New("issuer must not have a query or fragment")
	}
	path := strings.TrimSuffix(u.EscapedPath(), "/")
	out := make([]string, 0, 2)
	for _, name := range []string{"ssf-configuration", "sse-configuration"} {
		out = append(out, u.Scheme+"://"+u.Host+"/.well-known/"+name+path)
	}
	return out, nil
}

// Key implements KeySource.
func (d *Discovery) Key(ctx context.Context, issuer, kid string) (*jose.JSONWebKey, error) {
	if issuer != d.opts.Issuer {
		return nil, fmt.Errorf("%w (issuer not served by this key source)", ErrUnknownKey)
	}
	j, err := d.keySet(ctx)
	if err != nil {
		return nil, err
	}
	return j.Key(ctx, issuer, kid)
}

// Refresh discovers the configuration (if not yet known) and fetches the
// key set, so that the first delivery does not pay for it. Call it at
// start-up; a failure is not fatal (lookups retry).
func (d *Discovery) Refresh(ctx context.Context) error {
	j, err := d.keySet(ctx)
	if err != nil {
		return err
	}
	return j.Refresh(ctx)
}

// Configuration returns the discovered configuration, discovering it if needed.
func (d *Discovery) Configuration(ctx context.Context) (*TransmitterConfiguration, error) {
	if _, err := d.keySet(ctx); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	c := *d.cfg
	c.DeliveryMethodsSupported = append([]string(nil), d.cfg.DeliveryMethodsSupported...)
	return &c, nil
}

// keySet returns the current JWKS, (re)discovering when needed.
func (d *Discovery) keySet(ctx context.Context) (*JWKS, error) {
	d.mu.Lock()
	j := d.jwks
	stale := j != nil && d.now().Sub(d.discoveredAt) >= d.maxAge
	d.mu.Unlock()
	if j != nil && !stale {
		return j, nil
	}
	if j != nil {
		// Re-discover in the background; keep serving the known key set.
		go func() { _ = d.discover(context.WithoutCancel(ctx)) }()
		return j, nil
	}
	err := d.discover(ctx)
	d.mu.Lock()
	j, lastErr := d.jwks, d.lastErr
	d.mu.Unlock()
	if j != nil {
		return j, nil
	}
	if err == nil || errors.Is(err, errRateLimited) {
		err = lastErr
	}
	if err == nil {
		err = errors.New("discovery failed")
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return nil, fmt.Errorf("%w: %w", ErrKeysUnavailable, err)
}

func (d *Discovery) discover(ctx context.Context) error {
	ch := d.sf.DoChan("discover", func() (any, error) {
		d.mu.Lock()
		now := d.now()
		interval := d.minInt
		if d.jwks == nil && interval > noKeysRetryInterval {
			interval = noKeysRetryInterval
		}
		if !d.lastAttempt.IsZero() && now.Sub(d.lastAttempt) < interval {
			d.mu.Unlock()
			return nil, errRateLimited
		}
		d.lastAttempt = now
		d.mu.Unlock()

		cfg, err := d.fetchConfiguration(context.WithoutCancel(ctx))
		d.mu.Lock()
		defer d.mu.Unlock()
		d.lastErr = err
		if err != nil {
			return nil, err
		}
		if d.jwks == nil || d.jwks.URL() != cfg.JWKSURI {
			o := d.opts.JWKS
			o.URL = cfg.JWKSURI
			d.jwks = NewJWKS(d.opts.Issuer, o)
		}
		d.cfg = cfg
		d.discoveredAt = d.now()
		return nil, nil
	})
	select {
	case r := <-ch:
		return r.Err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// fetchConfiguration tries the well-known documents in order. A document
// that cannot be fetched (network error, 404, unparsable) moves on to the
// next source; a document naming another issuer stops discovery with an
// error, since that means misconfiguration or an attack.
func (d *Discovery) fetchConfiguration(ctx context.Context) (*TransmitterConfiguration, error) {
	urls, err := WellKnownURLs(d.opts.Issuer)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, u := range urls {
		fctx, cancel := context.WithTimeout(ctx, d.tmo)
		body, err := httpGetJSON(fctx, d.client, u)
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", u, err))
			continue
		}
		cfg, err := parseConfiguration(body, d.opts.Issuer)
		if errors.Is(err, errIssuerMismatch) {
			return nil, fmt.Errorf("%s: %w", u, err)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", u, err))
			continue
		}
		cfg.Source = u
		return cfg, nil
	}
	if d.opts.JWKS.URL != "" {
		return &TransmitterConfiguration{Issuer: d.opts.Issuer, JWKSURI: d.opts.JWKS.URL}, nil
	}
	return nil, fmt.Errorf("discovery failed: %w", errors.Join(errs...))
}

// parseConfiguration decodes a transmitter configuration document.
func parseConfiguration(body []byte, issuer string) (*TransmitterConfiguration, error) {
	m, err := decodeObject(body)
	if err != nil {
		return nil, fmt.Errorf("configuration is not a JSON object without duplicate members: %w", err)
	}
	iss, ok := rawString(m["issuer"])
	if !ok {
		return nil, errors.New("configuration lacks issuer")
	}
	if iss != issuer {
		return nil, errIssuerMismatch
	}
	jwksURI, ok := rawString(m["jwks_uri"])
	if !ok || jwksURI == "" {
		return nil, errors.New("configuration lacks jwks_uri")
	}
	ju, err := url.Parse(jwksURI)
	if err != nil || ju.Host == "" {
		return nil, errors.New("configuration jwks_uri is not an absolute URL")
	}
	// Keys must come over HTTPS, unless the issuer itself is plain HTTP
	// (local test transmitters).
	if ju.Scheme != "https" && !(ju.Scheme == "http" && strings.HasPrefix(issuer, "http://")) {
		return nil, errors.New("configuration jwks_uri is not https")
	}
	cfg := &TransmitterConfiguration{Issuer: iss, JWKSURI: jwksURI}
	if raw, ok := m["delivery_methods_supported"]; ok {
		if s, ok := rawString(raw); ok {
			cfg.DeliveryMethodsSupported = []string{s}
		} else if arr, ok := rawStringArray(raw); ok {
			cfg.DeliveryMethodsSupported = arr
		} else {
			return nil, errors.New("configuration delivery_methods_supported is neither a string nor an array of strings")
		}
	}
	return cfg, nil
}
