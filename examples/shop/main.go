// Command shop is a small web shop that connects to setflow by configuration
// only, the way a service would:
//
//   - "Log in with Kakao" is simulated: a stand-in Kakao login page signs an
//     ID token with setflow's development key, and the shop verifies it
//     against `setflow dev`'s JWKS (/dev/jwks.json), as it would Kakao's.
//   - Its own schema `shop`: users, social_accounts (provider, provider user
//     id → account id) and sessions keyed by its own account id. setflow is
//     pointed at these tables (SETFLOW_SESSIONS_*, SETFLOW_IDENTITY_*,
//     SETFLOW_SERVICE_USERS_*; see examples/shop/setflow.env).
//   - A middleware asks setflow's status API about the signed-in account on
//     every request; a login asks it about the Kakao user.
//
// Run it next to `deployments/local/up.sh`:
//
//	go run ./examples/shop
//
// and open http://localhost:8090.
package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq" // PostgreSQL driver

	"github.com/setflow/setflow/event"
	"github.com/setflow/setflow/servicehook"
	"github.com/setflow/setflow/simulator"
)

// Config is the shop's settings, all from the environment.
type Config struct {
	Listen      string // SHOP_LISTEN
	DatabaseURL string // SHOP_DATABASE_URL
	StatusURL   string // SHOP_STATUS_URL: setflow's admin port
	StatusToken string // SHOP_STATUS_TOKEN
	Issuer      string // SHOP_KAKAO_ISSUER
	Audience    string // SHOP_KAKAO_AUDIENCE
	JWKSURL     string // SHOP_KAKAO_JWKS_URL
	DevKey      string // SHOP_DEV_KEY: the key the stand-in Kakao login signs with
	HookSecret  string // SHOP_SETFLOW_HOOK_SECRET: verifies setflow's notify_service
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// ConfigFromEnv reads the settings, with defaults that match `setflow dev`.
func ConfigFromEnv() Config {
	return Config{
		Listen:      envOr("SHOP_LISTEN", ":8090"),
		DatabaseURL: envOr("SHOP_DATABASE_URL", "postgres://postgres:postgres@127.0.0.1:5432/setflow?sslmode=disable"),
		StatusURL:   envOr("SHOP_STATUS_URL", "http://localhost:8082"),
		StatusToken: envOr("SHOP_STATUS_TOKEN", "setflow-dev-status-token"),
		Issuer:      envOr("SHOP_KAKAO_ISSUER", "https://dev.setflow.local"),
		Audience:    envOr("SHOP_KAKAO_AUDIENCE", "setflow-dev-app"),
		JWKSURL:     envOr("SHOP_KAKAO_JWKS_URL", "http://localhost:8080/dev/jwks.json"),
		DevKey:      envOr("SHOP_DEV_KEY", ".setflow-dev/signing-key.pem"),
		HookSecret:  envOr("SHOP_SETFLOW_HOOK_SECRET", "shop-dev-hook-secret"),
	}
}

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg := ConfigFromEnv()
	s, err := NewShop(ctx, cfg, log)
	if err != nil {
		log.Error("shop", "error", err)
		os.Exit(1)
	}
	defer s.Close()
	srv := &http.Server{Addr: cfg.Listen, Handler: s.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Shutdown(context.Background())
	}()
	log.Info("shop listening", "addr", cfg.Listen)
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		log.Error("shop", "error", err)
		os.Exit(1)
	}
}

// Shop is the web app.
type Shop struct {
	cfg    Config
	db     *sqlx.DB
	log    *slog.Logger
	status *http.Client
	pages  *template.Template

	keyOnce sync.Once
	key     *simulator.Key
	keyErr  error
}

// schema is the shop's own tables. setflow never creates them; it is told
// their names.
const schema = `
CREATE SCHEMA IF NOT EXISTS shop;
CREATE TABLE IF NOT EXISTS shop.users (
    id                 bigserial   PRIMARY KEY,
    name               text        NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    -- Written by setflow (SETFLOW_SERVICE_USERS_*): shown on the account page.
    locked             boolean     NOT NULL DEFAULT false,
    reauth_required_at timestamptz,
    unlinked_at        timestamptz
);
CREATE TABLE IF NOT EXISTS shop.social_accounts (
    provider         text   NOT NULL,
    provider_user_id text   NOT NULL,
    account_id       bigint NOT NULL REFERENCES shop.users(id),
    PRIMARY KEY (provider, provider_user_id)
);
CREATE TABLE IF NOT EXISTS shop.sessions (
    id         text        PRIMARY KEY,
    account_id bigint      NOT NULL REFERENCES shop.users(id),
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
-- What setflow told the shop (notify_service), once per idempotency key.
CREATE TABLE IF NOT EXISTS shop.security_events (
    idempotency_key text        PRIMARY KEY,
    account_id      bigint      NOT NULL,
    event           text        NOT NULL,
    locked          boolean     NOT NULL,
    state_version   bigint      NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS sessions_account_idx ON shop.sessions (account_id) WHERE revoked_at IS NULL;
`

