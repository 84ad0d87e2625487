package ingress

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/setflow/setflow/secevent"
)

// IPSource fetches a list of allowed sender networks: kakaoapi.InboundIPs
// in production.
type IPSource interface {
	Fetch(ctx context.Context) ([]netip.Prefix, error)
}

// IPAllowlist admits webhook requests only from listed networks: the static
// ones from configuration and, with a Source, the ones it last fetched. It is
// defence in depth only — the admin key and the SET signature remain the
// authentication — and off unless configured.
//
// The client address is the TCP peer, unless the peer is a trusted proxy: then
// X-Forwarded-For is read from the right, skipping trusted proxies, and the
// first address that is not one is the client. Addresses further left were
// written by the client itself and are never believed.
//
// With no network listed yet (e.g. Kakao's list could not be fetched at start)
// every request is refused: the list fails closed.
type IPAllowlist struct {
	Static  []netip.Prefix
	Trusted []netip.Prefix
	Source  IPSource
	Log     *slog.Logger
	fetched atomic.Pointer[[]netip.Prefix]
}

func (a *IPAllowlist) log() *slog.Logger {
	if a.Log != nil {
		return a.Log
	}
	return slog.Default()
}

// Refresh replaces the fetched list with what Source returns now. On any
// failure — including an empty answer — the previous list stays in force.
func (a *IPAllowlist) Refresh(ctx context.Context) error {
	if a.Source == nil {
		return nil
	}
	got, err := a.Source.Fetch(ctx)
	if err == nil && len(got) == 0 {
		err = errors.New("the IP list is empty")
	}
	if err != nil {
		return fmt.Errorf("ip allowlist: refresh: %w", err)
	}
	got = slices.Clone(got)
	a.fetched.Store(&got)
	return nil
}

// Fetched returns the list last fetched from Source.
func (a *IPAllowlist) Fetched() []netip.Prefix {
	if p := a.fetched.Load(); p != nil {
		return *p
	}
	return nil
}

// Run refreshes every interval until ctx ends; after a failure it tries again
// sooner (after a minute at most) and keeps the previous list meanwhile.
func (a *IPAllowlist) Run(ctx context.Context, every time.Duration) {
	if a.Source == nil {
		return
	}
	if every <= 0 {
		every = time.Hour
	}
	for {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := a.Refresh(rctx)
		cancel()
		wait := every
		if err != nil && ctx.Err() == nil {
			wait = min(every, time.Minute)
			a.log().Warn("ip allowlist refresh failed; keeping the previous list", "error", err, "retry_in", wait,
				"networks", len(a.Fetched()))
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// Allowed reports whether addr is in a listed network.
func (a *IPAllowlist) Allowed(addr netip.Addr) bool {
	addr = addr.Unmap()
	if !addr.IsValid() {
		return false
	}
	return containsAddr(a.Static, addr) || containsAddr(a.Fetched(), addr)
}

func containsAddr(prefixes []netip.Prefix, addr netip.Addr) bool {
	for _, p := range prefixes {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// ClientIP returns the address the allowlist judges, as described on IPAllowlist.
func (a *IPAllowlist) ClientIP(r *http.Request) (netip.Addr, bool) {
	peer, ok := parseHostPort(r.RemoteAddr)
	if !ok {
		return netip.Addr{}, false
	}
	if !containsAddr(a.Trusted, peer) {
		return peer, true
	}
	var hops []string
	for _, h := range r.Header.Values("X-Forwarded-For") {
		hops = append(hops, strings.Split(h, ",")...)
	}
	client := peer
	for i := len(hops) - 1; i >= 0; i-- {
		hop := strings.TrimSpace(hops[i])
		if hop == "" {
			continue
		}
		addr, ok := parseHop(hop)
		if !ok {
			// A trusted proxy would not write garbage: refuse rather than guess.
			return netip.Addr{}, false
		}
		client = addr
		if !containsAddr(a.Trusted, addr) {
			return addr, true
		}
	}
	// Every hop is a trusted proxy: judge the left-most one.
	return client, true
}

func parseHostPort(s string) (netip.Addr, bool) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), true
	}
	host, _, err := net.SplitHostPort(s)
	if err != nil {
		host = s
	}
	addr, err := netip.ParseAddr(strings.Trim(host, "[]"))
	if err != nil {
		return netip.Addr{}, false
	}
	return addr.Unmap(), true
}

// parseHop reads one X-Forwarded-For entry: an address, possibly with a port
// or in brackets.
func parseHop(s string) (netip.Addr, bool) {
	if addr, err := netip.ParseAddr(s); err == nil {
		return addr.Unmap(), true
	}
	return parseHostPort(s)
}

// Wrap refuses requests from outside the list with 403 and the RFC 8935
// error body {"err":"access_denied",...}, and passes the others to h.
func (a *IPAllowlist) Wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		addr, ok := a.ClientIP(r)
		if ok && a.Allowed(addr) {
			h.ServeHTTP(w, r)
			return
		}
		client := "unparsable"
		if ok {
			client = addr.String()
		}
		a.log().Info("request from outside the ip allowlist", "path", r.URL.Path, "client", client, "remote", r.RemoteAddr)
		writeError(w, http.StatusForbidden, secevent.CodeAccessDenied, "the sender's address is not allowed")
	})
}
