// Package statusapi answers a service's login path: what setflow knows of a
// Kakao user — linked, locked, re-authentication required since, consents
// and purge state — read from the per-user state (userstate). It is served
// on the admin port behind a bearer token or mTLS (cmd/setflow).
//
//	GET /v1/subjects/{kakao_user_id}[?issuer=...]  → Subject
//	GET /v1/accounts/{account_id}                  → Account (through the identity mapping)
//
// An unknown user is not an error: known is false and nothing is held
// against it. Answers carry no audit key or subject hash.
package statusapi

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"net/http"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/setflow/setflow/audit"
	"github.com/setflow/setflow/event"
	"github.com/setflow/setflow/identity"
	"github.com/setflow/setflow/userstate"
	"github.com/setflow/setflow/userstate/statedb"
)

// Paths served.
const (
	PathSubjects = "/v1/subjects/"
	PathAccounts = "/v1/accounts/"
)

// States reads the per-user state (statedb.Store).
type States interface {
	Get(ctx context.Context, hash string) (statedb.Snapshot, error)
}

// Server answers status requests.
type Server struct {
	States   States
	Subjects audit.SubjectHasher
	// Accounts maps account ids to Kakao users; nil is identity.Identity.
	Accounts identity.Mapper
	// Issuer is the issuer of a lookup that names none.
	Issuer string
	// Tokens are the accepted bearer tokens (several during a rotation).
	// With none, every request is accepted: only for a listener that
	// already requires a verified client certificate (mTLS).
	Tokens []string
}

// Purge states.
const (
	PurgeNone    = "none"
	PurgePending = "pending"
	PurgePurged  = "purged"
)

// Purge is the user's purge state.
type Purge struct {
	State  string     `json:"state"`
	Cutoff *time.Time `json:"cutoff,omitempty"`
	Due    *time.Time `json:"due,omitempty"` // pending
	At     *time.Time `json:"at,omitempty"`  // purged
}

// Subject is what setflow knows of one Kakao user.
type Subject struct {
	Issuer      string `json:"issuer"`
	KakaoUserID string `json:"kakao_user_id"`
	// Known is false when setflow has never seen an event about the user.
	Known bool `json:"known"`
	// Linked is null when no link or unlink was ever seen.
	Linked              *bool             `json:"linked"`
	Locked              bool              `json:"locked"`
	LockedSince         *time.Time        `json:"locked_since,omitempty"`
	ReauthRequiredSince *time.Time        `json:"reauth_required_since,omitempty"`
	Consents            map[string]string `json:"consents,omitempty"` // scope → granted | withdrawn
	Purge               Purge             `json:"purge"`
	// SessionsValidAfter: a session created at or before it must end (the
	// latest re-auth requirement, lock or unlink; to the end of that time's
	// second when it is in whole seconds, see event.SessionsUpTo); a login
	// path compares its session's creation time.
	SessionsValidAfter *time.Time `json:"sessions_valid_after,omitempty"`
	// Version is the state's version; it only grows.
	Version int64 `json:"version"`
}

// Account is what setflow knows of the Kakao users of one service account.
type Account struct {
	AccountID string    `json:"account_id"`
	Subjects  []Subject `json:"subjects"`
	// Locked is true when any of them is locked; ReauthRequiredSince and
	// SessionsValidAfter are the latest of theirs.
	Locked              bool       `json:"locked"`
	ReauthRequiredSince *time.Time `json:"reauth_required_since,omitempty"`
	SessionsValidAfter  *time.Time `json:"sessions_valid_after,omitempty"`
}

