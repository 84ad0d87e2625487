package config

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Redacted replaces a secret in anything setflow shows: usage text, logs and
// errors.
const Redacted = "xxxxx"

// SecretEnv names the variables whose whole value is a secret (the Secret
// rows of Settings). They are read from the environment only, never from
// flags (flags show up in process listings), and are scrubbed from logs and
// errors.
var SecretEnv = settingEnvs(func(s Setting) bool { return s.Secret })

// URLEnv names the variables holding URLs that may carry credentials (a
// password in the user info or a query parameter; the URL rows of
// Settings). They are shown redacted.
var URLEnv = settingEnvs(func(s Setting) bool { return s.URL })

func settingEnvs(keep func(Setting) bool) []string {
	var out []string
	for _, s := range Settings() {
		if keep(s) {
			out = append(out, s.Env)
		}
	}
	return out
}

// secretParam reports whether a URL query parameter or libpq keyword holds a
// credential.
func secretParam(name string) bool {
	switch strings.ToLower(name) {
	case "password", "passwd", "pwd", "pass", "sslpassword", "secret", "client_secret",
		"token", "access_token", "auth", "auth_token", "api_key", "apikey", "key", "sig", "signature":
		return true
	}
	return false
}

var dsnPassword = regexp.MustCompile(`(?i)\b(password|sslpassword)\s*=\s*('(?:[^'\\]|\\.)*'|\S*)`)

// RedactURL returns s with the password of its user info and every
// credential-like query parameter (password, token, key, …) replaced by
// xxxxx: postgres://user:xxxxx@host/db, redis://:xxxxx@host. A libpq
// keyword/value string (host=… password=…) has its password replaced. A
// string that is neither is returned unchanged.
func RedactURL(s string) string {
	if s == "" {
		return s
	}
	if !strings.Contains(s, "://") {
		return dsnPassword.ReplaceAllString(s, "${1}="+Redacted)
	}
	if u, err := url.Parse(s); err == nil {
		changed := false
		if u.User != nil {
			if _, ok := u.User.Password(); ok {
				u.User = url.UserPassword(u.User.Username(), Redacted)
				changed = true
			}
		}
		if q := redactQuery(u.RawQuery); q != u.RawQuery {
			u.RawQuery, changed = q, true
		}
		if !changed {
			return s
		}
		return u.String()
	}
	// Unparseable (a bad port, say): redact by position, never echo it.
	out := s
	if i := strings.Index(out, "://"); i >= 0 {
		rest := out[i+3:]
		end := strings.IndexAny(rest, "/?# \t\n")
		if end < 0 {
			end = len(rest)
		}
		if at := strings.LastIndexByte(rest[:end], '@'); at >= 0 {
			if colon := strings.IndexByte(rest[:at], ':'); colon >= 0 {
				out = out[:i+3] + rest[:colon+1] + Redacted + rest[at:]
			}
		}
	}
	if q := strings.IndexByte(out, '?'); q >= 0 {
		frag := ""
		rawq := out[q+1:]
		if h := strings.IndexByte(rawq, '#'); h >= 0 {
			rawq, frag = rawq[:h], rawq[h:]
		}
		out = out[:q+1] + redactQuery(rawq) + frag
	}
	return out
}

// redactQuery replaces the values of credential-like parameters, keeping the
// order and encoding of the others.
func redactQuery(raw string) string {
	if raw == "" {
		return raw
	}
	parts := strings.Split(raw, "&")
	for i, p := range parts {
		k, _, ok := strings.Cut(p, "=")
		if !ok {
			continue
		}
		name, err := url.QueryUnescape(k)
		if err != nil {
			name = k
		}
		if secretParam(name) {
			parts[i] = k + "=" + Redacted
		}
	}
	return strings.Join(parts, "&")
}