// NewShop connects and creates the shop's schema.
func NewShop(ctx context.Context, cfg Config, log *slog.Logger) (*Shop, error) {
	db, err := sqlx.Open("postgres", cfg.DatabaseURL)
	if err != nil {
		return nil, err
	}
	if _, err := db.ExecContext(ctx, schema); err != nil {
		db.Close()
		return nil, fmt.Errorf("shop schema: %w", err)
	}
	return &Shop{cfg: cfg, db: db, log: log, status: &http.Client{Timeout: 2 * time.Second},
		pages: template.Must(template.New("").Parse(pageTemplates))}, nil
}

// Close closes the database.
func (s *Shop) Close() error { return s.db.Close() }

// Handler routes the shop.
func (s *Shop) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", s.home)
	mux.HandleFunc("GET /login", s.login)
	mux.HandleFunc("GET /kakao/authorize", s.kakaoPage)
	mux.HandleFunc("POST /kakao/authorize", s.kakaoConsent)
	mux.HandleFunc("GET /auth/kakao/callback", s.callback)
	mux.Handle("GET /account", s.requireSession(http.HandlerFunc(s.account)))
	mux.HandleFunc("POST /logout", s.logout)
	mux.Handle("POST /setflow/events", servicehook.Handler([]byte(s.cfg.HookSecret), s.securityEvent))
	return mux
}

const sessionCookie = "shop_session"

func randomID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (s *Shop) render(w http.ResponseWriter, status int, page string, data any) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	if err := s.pages.ExecuteTemplate(w, page, data); err != nil {
		s.log.Error("render", "page", page, "error", err)
	}
}

// Messages shown on the home page, by key (never free text from a URL).
var messages = map[string]string{
	"signed-out":   "You have been signed out.",
	"locked":       "You were signed out: your Kakao account was disabled for your protection (suspected hijacking).",
	"reauth":       "You were signed out: please log in with Kakao again to confirm it is you.",
	"unlinked":     "You were signed out: this app was disconnected from your Kakao account.",
	"session-gone": "Your session has ended. Please log in again.",
}

func (s *Shop) home(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(sessionCookie); err == nil && c.Value != "" {
		if _, ok := s.session(r.Context(), c.Value); ok {
			http.Redirect(w, r, "/account", http.StatusSeeOther)
			return
		}
	}
	s.render(w, http.StatusOK, "home", map[string]string{"Message": messages[r.URL.Query().Get("msg")]})
}

// login starts "Log in with Kakao": a state cookie against CSRF, then the
// (stand-in) Kakao authorize page.
func (s *Shop) login(w http.ResponseWriter, r *http.Request) {
	state := randomID()
	http.SetCookie(w, &http.Cookie{Name: "shop_oauth_state", Value: state, Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode, MaxAge: 600})
	q := url.Values{"redirect_uri": {"/auth/kakao/callback"}, "state": {state}}
	http.Redirect(w, r, "/kakao/authorize?"+q.Encode(), http.StatusSeeOther)
}

// kakaoPage stands in for Kakao's login and consent page.
func (s *Shop) kakaoPage(w http.ResponseWriter, r *http.Request) {
	s.render(w, http.StatusOK, "kakao", map[string]string{"State": r.URL.Query().Get("state")})
}

