package config

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/setflow/setflow/kakaoapi"
)

// EnvKakaoAdminKeys names the variable holding the accepted admin keys.
const EnvKakaoAdminKeys = "SETFLOW_KAKAO_ADMIN_KEYS"

// Kakao configures the admin-key authenticated webhooks (unlink, Talk Share,
// Talk Channel), the optional IP allowlist and Kakao's REST API base URL.
type Kakao struct {
	KakaoAPI
	AppID string
	// UnlinkDedupeWindow is how long exact repeats of the same unlink webhook
	// count as one delivery (default one minute); past it a repeat is new.
	UnlinkDedupeWindow time.Duration
	// IPAllowlist are CIDRs (or addresses) allowed to call the webhooks.
	IPAllowlist string
	// IPAllowlistFromKakao adds the callback addresses of Kakao's IP list API.
	IPAllowlistFromKakao bool
	IPAllowlistRefresh   time.Duration
	// TrustedProxies are the CIDRs of proxies whose X-Forwarded-For is believed.
	TrustedProxies string
}

// KakaoAPI is what both the ingress (IP list) and the worker (Kakao API
// steps) need to call Kakao's REST API.
type KakaoAPI struct {
	// AdminKeys are the accepted admin keys, several during a rotation. They
	// are secrets: read from SETFLOW_KAKAO_ADMIN_KEYS only, never a flag (flags
	// show up in process listings), and never logged or printed.
	AdminKeys []string
	APIURL    string
}

func (k *KakaoAPI) settings() []Setting {
	return []Setting{
		{Env: EnvKakaoAdminKeys, Secret: true,
			Usage: "ingress: admin keys of the unlink and Talk webhooks, comma-separated (several during a rotation); worker: the first calls Kakao's API", ptr: &k.AdminKeys},
		{Env: "SETFLOW_KAKAO_API_URL", Flag: "kakao-api-url", Default: KakaoAPIURL, URL: true, Usage: "ingress (IP list), worker: Kakao REST API base `URL`", ptr: &k.APIURL},
	}
}

// KakaoAPIURL is Kakao's REST API.
const KakaoAPIURL = kakaoapi.DefaultBaseURL

// Register adds -kakao-api-url and reads the admin keys (worker).
func (k *KakaoAPI) Register(fs *flag.FlagSet) { register(fs, k.settings()) }

func (k *Kakao) settings() []Setting {
	return append(k.KakaoAPI.settings(), []Setting{
		{Env: "SETFLOW_KAKAO_APP_ID", Flag: "kakao-app-id", Usage: "ingress: Kakao app id the unlink webhook's app_id must equal", ptr: &k.AppID},
		{Env: "SETFLOW_UNLINK_DEDUPE_WINDOW", Flag: "unlink-dedupe-window", Default: "1m",
			Usage: "ingress: exact repeats of one unlink webhook (app, user, referrer type) within this window of the stored one are one delivery", ptr: &k.UnlinkDedupeWindow},
		{Env: "SETFLOW_IP_ALLOWLIST", Flag: "ip-allowlist",
			Usage: "ingress: CIDRs allowed to call the webhooks, comma-separated; empty with -ip-allowlist-from-kakao off disables the allowlist (docs/webhooks.md)", ptr: &k.IPAllowlist},
		{Env: "SETFLOW_IP_ALLOWLIST_FROM_KAKAO", Flag: "ip-allowlist-from-kakao", Default: "false",
			Usage: "ingress: also allow Kakao's inbound callback addresses from its IP list API (needs an admin key)", ptr: &k.IPAllowlistFromKakao},
		{Env: "SETFLOW_IP_ALLOWLIST_REFRESH", Flag: "ip-allowlist-refresh", Default: "1h", Usage: "ingress: how often Kakao's IP list is fetched again", ptr: &k.IPAllowlistRefresh},
		{Env: "SETFLOW_TRUSTED_PROXIES", Flag: "trusted-proxies",
			Usage: "ingress: CIDRs of reverse proxies whose X-Forwarded-For is believed, comma-separated", ptr: &k.TrustedProxies},
	}...)
}

// Register adds the Kakao webhook flags and reads the admin keys from the
// environment.
func (k *Kakao) Register(fs *flag.FlagSet) { register(fs, k.settings()) }

func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

// AllowlistEnabled reports whether the IP allowlist is on.
func (k *Kakao) AllowlistEnabled() bool {
	return strings.TrimSpace(k.IPAllowlist) != "" || k.IPAllowlistFromKakao
}

// Enabled reports whether the admin-key webhooks are configured.
func (k *Kakao) Enabled() bool { return len(k.AdminKeys) > 0 }

// Validate reports inconsistent settings by name. It never quotes a key.
func (k *Kakao) Validate() error {
	var errs []error
	if k.Enabled() && k.AppID == "" {
		errs = append(errs, errors.New("SETFLOW_KAKAO_APP_ID (-kakao-app-id) must be set when "+EnvKakaoAdminKeys+" is"))
	}
	if k.IPAllowlistFromKakao && !k.Enabled() {
		errs = append(errs, errors.New("SETFLOW_IP_ALLOWLIST_FROM_KAKAO needs a key in "+EnvKakaoAdminKeys+" to call Kakao's IP list API"))
	}
	if k.UnlinkDedupeWindow <= 0 {
		errs = append(errs, errors.New("SETFLOW_UNLINK_DEDUPE_WINDOW (-unlink-dedupe-window) must be positive"))
	}
	if _, err := parseCIDRs(k.IPAllowlist); err != nil {
		errs = append(errs, fmt.Errorf("SETFLOW_IP_ALLOWLIST (-ip-allowlist): %w", err))
	}
	if _, err := parseCIDRs(k.TrustedProxies); err != nil {
		errs = append(errs, fmt.Errorf("SETFLOW_TRUSTED_PROXIES (-trusted-proxies): %w", err))
	}
	if k.IPAllowlistFromKakao && k.IPAllowlistRefresh <= 0 {
		errs = append(errs, errors.New("SETFLOW_IP_ALLOWLIST_REFRESH (-ip-allowlist-refresh) must be positive"))
	}
	if k.APIURL == "" {
		errs = append(errs, errors.New("SETFLOW_KAKAO_API_URL (-kakao-api-url) must not be empty"))
	}
	return errors.Join(errs...)
}

// AllowlistPrefixes parses SETFLOW_IP_ALLOWLIST.
func (k *Kakao) AllowlistPrefixes() ([]netip.Prefix, error) { return parseCIDRs(k.IPAllowlist) }

// TrustedProxyPrefixes parses SETFLOW_TRUSTED_PROXIES.
func (k *Kakao) TrustedProxyPrefixes() ([]netip.Prefix, error) { return parseCIDRs(k.TrustedProxies) }

// parseCIDRs reads comma-separated CIDRs; a bare address stands for itself.
func parseCIDRs(list string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range splitList(list) {
		if strings.Contains(f, "/") {
			p, err := netip.ParsePrefix(f)
			if err != nil {
				return nil, fmt.Errorf("%q is not a CIDR", f)
			}
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil {
			return nil, fmt.Errorf("%q is neither a CIDR nor an IP address", f)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}
