package secevent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/setflow/setflow/metrics"
	"golang.org/x/sync/singleflight"
)

// JWKS defaults.
const (
	DefaultJWKSTimeout        = 2 * time.Second
	DefaultMinRefreshInterval = 30 * time.Second
	DefaultMaxKeyAge          = 24 * time.Hour
	// maxJWKSBytes caps a JWKS (or discovery) response body. Real key sets
	// are a few KiB.
	maxJWKSBytes = 512 << 10
	// noKeysRetryInterval bounds fetch attempts while no key set has ever
	// been fetched successfully.
	noKeysRetryInterval = time.Second
)

// JWKSOptions configures a JWKS key source.
type JWKSOptions struct {
	URL                string        // the pinned JWKS URL
	HTTPClient         *http.Client  // default: a client that follows no redirects
	Timeout            time.Duration // bound on one whole fetch (connect, headers, body); default 2s
	MinRefreshInterval time.Duration // at most one fetch per interval (unknown kid, stale keys, failures); default 30s
	MaxKeyAge          time.Duration // cached keys older than this are refreshed; on failure they stay in use; default 24h
	Now                func() time.Time
}

// JWKS is a KeySource backed by a JWK Set fetched over HTTP from a pinned URL
// and cached for one issuer.
//
// Fetches are lazy (first lookup), single-flight (concurrent lookups share one
// request) and rate limited: whatever triggers them (an unknown kid, stale
// keys, a previous failure), at most one fetch starts per MinRefreshInterval.
// A flood of tokens with bogus kids therefore costs the transmitter's JWKS
// endpoint at most one request per interval. A failed refresh keeps the
// previously fetched keys in use; a successful one replaces them all (keys
// removed by the issuer stop verifying).
type JWKS struct {
	issuer string
	url    string
	fetchPolicy
	sf singleflight.Group

	mu          sync.RWMutex
	keys        map[string]*jose.JSONWebKey
	fetchedAt   time.Time // last successful fetch
	lastAttempt time.Time // last fetch start
	lastErr     error     // error of the last attempt, nil if it succeeded
	fetches     int       // number of fetch attempts (for tests/metrics)
}

// errRateLimited is returned internally when a fetch was not attempted.
var errRateLimited = errors.New("JWKS refresh rate limited")

// NewJWKS returns a JWKS key source for issuer reading opts.URL.
func NewJWKS(issuer string, opts JWKSOptions) *JWKS {
	return &JWKS{
		issuer:      issuer,
		url:         opts.URL,
		fetchPolicy: newFetchPolicy(opts.HTTPClient, opts.Timeout, opts.MinRefreshInterval, opts.MaxKeyAge, opts.Now),
	}
}

// fetchPolicy is how a key source fetches: the HTTP client, the per-fetch
// timeout, the refresh rate limit, the maximum key age and the clock, with
// the package defaults filled in. JWKS and Discovery share it.
type fetchPolicy struct {
	client *http.Client
	tmo    time.Duration
	minInt time.Duration
	maxAge time.Duration
	now    func() time.Time
}

func newFetchPolicy(client *http.Client, tmo, minInt, maxAge time.Duration, now func() time.Time) fetchPolicy {
	if client == nil {
		client = noRedirectClient()
	}
	if tmo <= 0 {
		tmo = DefaultJWKSTimeout
	}
	if minInt <= 0 {
		minInt = DefaultMinRefreshInterval
	}
	if maxAge <= 0 {
		maxAge = DefaultMaxKeyAge
	}
	if now == nil {
		now = time.Now
	}
	return fetchPolicy{client: client, tmo: tmo, minInt: minInt, maxAge: maxAge, now: now}
}