// kakaoConsent stands in for Kakao issuing an ID token: signed with
// setflow's development key, so the shop verifies it exactly as it would
// verify Kakao's (issuer, audience, expiry, JWKS signature).
func (s *Shop) kakaoConsent(w http.ResponseWriter, r *http.Request) {
	user := strings.TrimSpace(r.FormValue("kakao_user_id"))
	if user == "" || len(user) > 64 {
		http.Error(w, "enter a Kakao user id", http.StatusBadRequest)
		return
	}
	s.keyOnce.Do(func() { s.key, s.keyErr = simulator.LoadOrCreateKey(s.cfg.DevKey) })
	if s.keyErr != nil {
		http.Error(w, "stand-in Kakao: no development key", http.StatusInternalServerError)
		return
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: s.key.Private},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", s.key.KID))
	if err != nil {
		http.Error(w, "stand-in Kakao: signer", http.StatusInternalServerError)
		return
	}
	now := time.Now()
	tok, err := jwt.Signed(signer).Claims(jwt.Claims{Issuer: s.cfg.Issuer, Subject: user, Audience: jwt.Audience{s.cfg.Audience},
		IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(5 * time.Minute))}).
		Claims(map[string]any{"nickname": "Kakao user " + user}).Serialize()
	if err != nil {
		http.Error(w, "stand-in Kakao: sign", http.StatusInternalServerError)
		return
	}
	q := url.Values{"id_token": {tok}, "state": {r.FormValue("state")}}
	http.Redirect(w, r, "/auth/kakao/callback?"+q.Encode(), http.StatusSeeOther)
}

// verifyIDToken checks the token against the issuer's JWKS.
func (s *Shop) verifyIDToken(ctx context.Context, raw string) (sub, nickname string, err error) {
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		return "", "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.cfg.JWKSURL, nil)
	if err != nil {
		return "", "", err
	}
	resp, err := s.status.Do(req)
	if err != nil {
		return "", "", fmt.Errorf("jwks: %w", err)
	}
	defer resp.Body.Close()
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		return "", "", fmt.Errorf("jwks: %w", err)
	}
	if len(tok.Headers) != 1 {
		return "", "", errors.New("one signature expected")
	}
	keys := set.Key(tok.Headers[0].KeyID)
	if len(keys) == 0 {
		return "", "", errors.New("unknown key id")
	}
	pub, ok := keys[0].Key.(*rsa.PublicKey)
	if !ok {
		return "", "", errors.New("not an RSA key")
	}
	var claims jwt.Claims
	var extra struct {
		Nickname string `json:"nickname"`
	}
	if err := tok.Claims(pub, &claims, &extra); err != nil {
		return "", "", err
	}
	if err := claims.ValidateWithLeeway(jwt.Expected{Issuer: s.cfg.Issuer, AnyAudience: jwt.Audience{s.cfg.Audience}, Time: time.Now()}, time.Minute); err != nil {
		return "", "", err
	}
	if claims.Subject == "" {
		return "", "", errors.New("no subject")
	}
	return claims.Subject, extra.Nickname, nil
}

// subjectStatus is the part of setflow's status API answer the shop uses.
type subjectStatus struct {
	Locked             bool       `json:"locked"`
	SessionsValidAfter *time.Time `json:"sessions_valid_after"`
	ReauthSince        *time.Time `json:"reauth_required_since"`
}

// askStatus calls setflow's status API (path /v1/subjects/… or /v1/accounts/…).
func (s *Shop) askStatus(ctx context.Context, path string) (subjectStatus, error) {
	var st subjectStatus
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(s.cfg.StatusURL, "/")+path, nil)
	if err != nil {
		return st, err
	}
	req.Header.Set("Authorization", "Bearer "+s.cfg.StatusToken)
	resp, err := s.status.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("status API answered %d", resp.StatusCode)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// callback finishes the login: verify the ID token, ask setflow whether the
// Kakao user may sign in, find or create the account, start a session.
func (s *Shop) callback(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	c, err := r.Cookie("shop_oauth_state")
	if err != nil || c.Value == "" || c.Value != r.URL.Query().Get("state") {
		http.Error(w, "login state does not match; start again", http.StatusBadRequest)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: "shop_oauth_state", Value: "", Path: "/", MaxAge: -1})
	sub, nickname, err := s.verifyIDToken(ctx, r.URL.Query().Get("id_token"))
	if err != nil {
		s.log.Warn("id token rejected", "error", err)
		http.Error(w, "the Kakao login could not be verified", http.StatusUnauthorized)
		return
	}
	// A login fails closed: without setflow's answer we cannot know the
	// account is safe.
	st, err := s.askStatus(ctx, "/v1/subjects/"+url.PathEscape(sub))
	if err != nil {
		s.log.Error("status API", "error", err)
		s.render(w, http.StatusServiceUnavailable, "refused", map[string]string{"Reason": "We cannot check your account's security status right now. Please try again in a minute."})
		return
	}
	if st.Locked {
		s.render(w, http.StatusForbidden, "refused", map[string]string{"Reason": "Login refused: your Kakao account has been disabled for your protection (suspected hijacking). " +
			"Secure your Kakao account with Kakao first; you can log in here again once Kakao has re-enabled it and you have re-authenticated."})
		return
	}
	account, err := s.accountFor(ctx, sub, nickname)
	if err != nil {
		s.log.Error("account", "error", err)
		http.Error(w, "could not sign you in", http.StatusInternalServerError)
		return
	}
	sid := randomID()
	if _, err := s.db.ExecContext(ctx, `INSERT INTO shop.sessions (id, account_id) VALUES ($1, $2)`, sid, account); err != nil {
		http.Error(w, "could not sign you in", http.StatusInternalServerError)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: sid, Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode})
	http.Redirect(w, r, "/account", http.StatusSeeOther)
}