// View is the status of a state.
func View(issuer, userID string, s userstate.State, known bool) Subject {
	out := Subject{Issuer: issuer, KakaoUserID: userID, Known: known, Version: s.Version, Purge: Purge{State: PurgeNone}}
	at := func(t time.Time) *time.Time {
		if t.IsZero() {
			return nil
		}
		t = t.UTC()
		return &t
	}
	var valid time.Time
	later := func(t time.Time) {
		if t.After(valid) {
			valid = t
		}
	}
	if s.Link.Set() {
		linked := s.Link.Value == userstate.Linked
		out.Linked = &linked
		if !linked {
			later(s.Link.At)
		}
	}
	if s.Lock.Value == userstate.Locked {
		out.Locked, out.LockedSince = true, at(s.Lock.At)
		later(s.Lock.At)
	}
	out.ReauthRequiredSince = at(s.Reauth)
	later(s.Reauth)
	out.SessionsValidAfter = at(event.SessionsUpTo(valid))
	for scope, r := range s.Consents {
		if out.Consents == nil {
			out.Consents = map[string]string{}
		}
		out.Consents[scope] = r.Value
	}
	switch {
	case s.Purge != nil:
		out.Purge = Purge{State: PurgePending, Cutoff: at(s.Purge.Cutoff), Due: at(s.Purge.Due)}
	case s.Tombstone != nil && !(s.Link.Value == userstate.Linked && s.Link.At.After(s.Tombstone.Cutoff)):
		out.Purge = Purge{State: PurgePurged, Cutoff: at(s.Tombstone.Cutoff), At: at(s.Tombstone.At)}
	}
	return out
}

// Handler serves the status API.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+PathSubjects+"{id}", s.subject)
	mux.HandleFunc("GET "+PathAccounts+"{id}", s.account)
	return s.authenticate(mux)
}

func (s *Server) authenticate(next http.Handler) http.Handler {
	tokens := make([][]byte, 0, len(s.Tokens))
	for _, t := range s.Tokens {
		tokens = append(tokens, []byte(t))
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(tokens) > 0 {
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			match := 0
			for _, t := range tokens {
				match |= subtle.ConstantTimeCompare([]byte(got), t)
			}
			if !ok || match != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="setflow"`)
				writeError(w, http.StatusUnauthorized, "a valid bearer token is required")
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// validID: a user or account id is short printable text.
func validID(id string) bool {
	if id == "" || len(id) > 256 || !utf8.ValidString(id) {
		return false
	}
	for _, c := range id {
		if c < 0x20 || c == 0x7f {
			return false
		}
	}
	return true
}

func (s *Server) subject(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	issuer := r.URL.Query().Get("issuer")
	if issuer == "" {
		issuer = s.Issuer
	}
	if !validID(id) || !validID(issuer) {
		writeError(w, http.StatusBadRequest, "the user id and issuer must be non-empty printable text of at most 256 bytes")
		return
	}
	sub, err := s.lookup(r.Context(), issuer, id)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "the state store is unavailable")
		return
	}
	writeJSON(w, http.StatusOK, sub)
}

func (s *Server) lookup(ctx context.Context, issuer, userID string) (Subject, error) {
	snap, err := s.States.Get(ctx, s.Subjects.Hash(issuer, userID))
	if errors.Is(err, statedb.ErrNotFound) {
		return View(issuer, userID, userstate.State{}, false), nil
	}
	if err != nil {
		return Subject{}, err
	}
	return View(issuer, userID, snap.State, true), nil
}

func (s *Server) account(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !validID(id) {
		writeError(w, http.StatusBadRequest, "the account id must be non-empty printable text of at most 256 bytes")
		return
	}
	m := s.Accounts
	if m == nil {
		m = identity.Identity{}
	}
	users, err := m.Users(r.Context(), id)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "the identity mapping is unavailable")
		return
	}
	out := Account{AccountID: id, Subjects: []Subject{}}
	for _, u := range users {
		issuer := u.Issuer
		if issuer == "" {
			issuer = s.Issuer
		}
		sub, err := s.lookup(r.Context(), issuer, u.UserID)
		if err != nil {
			writeError(w, http.StatusServiceUnavailable, "the state store is unavailable")
			return
		}
		out.Subjects = append(out.Subjects, sub)
		out.Locked = out.Locked || sub.Locked
		out.ReauthRequiredSince = latest(out.ReauthRequiredSince, sub.ReauthRequiredSince)
		out.SessionsValidAfter = latest(out.SessionsValidAfter, sub.SessionsValidAfter)
	}
	sort.Slice(out.Subjects, func(i, j int) bool { return out.Subjects[i].KakaoUserID < out.Subjects[j].KakaoUserID })
	writeJSON(w, http.StatusOK, out)
}

func latest(a, b *time.Time) *time.Time {
	if a == nil || (b != nil && b.After(*a)) {
		return b
	}
	return a
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}