// weakPasswords are not scrubbed on their own (only inside a URL or as
// password=…): they are no secret, and replacing them everywhere would mangle
// every log line ("sessions=postgres").
var weakPasswords = []string{"postgres", "postgresql", "password", "redis", "secret", "setflow"}

// minBare is the shortest secret that is replaced wherever it appears; shorter
// values would turn ordinary words into xxxxx.
const minBare = 4

// Scrubber replaces known secret values in text: the values of the secret
// variables and the credentials inside URL variables and URL flags. setflow's
// logger and its final error message go through it, as a second line of
// defence behind never printing a secret in the first place.
type Scrubber struct {
	mu    sync.RWMutex
	pairs []string // old, new, … for strings.Replacer
	seen  map[string]bool
	rep   *strings.Replacer
}

// NewScrubber returns a scrubber for the secrets in the environment (SecretEnv
// and the URLs of URLEnv).
func NewScrubber() *Scrubber {
	s := &Scrubber{seen: map[string]bool{}}
	for _, name := range SecretEnv {
		v := os.Getenv(name)
		s.Add(v)
		for _, part := range splitList(v) {
			s.Add(part)
			if name == EnvCodecKeys {
				if _, key, ok := strings.Cut(part, ":"); ok {
					s.Add(strings.TrimSpace(key))
				}
			}
		}
	}
	for _, name := range URLEnv {
		s.AddURL(os.Getenv(name))
	}
	return s
}

var (
	processOnce     sync.Once
	processScrubber *Scrubber
)

// Secrets is the process's scrubber: the environment's secrets, plus every URL
// given to a URL flag (see URLVar).
func Secrets() *Scrubber {
	processOnce.Do(func() { processScrubber = NewScrubber() })
	return processScrubber
}

func (s *Scrubber) replace(old, repl string) {
	if old == "" || old == repl || s.seen[old] {
		return
	}
	s.seen[old] = true
	s.pairs = append(s.pairs, old, repl)
}

// Add registers a secret value, replaced wherever it appears (values shorter
// than four bytes are ignored: they would mangle ordinary words).
func (s *Scrubber) Add(secret string) {
	secret = strings.TrimSpace(secret)
	if len(secret) < minBare {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.replace(secret, Redacted)
	s.rebuild()
}

// AddURL registers the credentials inside a URL (or libpq keyword/value
// string): the URL itself is replaced by its redacted form, the password in
// user-info or parameter position anywhere, and a password on its own unless it
// is a well-known default (postgres:postgres) or the user name.
func (s *Scrubber) AddURL(raw string) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return
	}
	red := RedactURL(raw)
	if red == raw {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.replace(raw, red)
	s.replace(strconv.Quote(raw), strconv.Quote(red))
	var secrets []string
	var user string
	if strings.Contains(raw, "://") {
		// By position, so that a URL url.Parse refuses (a bad port) is
		// covered too.
		var p string
		user, p = rawUserinfo(raw)
		if p != "" {
			secrets = append(secrets, p)
			if dec, err := url.PathUnescape(p); err == nil {
				secrets = append(secrets, dec, url.QueryEscape(dec))
			}
		}
		if dec, err := url.PathUnescape(user); err == nil {
			user = dec
		}
		if _, q, ok := strings.Cut(raw, "?"); ok {
			q, _, _ = strings.Cut(q, "#")
			vals, _ := url.ParseQuery(q)
			for k, vs := range vals {
				if secretParam(k) {
					secrets = append(secrets, vs...)
				}
			}
		}
	} else {
		for _, m := range dsnPassword.FindAllStringSubmatch(raw, -1) {
			secrets = append(secrets, strings.Trim(m[2], "'"))
		}
	}
	slices.Sort(secrets)
	for _, pw := range slices.Compact(secrets) {
		if pw == "" || pw == Redacted {
			continue
		}
		s.replace(":"+pw+"@", ":"+Redacted+"@")
		s.replace("password="+pw, "password="+Redacted)
		s.replace("="+pw+"&", "="+Redacted+"&")
		s.replace("= "+pw, "= "+Redacted)
		if len(pw) >= minBare && pw != user && !slices.Contains(weakPasswords, strings.ToLower(pw)) {
			s.replace(pw, Redacted)
		}
	}
	s.rebuild()
}