// accountFor finds the account linked to the Kakao user, or signs one up.
func (s *Shop) accountFor(ctx context.Context, kakaoID, nickname string) (int64, error) {
	tx, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback() //nolint:errcheck
	var id int64
	err = tx.GetContext(ctx, &id, `SELECT account_id FROM shop.social_accounts WHERE provider = 'kakao' AND provider_user_id = $1`, kakaoID)
	if errors.Is(err, sql.ErrNoRows) {
		if nickname == "" {
			nickname = "Kakao user"
		}
		if err := tx.GetContext(ctx, &id, `INSERT INTO shop.users (name) VALUES ($1) RETURNING id`, nickname); err != nil {
			return 0, err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO shop.social_accounts VALUES ('kakao', $1, $2)`, kakaoID, id); err != nil {
			return 0, err
		}
	} else if err != nil {
		return 0, err
	}
	return id, tx.Commit()
}

type sessionRow struct {
	AccountID int64     `db:"account_id"`
	CreatedAt time.Time `db:"created_at"`
	Revoked   bool      `db:"revoked"`
}

// session returns a live session.
func (s *Shop) session(ctx context.Context, sid string) (sessionRow, bool) {
	row, found := s.sessionAny(ctx, sid)
	return row, found && !row.Revoked
}

// sessionAny returns a session, revoked or not.
func (s *Shop) sessionAny(ctx context.Context, sid string) (sessionRow, bool) {
	var row sessionRow
	err := s.db.GetContext(ctx, &row, `SELECT account_id, created_at, revoked_at IS NOT NULL AS revoked FROM shop.sessions WHERE id = $1`, sid)
	return row, err == nil
}

type ctxKey struct{}

// requireSession is the middleware: a live session row (setflow revokes
// rows in shop.sessions), then setflow's status API for the account —
// locked, or a re-auth / unlink after the session began, ends the session.
// When the status API does not answer, the session stays (fail open: an
// outage of setflow must not sign everyone out; setflow still revokes the
// rows when it is back).
func (s *Shop) requireSession(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := r.Cookie(sessionCookie)
		if err != nil {
			http.Redirect(w, r, "/", http.StatusSeeOther)
			return
		}
		row, ok := s.sessionAny(r.Context(), c.Value)
		if !ok {
			s.endSession(w, r, c.Value, "session-gone")
			return
		}
		st, err := s.askStatus(r.Context(), fmt.Sprintf("/v1/accounts/%d", row.AccountID))
		switch {
		case err == nil && st.Locked:
			s.endSession(w, r, c.Value, "locked")
			return
		case row.Revoked: // setflow (or a logout) ended it
			s.endSession(w, r, c.Value, "session-gone")
			return
		case err != nil:
			s.log.Warn("status API unavailable: session kept", "error", err)
		case st.SessionsValidAfter != nil && !row.CreatedAt.After(*st.SessionsValidAfter):
			// Re-auth is the reason when the requirement alone ends this
			// session (a time in whole seconds covers its second).
			msg := "unlinked"
			if st.ReauthSince != nil && !row.CreatedAt.After(event.SessionsUpTo(*st.ReauthSince)) {
				msg = "reauth"
			}
			s.endSession(w, r, c.Value, msg)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, row)))
	})
}

func (s *Shop) endSession(w http.ResponseWriter, r *http.Request, sid, msg string) {
	_, _ = s.db.ExecContext(r.Context(), `UPDATE shop.sessions SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL`, sid)
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1})
	http.Redirect(w, r, "/?msg="+msg, http.StatusSeeOther)
}

// securityEvent records setflow's signed notify_service document for each
// of the shop's accounts, once per idempotency key (a retry is a no-op).
func (s *Shop) securityEvent(r *http.Request, d servicehook.Document) error {
	if d.State == nil {
		return nil
	}
	for _, id := range d.AccountIDs {
		if _, err := s.db.ExecContext(r.Context(), `INSERT INTO shop.security_events (idempotency_key, account_id, event, locked, state_version)
			VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`, d.IdempotencyKey+"/"+id, id, d.Event.Name, d.State.Locked, d.State.Version); err != nil {
			return err
		}
	}
	return nil
}

func (s *Shop) account(w http.ResponseWriter, r *http.Request) {
	row := r.Context().Value(ctxKey{}).(sessionRow)
	var u struct {
		ID     int64  `db:"id"`
		Name   string `db:"name"`
		Locked bool   `db:"locked"`
		Kakao  string `db:"provider_user_id"`
	}
	if err := s.db.GetContext(r.Context(), &u, `SELECT u.id, u.name, u.locked, coalesce(a.provider_user_id, '') AS provider_user_id
		FROM shop.users u LEFT JOIN shop.social_accounts a ON a.account_id = u.id AND a.provider = 'kakao' WHERE u.id = $1 LIMIT 1`, row.AccountID); err != nil {
		http.Error(w, "account not found", http.StatusNotFound)
		return
	}
	var notices []struct {
		Event    string    `db:"event"`
		Received time.Time `db:"received_at"`
	}
	_ = s.db.SelectContext(r.Context(), &notices, `SELECT event, received_at FROM shop.security_events WHERE account_id = $1 ORDER BY received_at DESC LIMIT 5`, row.AccountID)
	s.render(w, http.StatusOK, "account", map[string]any{"User": u, "Since": row.CreatedAt.UTC().Format(time.RFC1123), "Notices": notices})
}

func (s *Shop) logout(w http.ResponseWriter, r *http.Request) {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	s.endSession(w, r, c.Value, "signed-out")
}

const pageTemplates = `
{{define "head"}}<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Shop</title>
<style>body{font-family:sans-serif;max-width:40rem;margin:3rem auto;color:#222}
.kakao{background:#FEE500;color:#191919;border:0;padding:.8rem 1.4rem;border-radius:6px;font-size:1rem;text-decoration:none;display:inline-block}
.msg{background:#fff4e5;border:1px solid #f0b46b;padding:.8rem;border-radius:6px}
.refused{background:#fdecea;border:1px solid #e57373;padding:.8rem;border-radius:6px}</style></head><body>
<h1>Shop</h1>{{end}}
{{define "home"}}{{template "head"}}
{{if .Message}}<p class="msg" id="message">{{.Message}}</p>{{end}}
<p>Welcome! Sign in to see your account.</p>
<p><a class="kakao" id="kakao-login" href="/login">Log in with Kakao</a></p></body></html>{{end}}
{{define "kakao"}}<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Kakao Login (simulated)</title>
<style>body{font-family:sans-serif;max-width:30rem;margin:3rem auto;background:#FEE500;padding:2rem}</style></head><body>
<h2>kakao (simulated login)</h2>
<p>This page stands in for Kakao: it signs an ID token with setflow's development key.</p>
<form method="post" action="/kakao/authorize"><input type="hidden" name="state" value="{{.State}}">
<label>Kakao user id <input id="kakao-user-id" name="kakao_user_id" value="1234"></label>
<p><button id="kakao-agree" type="submit">Agree and continue</button></p></form></body></html>{{end}}
{{define "account"}}{{template "head"}}
<h2 id="account-title">Your account</h2>
<p>Signed in as <b id="account-name">{{.User.Name}}</b> (account #{{.User.ID}}, Kakao user {{.User.Kakao}}) since {{.Since}}.</p>
{{if .Notices}}<h3>Security events from setflow</h3><ul id="security-events">{{range .Notices}}<li>{{.Event}} ({{.Received.UTC.Format "2006-01-02 15:04:05"}} UTC)</li>{{end}}</ul>{{end}}
<form method="post" action="/logout"><button type="submit">Log out</button></form></body></html>{{end}}
{{define "refused"}}{{template "head"}}
<p class="refused" id="refused">{{.Reason}}</p>
<p><a href="/">Back to the shop</a></p></body></html>{{end}}
`
