package kakaoapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// InboundIPs fetches the addresses Kakao sends webhooks from (the source of
// ingress.IPAllowlist), with
// GET <BaseURL>/v1/system/ips?rule_type=inbound and "Authorization: KakaoAK <Key>"
// (any of the app's keys works; setflow uses an admin key).
//
// Kakao documents the response only as {"inbound": IP[], "outbound": IP[],
// "updatedDate": "YYYY-MM-DD"}, where an inbound entry is of type "callback"
// (webhook senders) or "scrap" (page scrapers), without naming the members of
// an entry. So the parsing assumes as little as possible:
//   - "inbound" is an array of objects; an object is a callback entry when one
//     of its string members equals "callback" (any case), or it has a member
//     named "callback";
//   - "inbound" may instead be an object keyed by type ({"callback": ...});
//   - the addresses are every string (or string in an array, or in a comma- or
//     space-separated string) anywhere in a callback entry that parses as an
//     IP address or a CIDR; other strings (the type, descriptions) are skipped.
//
// A response without any callback address is an error, so a changed format
// never empties the allowlist (ingress.IPAllowlist.Refresh keeps the previous list).
type InboundIPs struct {
	BaseURL string
	Key     string
	Client  *http.Client
}

// Fetch returns the callback networks Kakao lists now.
func (k *InboundIPs) Fetch(ctx context.Context) ([]netip.Prefix, error) {
	base := strings.TrimRight(k.BaseURL, "/")
	if base == "" {
		base = DefaultBaseURL
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/system/ips?rule_type=inbound", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "KakaoAK "+k.Key)
	req.Header.Set("Accept", "application/json")
	c := k.Client
	if c == nil {
		c = &http.Client{Timeout: 10 * time.Second}
	}
	resp, err := c.Do(req)
	if err != nil {
		// *url.Error names the URL, never the header.
		return nil, fmt.Errorf("kakao ip list: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("kakao ip list: read: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("kakao ip list: HTTP %d", resp.StatusCode)
	}
	return ParseInboundIPs(body)
}

// ParseInboundIPs extracts the inbound callback networks from a
// /v1/system/ips response, as described on InboundIPs.
func ParseInboundIPs(body []byte) ([]netip.Prefix, error) {
	var doc struct {
		Inbound json.RawMessage `json:"inbound"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("kakao ip list: not a JSON object: %w", err)
	}
	if len(doc.Inbound) == 0 || string(doc.Inbound) == "null" {
		return nil, errors.New("kakao ip list: no inbound list in the response")
	}
	var inbound any
	if err := json.Unmarshal(doc.Inbound, &inbound); err != nil {
		return nil, fmt.Errorf("kakao ip list: inbound: %w", err)
	}
	var out []netip.Prefix
	seen := map[netip.Prefix]bool{}
	add := func(v any) {
		collectPrefixes(v, func(p netip.Prefix) {
			if !seen[p] {
				seen[p] = true
				out = append(out, p)
			}
		})
	}
	switch in := inbound.(type) {
	case []any:
		for _, e := range in {
			obj, ok := e.(map[string]any)
			if !ok {
				continue
			}
			if v, ok := lookupFold(obj, "callback"); ok {
				add(v)
				continue
			}
			if isCallbackEntry(obj) {
				add(obj)
			}
		}
	case map[string]any:
		if v, ok := lookupFold(in, "callback"); ok {
			add(v)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("kakao ip list: no inbound callback address in the response")
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return out, nil
}

func lookupFold(obj map[string]any, key string) (any, bool) {
	for k, v := range obj {
		if strings.EqualFold(k, key) {
			return v, true
		}
	}
	return nil, false
}

func isCallbackEntry(obj map[string]any) bool {
	for _, v := range obj {
		if s, ok := v.(string); ok && strings.EqualFold(strings.TrimSpace(s), "callback") {
			return true
		}
	}
	return false
}

func collectPrefixes(v any, add func(netip.Prefix)) {
	switch v := v.(type) {
	case string:
		for _, f := range strings.FieldsFunc(v, func(c rune) bool { return c == ',' || c == ' ' || c == '\n' || c == '\t' }) {
			if p, ok := parsePrefix(f); ok {
				add(p)
			}
		}
	case []any:
		for _, e := range v {
			collectPrefixes(e, add)
		}
	case map[string]any:
		for _, e := range v {
			collectPrefixes(e, add)
		}
	}
}

// parsePrefix reads a CIDR, or a bare address standing for itself.
func parsePrefix(s string) (netip.Prefix, bool) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, false
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		return p.Masked(), true
	}
	addr, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, false
	}
	addr = addr.Unmap()
	return netip.PrefixFrom(addr, addr.BitLen()), true
}