// noRedirectClient refuses redirects: a pinned key URL that redirects is a
// misconfiguration or an attack, not something to follow silently.
func noRedirectClient() *http.Client {
	return &http.Client{
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// URL returns the JWKS URL.
func (j *JWKS) URL() string { return j.url }

// Fetches returns how many fetches have been attempted.
func (j *JWKS) Fetches() int {
	j.mu.RLock()
	defer j.mu.RUnlock()
	return j.fetches
}

// Key implements KeySource.
func (j *JWKS) Key(ctx context.Context, issuer, kid string) (*jose.JSONWebKey, error) {
	if issuer != j.issuer {
		return nil, fmt.Errorf("%w (issuer not served by this key set)", ErrUnknownKey)
	}
	j.mu.RLock()
	k, ok := j.keys[kid]
	fresh := !j.fetchedAt.IsZero() && j.now().Sub(j.fetchedAt) < j.maxAge
	j.mu.RUnlock()
	if ok && fresh {
		return k, nil
	}
	if ok {
		// Stale but known: answer now and refresh in the background so a
		// slow key server never delays verification.
		go func() { _ = j.refresh(context.WithoutCancel(ctx)) }()
		return k, nil
	}
	err := j.refresh(ctx)
	if err != nil && ctx.Err() != nil {
		return nil, err
	}
	j.mu.RLock()
	k, ok = j.keys[kid]
	lastErr := j.lastErr
	j.mu.RUnlock()
	if ok {
		// Fresh, or stale but kept because the refresh failed or was
		// rate limited.
		return k, nil
	}
	if lastErr != nil {
		// The kid may be genuine but the key set is unreachable: report a
		// receiver-side condition rather than a bad token.
		return nil, fmt.Errorf("%w: %w", ErrKeysUnavailable, lastErr)
	}
	return nil, ErrUnknownKey
}

// Refresh fetches the key set now unless a fetch started less than
// MinRefreshInterval ago. It is useful to warm the cache at start-up.
func (j *JWKS) Refresh(ctx context.Context) error {
	err := j.refresh(ctx)
	if errors.Is(err, errRateLimited) {
		return nil
	}
	return err
}

func (j *JWKS) refresh(ctx context.Context) error {
	ch := j.sf.DoChan("jwks", func() (any, error) {
		j.mu.Lock()
		now := j.now()
		interval := j.minInt
		if j.keys == nil && interval > noKeysRetryInterval {
			// Nothing cached yet: every delivery is failing, so retry
			// sooner (still bounded) instead of waiting a full interval.
			interval = noKeysRetryInterval
		}
		if !j.lastAttempt.IsZero() && now.Sub(j.lastAttempt) < interval {
			j.mu.Unlock()
			return nil, errRateLimited
		}
		j.lastAttempt = now
		j.fetches++
		j.mu.Unlock()

		// The fetch is shared by all waiting callers, so it must not die
		// with the first caller's context; it is bounded by the timeout.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), j.tmo)
		defer cancel()
		keys, err := j.fetch(fctx)
		if err != nil {
			metrics.JWKSFetchFailures.Inc()
		} else {
			metrics.JWKSFetches.Inc()
		}

		j.mu.Lock()
		defer j.mu.Unlock()
		j.lastErr = err
		if err == nil {
			j.keys = keys
			j.fetchedAt = j.now()
		}
		return nil, err
	})
	select {
	case r := <-ch:
		return r.Err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (j *JWKS) fetch(ctx context.Context) (map[string]*jose.JSONWebKey, error) {
	body, err := httpGetJSON(ctx, j.client, j.url)
	if err != nil {
		return nil, err
	}
	keys, _, err := parseJWKS(body)
	return keys, err
}

// httpGetJSON GETs url and returns the body of a 200 response, capped at
// maxJWKSBytes. ctx must carry the whole-fetch deadline.
func httpGetJSON(ctx context.Context, client *http.Client, url string) ([]byte, error) {
	if url == "" {
		return nil, errors.New("no URL configured")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		return nil, &httpStatusError{status: resp.StatusCode}
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, err
	}
	if len(body) > maxJWKSBytes {
		return nil, errors.New("response body too large")
	}
	return body, nil
}

type httpStatusError struct{ status int }

func (e *httpStatusError) Error() string { return fmt.Sprintf("unexpected HTTP status %d", e.status) }