// rawUserinfo is the user and password of raw's user info as written (still
// percent-encoded, if they were).
func rawUserinfo(raw string) (user, password string) {
	i := strings.Index(raw, "://")
	if i < 0 {
		return "", ""
	}
	rest := raw[i+3:]
	if end := strings.IndexAny(rest, "/?#"); end >= 0 {
		rest = rest[:end]
	}
	at := strings.LastIndexByte(rest, '@')
	if at < 0 {
		return "", ""
	}
	user, password, _ = strings.Cut(rest[:at], ":")
	return user, password
}

// rebuild makes the replacer; longer secrets first, so that a secret holding
// another is replaced whole. Callers hold mu.
func (s *Scrubber) rebuild() {
	type pair struct{ old, repl string }
	ps := make([]pair, 0, len(s.pairs)/2)
	for i := 0; i < len(s.pairs); i += 2 {
		ps = append(ps, pair{s.pairs[i], s.pairs[i+1]})
	}
	slices.SortStableFunc(ps, func(a, b pair) int { return len(b.old) - len(a.old) })
	flat := make([]string, 0, len(s.pairs))
	for _, p := range ps {
		flat = append(flat, p.old, p.repl)
	}
	s.rep = strings.NewReplacer(flat...)
}

// Scrub returns text with every known secret replaced.
func (s *Scrubber) Scrub(text string) string {
	if s == nil {
		return text
	}
	s.mu.RLock()
	rep := s.rep
	s.mu.RUnlock()
	if rep == nil {
		return text
	}
	return rep.Replace(text)
}

func (s *Scrubber) empty() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.rep == nil
}

// Handler wraps h so that every message and attribute is scrubbed.
func (s *Scrubber) Handler(h slog.Handler) slog.Handler { return &scrubHandler{h: h, s: s} }

type scrubHandler struct {
	h slog.Handler
	s *Scrubber
}

func (h *scrubHandler) Enabled(ctx context.Context, l slog.Level) bool { return h.h.Enabled(ctx, l) }

func (h *scrubHandler) Handle(ctx context.Context, r slog.Record) error {
	if h.s.empty() {
		return h.h.Handle(ctx, r)
	}
	out := slog.NewRecord(r.Time, r.Level, h.s.Scrub(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(h.s.attr(a))
		return true
	})
	return h.h.Handle(ctx, out)
}

func (h *scrubHandler) WithAttrs(as []slog.Attr) slog.Handler {
	clean := make([]slog.Attr, len(as))
	for i, a := range as {
		clean[i] = h.s.attr(a)
	}
	return &scrubHandler{h: h.h.WithAttrs(clean), s: h.s}
}

func (h *scrubHandler) WithGroup(name string) slog.Handler {
	return &scrubHandler{h: h.h.WithGroup(name), s: h.s}
}

// attr scrubs one attribute; a value that holds no secret is kept as it is
// (its type too), one that does becomes its scrubbed text.
func (s *Scrubber) attr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, s.Scrub(v.String()))
	case slog.KindGroup:
		g := v.Group()
		clean := make([]any, len(g))
		for i, ga := range g {
			clean[i] = s.attr(ga)
		}
		return slog.Group(a.Key, clean...)
	case slog.KindAny:
		var text string
		switch x := v.Any().(type) {
		case error:
			text = x.Error()
		case fmt.Stringer:
			text = x.String()
		default:
			text = fmt.Sprint(x)
		}
		if clean := s.Scrub(text); clean != text {
			return slog.String(a.Key, clean)
		}
	}
	return slog.Attr{Key: a.Key, Value: v}
}
