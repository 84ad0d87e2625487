package integration

// End-to-end tests per reaction family: signed SETs and Kakao webhooks go
// through the ingress, the Postgres inbox, the relay and the real Temporal dev
// server to the real activities, which talk to real Postgres, a real Mailpit
// and local HTTP servers standing in for the CRM (HubSpot-style contacts API)
// and Kakao's REST API.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	sdkworker "go.temporal.io/sdk/worker"

	"github.com/setflow/setflow/activities"
	"github.com/setflow/setflow/audit"
	"github.com/setflow/setflow/crm"
	"github.com/setflow/setflow/ingress"
	"github.com/setflow/setflow/internal/testenv"
	"github.com/setflow/setflow/kakaoapi"
	"github.com/setflow/setflow/mailer"
	"github.com/setflow/setflow/policy"
	"github.com/setflow/setflow/profile"
	"github.com/setflow/setflow/simulator"
	"github.com/setflow/setflow/userstate"
	"github.com/setflow/setflow/userstate/statedb"
	"github.com/setflow/setflow/worker"
	"github.com/setflow/setflow/workflows"
)

// ---------------------------------------------------------------------------
// HubSpot-style contacts API stand-in.

const (
	crmToken       = "it-hubspot-token-3c9e"
	kakaoAdminKey  = "it-kakao-admin-key-71b2"
	mailDomain     = "setflow.test"
	mailService    = "setflow-it"
	idPropertyName = crm.DefaultIDProperty
)

// crmRequest is one write the stand-in received.
type crmRequest struct {
	Op      string // upsert, gdpr-delete or patch
	Key     string // objectWriteTraceId: HubSpot takes no other idempotency key, so only upserts carry it
	Contact string // the kakao_user_id the write is about
	Props   map[string]string
	Status  int  // what the stand-in answered; 0 when the client went away before an answer
	Applied bool // the write changed the stand-in's contacts
	At      time.Time
}

// crmAnswer is a scripted answer for one write.
type crmAnswer struct {
	Status     int    // error status to answer; 0 handles the write normally
	RetryAfter string // Retry-After header value
	// Hold keeps the request unanswered and unapplied until the client goes
	// away (a worker stopped mid-call), or until the stand-in is closed.
	Hold bool
}

// hubSpot implements the documented behaviour of the contacts API calls that
// crm.HubSpot makes: batch upsert by idProperty, GDPR delete, PATCH by
// idProperty; bearer token; error bodies with category and message; 429 with
// Retry-After and 5xx on demand.
type hubSpot struct {
	t        *testing.T
	URL      string
	mu       sync.Mutex
	contacts map[string]map[string]string
	deletes  map[string]int
	requests []crmRequest
	next     map[string][]crmAnswer // one-shot answers per contact, in order
	refuse   map[string]int         // status for every write about the contact, until cleared
	held     chan string
	closed   chan struct{}
}

func newHubSpot(t *testing.T) *hubSpot {
	h := &hubSpot{t: t, contacts: map[string]map[string]string{}, deletes: map[string]int{},
		next: map[string][]crmAnswer{}, refuse: map[string]int{}, held: make(chan string, 16), closed: make(chan struct{})}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(h.closed) }) // runs first: releases held requests
	h.URL = srv.URL
	return h
}

// client is the adapter the worker uses, pointed at the stand-in.
func (h *hubSpot) client() *crm.HubSpot {
	return &crm.HubSpot{BaseURL: h.URL, Token: crmToken, Timeout: 20 * time.Second}
}

// script queues one-shot answers for the next writes about a contact.
func (h *hubSpot) script(contact string, answers ...crmAnswer) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.next[contact] = append(h.next[contact], answers...)
}

// refuseAll answers status to every write about a contact; 0 clears it.
func (h *hubSpot) refuseAll(contact string, status int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if status == 0 {
		delete(h.refuse, contact)
		return
	}
	h.refuse[contact] = status
}

func (h *hubSpot) answerFor(contact string) crmAnswer {
	h.mu.Lock()
	defer h.mu.Unlock()
	if st, ok := h.refuse[contact]; ok {
		return crmAnswer{Status: st}
	}
	if q := h.next[contact]; len(q) > 0 {
		h.next[contact] = q[1:]
		return q[0]
	}
	return crmAnswer{}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json;charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func hubSpotError(w http.ResponseWriter, status int, category, msg string) {
	writeJSON(w, status, map[string]string{"status": "error", "category": category, "message": msg,
		"correlationId": "c0ffee00-1111-2222-3333-444455556666"})
}

func (h *hubSpot) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+crmToken {
		hubSpotError(w, http.StatusUnauthorized, "INVALID_AUTHENTICATION", "Authentication credentials not found.")
		return
	}
	if !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		hubSpotError(w, http.StatusUnsupportedMediaType, "VALIDATION_ERROR", "expected application/json")
		return
	}
	req := crmRequest{At: time.Now()}
	const contacts = "/crm/v3/objects/contacts/"
	switch {
	case r.Method == http.MethodPost && r.URL.Path == contacts+"batch/upsert":
		var body struct {
			Inputs []struct {
				ID                 string            `json:"id"`
				IDProperty         string            `json:"idProperty"`
				ObjectWriteTraceID string            `json:"objectWriteTraceId"`
				Properties         map[string]string `json:"properties"`
			} `json:"inputs"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil || len(body.Inputs) != 1 ||
			body.Inputs[0].IDProperty != idPropertyName || body.Inputs[0].ID == "" {
			hubSpotError(w, http.StatusBadRequest, "VALIDATION_ERROR", "invalid batch input")
			return
		}
		in := body.Inputs[0]
		req.Op, req.Key, req.Contact, req.Props = "upsert", in.ObjectWriteTraceID, in.ID, in.Properties
	case r.Method == http.MethodPost && r.URL.Path == contacts+"gdpr-delete":
		var body struct {
			ObjectID   string `json:"objectId"`
			IDProperty string `json:"idProperty"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.ObjectID == "" || body.IDProperty != idPropertyName {
			hubSpotError(w, http.StatusBadRequest, "VALIDATION_ERROR", "invalid gdpr-delete input")
			return
		}
		req.Op, req.Contact = "gdpr-delete", body.ObjectID
	case r.Method == http.MethodPatch && strings.HasPrefix(r.URL.Path, contacts):
		var body struct {
			Properties map[string]string `json:"properties"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil || r.URL.Query().Get("idProperty") != idPropertyName {
			hubSpotError(w, http.StatusBadRequest, "VALIDATION_ERROR", "invalid patch input")
			return
		}
		req.Op, req.Contact, req.Props = "patch", strings.TrimPrefix(r.URL.Path, contacts), body.Properties
	default:
		hubSpotError(w, http.StatusNotFound, "OBJECT_NOT_FOUND", "no such endpoint")
		return
	}

	ans := h.answerFor(req.Contact)
	h.mu.Lock()
	idx := len(h.requests)
	h.requests = append(h.requests, req)
	h.mu.Unlock()
	finish := func(status int, applied bool) {
		h.mu.Lock()
		h.requests[idx].Status, h.requests[idx].Applied = status, applied
		h.mu.Unlock()
	}
	if ans.Hold {
		h.held <- req.Contact
		select {
		case <-r.Context().Done(): // the client went away: nothing applied, nothing answered
		case <-h.closed:
		}
		return
	}
	if ans.Status != 0 {
		if ans.RetryAfter != "" {
			w.Header().Set("Retry-After", ans.RetryAfter)
		}
		switch {
		case ans.Status == http.StatusTooManyRequests:
			hubSpotError(w, ans.Status, "RATE_LIMITS", "You have reached your secondly limit.")
		case ans.Status >= 500:
			hubSpotError(w, ans.Status, "INTERNAL_ERROR", "internal error")
		default:
			hubSpotError(w, ans.Status, "VALIDATION_ERROR", "Property values were not valid")
		}
		finish(ans.Status, false)
		return
	}

	h.mu.Lock()
	defer h.mu.Unlock()
	c, exists := h.contacts[req.Contact]
	switch req.Op {
	case "upsert":
		if !exists {
			c = map[string]string{idPropertyName: req.Contact}
			h.contacts[req.Contact] = c
		}
		for k, v := range req.Props {
			c[k] = v
		}
		h.requests[idx].Status, h.requests[idx].Applied = http.StatusOK, true
		writeJSON(w, http.StatusOK, map[string]any{"status": "COMPLETE",
			"results": []any{map[string]any{"id": "hs-" + req.Contact, "properties": c, "new": !exists}}})
	case "gdpr-delete":
		if !exists {
			h.requests[idx].Status = http.StatusNotFound
			hubSpotError(w, http.StatusNotFound, "OBJECT_NOT_FOUND", "contact does not exist")
			return
		}
		delete(h.contacts, req.Contact)
		h.deletes[req.Contact]++
		h.requests[idx].Status, h.requests[idx].Applied = http.StatusNoContent, true
		w.WriteHeader(http.StatusNoContent)
	case "patch":
		if !exists {
			h.requests[idx].Status = http.StatusNotFound
			hubSpotError(w, http.StatusNotFound, "OBJECT_NOT_FOUND", "contact does not exist")
			return
		}
		for k, v := range req.Props {
			if v == "" {
				delete(c, k) // HubSpot clears a property given an empty string
			} else {
				c[k] = v
			}
		}
		h.requests[idx].Status, h.requests[idx].Applied = http.StatusOK, true
		writeJSON(w, http.StatusOK, map[string]any{"id": "hs-" + req.Contact, "properties": c})
	}
}

// contact returns a copy of a contact's properties.
func (h *hubSpot) contact(id string) (map[string]string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	c, ok := h.contacts[id]
	out := map[string]string{}
	for k, v := range c {
		out[k] = v
	}
	return out, ok
}

// seen returns the writes that match.
func (h *hubSpot) seen(match func(crmRequest) bool) []crmRequest {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []crmRequest
	for _, r := range h.requests {
		if match(r) {
			out = append(out, r)
		}
	}
	return out
}

func (h *hubSpot) forContact(id string) []crmRequest {
	return h.seen(func(r crmRequest) bool { return r.Contact == id })
}

func (h *hubSpot) withKey(key string) []crmRequest {
	return h.seen(func(r crmRequest) bool { return r.Key == key })
}

func applied(rs []crmRequest) int {
	n := 0
	for _, r := range rs {
		if r.Applied {
			n++
		}
	}
	return n
}

func (h *hubSpot) deleted(id string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.deletes[id]
}

// ---------------------------------------------------------------------------
// Kakao REST API stand-in.

type kakaoUser struct{ Email, Nickname string }

type kakaoAPI struct {
	URL   string
	mu    sync.Mutex
	users map[string]kakaoUser
	calls []string
}

func newKakaoAPI(t *testing.T, users map[string]kakaoUser) *kakaoAPI {
	k := &kakaoAPI{users: users}
	srv := httptest.NewServer(k)
	t.Cleanup(srv.Close)
	k.URL = srv.URL
	return k
}

func (k *kakaoAPI) client() *kakaoapi.Client {
	return &kakaoapi.Client{BaseURL: k.URL, AdminKey: kakaoAdminKey}
}

func (k *kakaoAPI) Calls() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]string(nil), k.calls...)
}

func (k *kakaoAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "KakaoAK "+kakaoAdminKey {
		writeJSON(w, http.StatusUnauthorized, map[string]any{"msg": "wrong appKey", "code": -401})
		return
	}
	if err := r.ParseForm(); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"msg": "bad request", "code": -2})
		return
	}
	if r.Form.Get("target_id_type") != "user_id" {
		writeJSON(w, http.StatusBadRequest, map[string]any{"msg": "target_id_type must be user_id", "code": -2})
		return
	}
	id := r.Form.Get("target_id")
	k.mu.Lock()
	k.calls = append(k.calls, r.Method+" "+r.URL.Path+" "+id)
	u, ok := k.users[id]
	k.mu.Unlock()
	n, err := strconv.ParseInt(id, 10, 64)
	if !ok || err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"msg": "NotRegisteredUserException", "code": kakaoapi.CodeNotLinked})
		return
	}
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/v2/user/me":
		writeJSON(w, http.StatusOK, map[string]any{
			"id": n, "connected_at": "2024-05-01T03:04:05Z",
			"kakao_account": map[string]any{
				"profile_nickname_needs_agreement": false,
				"profile":                          map[string]any{"nickname": u.Nickname},
				"has_email":                        true, "email_needs_agreement": false,
				"is_email_valid": true, "is_email_verified": true, "email": u.Email,
			},
		})
	case r.Method == http.MethodPost && r.URL.Path == "/v1/user/logout":
		writeJSON(w, http.StatusOK, map[string]any{"id": n})
	default:
		writeJSON(w, http.StatusNotFound, map[string]any{"msg": "no such api", "code": -3})
	}
}

// ---------------------------------------------------------------------------
// SMTP proxy in front of Mailpit that can lose the server's answer to a
// message: the message is stored by Mailpit, but the sender never learns it.

type smtpProxy struct {
	Host   string
	Port   int
	target string
	mu     sync.Mutex
	modes  []string      // per message, in order: "hold" or "drop"; none forwards
	lost   chan struct{} // one value per answer withheld
}

func newSMTPProxy(t *testing.T, target string) *smtpProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &smtpProxy{Host: "127.0.0.1", Port: ln.Addr().(*net.TCPAddr).Port, target: target, lost: make(chan struct{}, 16)}
	var wg sync.WaitGroup
	var conns sync.Map
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Store(c, true)
			wg.Add(1)
			go func() { defer wg.Done(); defer conns.Delete(c); p.serve(c) }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		conns.Range(func(k, _ any) bool { k.(net.Conn).Close(); return true })
		wg.Wait()
	})
	return p
}

// loseNext makes the proxy withhold the answer to the next message's end of
// DATA: "hold" keeps the connection open without answering, "drop" closes it.
func (p *smtpProxy) loseNext(mode string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.modes = append(p.modes, mode)
}

func (p *smtpProxy) take() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.modes) == 0 {
		return ""
	}
	m := p.modes[0]
	p.modes = p.modes[1:]
	return m
}

func (p *smtpProxy) serve(c net.Conn) {
	defer c.Close()
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	defer up.Close()
	clientGone := make(chan struct{})
	go func() {
		_, _ = io.Copy(up, c)
		close(clientGone)
		up.Close()
	}()
	br := bufio.NewReader(up)
	afterData := false
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		if afterData && len(line) >= 4 && line[3] == ' ' {
			// The answer to the end of the message: Mailpit has it now.
			afterData = false
			switch p.take() {
			case "hold":
				p.lost <- struct{}{}
				<-clientGone
				return
			case "drop":
				p.lost <- struct{}{}
				return
			}
		}
		if strings.HasPrefix(line, "354") {
			afterData = true
		}
		if _, err := c.Write([]byte(line)); err != nil {
			return
		}
	}
}

// ---------------------------------------------------------------------------
// Shared helpers.

func newMailer(t *testing.T, host string, port int) *mailer.Mailer {
	t.Helper()
	m, err := mailer.New(mailer.Config{Host: host, Port: port, TLS: mailer.TLSNone,
		From: "Security <security@" + mailDomain + ">", ServiceName: mailService, Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// temporalStack brings up a dev server and the relay; the test starts the
// worker with the activities it needs.
func (s *stack) temporalStack() client.Client {
	srv := testenv.Temporal(s.t, "")
	s.startRelay(srv.FrontendHostPort())
	return srv.Client()
}

// runWorker starts a worker and returns a function that stops it (a worker
// process going away mid-reaction).
func (s *stack) runWorker(c client.Client, acts *activities.Activities) (stop func()) {
	s.t.Helper()
	w := worker.New(c, acts, workerOptions(sdkworker.Options{}))
	if err := w.Start(); err != nil {
		s.t.Fatal(err)
	}
	var once sync.Once
	stop = func() { once.Do(w.Stop) }
	s.t.Cleanup(stop)
	s.Temporal = c
	return stop
}

// sign signs a SET and returns its event key and token.
func (s *stack) sign(set simulator.SET) (string, string) {
	s.t.Helper()
	set.Issuer, set.Audience = testIssuer, testAudience
	if set.JTI == "" {
		set.JTI = simulator.NewID()
	}
	claims, err := set.Claims()
	if err != nil {
		s.t.Fatal(err)
	}
	token, err := s.Key.Sign(claims)
	if err != nil {
		s.t.Fatal(err)
	}
	return ingress.SETKey(set.JTI), token
}

// deliverSET sends a SET, which must be accepted, and returns its event key.
func (s *stack) deliverSET(set simulator.SET) string {
	s.t.Helper()
	jti, status, body := s.send(set)
	if status != http.StatusAccepted {
		s.t.Fatalf("%s: %d %s", set.EventType, status, body)
	}
	return ingress.SETKey(jti)
}

type inboxRow struct {
	Status     string `db:"status"`
	LastError  string `db:"last_error"`
	WorkflowID string `db:"workflow_id"`
}

func (s *stack) inboxRow(key string) inboxRow {
	s.t.Helper()
	var r inboxRow
	if err := s.DB.Get(&r, `SELECT status, COALESCE(last_error, '') AS last_error, COALESCE(workflow_id, '') AS workflow_id
		FROM setflow_inbox WHERE dedupe_key = $1`, key); err != nil {
		s.t.Fatal(err)
	}
	return r
}

// finish waits for an event's reaction to complete. A reaction that parks or
// ends otherwise fails the test at once, with its audit trail.
func (s *stack) finish(key string) workflows.ReactionResult { return s.waitReaction(key) }

// expectAudit checks an event's whole audit trail, so a duplicated or missing
// row fails. Session revocation runs at once, beside the event's state change
// and other steps, so its rows may come anywhere after "received": they are
// compared apart from the others, whose order is checked.
func (s *stack) expectAudit(key string, want ...string) {
	s.t.Helper()
	got := s.auditSteps(key)
	if !sameTrail(strings.Split(got, ","), want) {
		s.t.Fatalf("audit of %s:\n got %s\nwant %s", key, got, strings.Join(want, ","))
	}
}

// sameTrail compares two audit trails (step=outcome): revocations as a set,
// every other row in order.
func sameTrail(got, want []string) bool {
	split := func(trail []string) (ordered, revocations []string) {
		for _, row := range trail {
			_, step, _ := strings.Cut(row, "/")
			if strings.HasPrefix(step, policy.RevokeSessions) {
				revocations = append(revocations, row)
			} else {
				ordered = append(ordered, row)
			}
		}
		slices.Sort(revocations)
		return ordered, revocations
	}
	go1, gr := split(got)
	wo, wr := split(want)
	return slices.Equal(go1, wo) && slices.Equal(gr, wr)
}

// completed is the row that ends every event of a user's stream.
func completed(name string) string { return name + "/" + workflows.StepCompleted + "=done" }

// subjectOf names a test user as the worker and relay do.
func subjectOf(userID string) userstate.Subject {
	return userstate.Subject{Hash: subjects.Hash(testIssuer, userID), Issuer: testIssuer, UserID: userID}
}

// state returns a user's stored state.
func (s *stack) state(userID string) statedb.Snapshot {
	s.t.Helper()
	snap, err := statedb.NewStore(s.DB).Get(context.Background(), subjects.Hash(testIssuer, userID))
	if err != nil {
		s.t.Fatalf("state of %s: %v", userID, err)
	}
	return snap
}

// waitSynced waits until the CRM holds the user's current state (the sync
// of the state's version is through and audited), and returns that version.
func (s *stack) waitSynced(userID string) int64 {
	s.t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		snap := s.state(userID)
		if v := snap.State.Version; v > 0 && snap.CRMVersion >= v {
			s.waitAudit(syncEventKey(userID), fmt.Sprintf("crm-sync/v%d", v))
			return v
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("crm of %s not synced: state v%d, crm v%d; sync audit %s", userID, snap.State.Version, snap.CRMVersion,
				s.auditSteps(syncEventKey(userID)))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// syncEventKey is the audit event key of a user's CRM syncs.
func syncEventKey(userID string) string { return "crm-sync/" + subjects.Hash(testIssuer, userID) }

// syncKey is the idempotency key of one CRM call of the sync of a version
// (op: upsert, blank, marketing or delete).
func syncKey(userID string, version int64, op string) string {
	return fmt.Sprintf("%s/v%d/%s", syncEventKey(userID), version, op)
}

// waitAudit waits for an audit row of an event's step and returns it.
func (s *stack) waitAudit(key, step string) audit.Record {
	s.t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		recs, err := s.Audit.ForEvent(context.Background(), key)
		if err != nil {
			s.t.Fatal(err)
		}
		for _, r := range recs {
			if r.Step == step {
				return r
			}
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("no audit row %s for %s; audit %s", step, key, s.auditSteps(key))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stream asks a user's stream what it is doing.
func (s *stack) stream(userID string) workflows.StreamStatus {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, err := s.Temporal.QueryWorkflow(ctx, workflows.UserStreamID(subjects.Hash(testIssuer, userID)), "", workflows.QueryState)
	if err != nil {
		s.t.Fatalf("query stream of %s: %v", userID, err)
	}
	var st workflows.StreamStatus
	if err := v.Get(&st); err != nil {
		s.t.Fatal(err)
	}
	return st
}

// streamRuns counts the runs of a user's stream, open or closed.
func (s *stack) streamRuns(userID string) int {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := s.Temporal.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
		Query: "WorkflowId = '" + workflows.UserStreamID(subjects.Hash(testIssuer, userID)) + "'"})
	if err != nil {
		s.t.Fatal(err)
	}
	return len(resp.Executions)
}

func (s *stack) seedProfile(userID, email, nickname string) {
	s.t.Helper()
	// A day-old profile change, applied as the stream would.
	sub := subjectOf(userID)
	c := userstate.Change{Time: time.Now().Add(-24 * time.Hour).UTC().Truncate(time.Microsecond), Now: time.Now(),
		Fields: map[userstate.Field]string{userstate.Email: email, userstate.Nickname: nickname}}
	if _, err := statedb.NewStore(s.DB).Apply(context.Background(), sub, "seed:"+userID, func(st userstate.State) (userstate.State, userstate.Decision) {
		return userstate.Apply(st, c)
	}); err != nil {
		s.t.Fatal(err)
	}
}

func (s *stack) profileOf(userID string) (profile.Profile, error) {
	return profile.NewStore(s.DB).Get(context.Background(), profile.Key{Issuer: testIssuer, UserID: userID})
}

func (s *stack) mustProfile(userID string) profile.Profile {
	s.t.Helper()
	p, err := s.profileOf(userID)
	if err != nil {
		s.t.Fatalf("profile %s: %v", userID, err)
	}
	return p
}

func (s *stack) sessionCount(userID string) int {
	s.t.Helper()
	var n int
	if err := s.DB.Get(&n, `SELECT count(*) FROM sessions WHERE user_id = $1`, userID); err != nil {
		s.t.Fatal(err)
	}
	return n
}

// defaultTrail is the audit trail of an event whose default reaction ran
// every step to done, in the default policy's order, through to its
// completed row.
func defaultTrail(name string) []string {
	out := []string{name + "/received=received"}
	for _, st := range policy.Default().For("", name).Steps {
		out = append(out, name+"/"+st.Name+"=done")
	}
	return append(out, completed(name))
}

// noticeID is the Message-ID (without brackets) of an event's notice.
func noticeID(key, eventName string) string {
	return strings.Trim(mailer.MessageID(workflows.StepKey(key, eventName, policy.SendNotice), mailDomain), "<>")
}

// mailsWithID lists Mailpit's messages with that Message-ID.
func mailsWithID(t *testing.T, mp *testenv.MailpitServer, id string) []testenv.MailpitMessage {
	t.Helper()
	var out []testenv.MailpitMessage
	for _, m := range mp.Messages(t) {
		if m.MessageID == id {
			out = append(out, m)
		}
	}
	return out
}

// expectNotice checks that exactly one notice of that kind reached the user
// for the event, with the Message-ID derived from the step's idempotency key.
func expectNotice(t *testing.T, mp *testenv.MailpitServer, m *mailer.Mailer, key, eventName string, kind mailer.Kind, to string) {
	t.Helper()
	id := noticeID(key, eventName)
	msgs := mailsWithID(t, mp, id)
	if len(msgs) != 1 {
		t.Fatalf("%d emails with Message-ID %s for %s, want exactly 1", len(msgs), id, key)
	}
	want, err := m.Render(mailer.Notice{Kind: kind, To: to, EventTime: time.Now(), IdempotencyKey: "x"})
	if err != nil {
		t.Fatal(err)
	}
	got := msgs[0]
	if got.Subject != want.Subject || len(got.To) != 1 || got.To[0].Address != to {
		t.Fatalf("notice %s: subject %q to %v, want %q to %s", kind, got.Subject, got.To, want.Subject, to)
	}
	if h := mp.Message(t, got.ID).Headers["X-Setflow-Notice"]; len(h) != 1 || h[0] != string(kind) {
		t.Fatalf("notice header %v, want %s", h, kind)
	}
}

// ---------------------------------------------------------------------------
// 1. Security family.

// account-disabled (hijacking), credential-change and credential-compromise
// revoke only the sessions that existed at the event's time, set the lock or
// re-authentication flag, and email the user exactly one notice of the right
// kind through a real SMTP server — also when the SET is delivered again. An
// account-enabled that happened before the disable does not unlock; one after
// it does.
func TestReactionSecurityFamily(t *testing.T) {
	s := newStack(t)
	c := s.temporalStack()
	mp := testenv.Mailpit(t)
	m := newMailer(t, mp.SMTPHost, mp.SMTPPort)
	acts := s.activities()
	acts.Mailer = m
	s.startWorkerWith(c, acts)

	now := time.Now().Truncate(time.Second)
	at := now.Add(-10 * time.Minute) // when the events happened
	users := map[string]string{"1001": "hijacked@example.com", "1002": "changed@example.com", "1003": "leaked@example.com"}
	for id, email := range users {
		s.seedProfile(id, email, "user "+id)
		s.insertSession(id+"-before", id, at.Add(-time.Hour))
		s.insertSession(id+"-after", id, at.Add(5*time.Minute)) // signed in again after the event
	}

	disableKey, disableToken := s.sign(simulator.SET{UserID: "1001", EventType: "account-disabled",
		Fields: map[string]any{"reason": "hijacking"}, IssuedAt: at})
	for range 2 { // delivered twice before its reaction ran
		if st, body := s.post(disableToken); st != http.StatusAccepted {
			t.Fatalf("account-disabled: %d %s", st, body)
		}
	}
	changeKey := s.deliverSET(simulator.SET{UserID: "1002", EventType: "credential-change",
		Fields: map[string]any{"credential_type": "password", "change_type": "update"}, IssuedAt: at})
	compromiseKey := s.deliverSET(simulator.SET{UserID: "1003", EventType: "credential-compromise", IssuedAt: at})

	for key, want := range map[string]int64{disableKey: 1, changeKey: 1, compromiseKey: 1} {
		if res := s.finish(key); res.SessionsRevoked != want {
			t.Fatalf("%s revoked %d sessions, want %d", key, res.SessionsRevoked, want)
		}
	}
	for id := range users {
		if !s.revoked(id+"-before") || s.revoked(id+"-after") {
			t.Fatalf("user %s: before revoked=%v after revoked=%v, want true false", id, s.revoked(id+"-before"), s.revoked(id+"-after"))
		}
	}
	s.expectAudit(disableKey, "account-disabled/received=received", "account-disabled/revoke_sessions=done",
		"account-disabled/lock_account=done", "account-disabled/send_notice=done", completed("account-disabled"))
	s.expectAudit(changeKey, "credential-change/received=received", "credential-change/revoke_sessions=done",
		"credential-change/send_notice=done", completed("credential-change"))
	s.expectAudit(compromiseKey, "credential-compromise/received=received", "credential-compromise/revoke_sessions=done",
		"credential-compromise/require_reauth=done", "credential-compromise/send_notice=done", completed("credential-compromise"))

	if p := s.mustProfile("1001"); !p.Locked || !p.LockChangedAt.Time.Equal(at) {
		t.Fatalf("1001 after account-disabled: locked=%v at %v, want locked at %v", p.Locked, p.LockChangedAt, at)
	}
	if p := s.mustProfile("1003"); !p.ReauthRequiredAt.Valid || !p.ReauthRequiredAt.Time.Equal(at) || p.Locked {
		t.Fatalf("1003 after credential-compromise: reauth %v locked %v, want reauth at %v", p.ReauthRequiredAt, p.Locked, at)
	}
	if p := s.mustProfile("1002"); p.ReauthRequiredAt.Valid || p.Locked {
		t.Fatalf("credential-change set flags it should not: %+v", p)
	}

	mp.WaitMessages(t, 3, 10*time.Second)
	expectNotice(t, mp, m, disableKey, "account-disabled", mailer.Kind(policy.NoticeAccountHijacked), users["1001"])
	expectNotice(t, mp, m, changeKey, "credential-change", mailer.Kind(policy.NoticePasswordChanged), users["1002"])
	expectNotice(t, mp, m, compromiseKey, "credential-compromise", mailer.Kind(policy.NoticeCredentialCompromise), users["1003"])

	// The same SET once more after its reaction: accepted, not run again.
	if st, _ := s.post(disableToken); st != http.StatusAccepted {
		t.Fatalf("late duplicate: %d", st)
	}

	// An account-enabled that happened before the disable arrives late: the
	// account stays locked.
	olderEnable := s.deliverSET(simulator.SET{UserID: "1001", EventType: "account-enabled", IssuedAt: at.Add(-5 * time.Minute)})
	s.finish(olderEnable)
	s.expectAudit(olderEnable, "account-enabled/received=received", "account-enabled/unlock_account=superseded",
		completed("account-enabled"))
	if p := s.mustProfile("1001"); !p.Locked {
		t.Fatal("an account-enabled older than the disable unlocked the account")
	}
	// One that happened after the disable unlocks.
	newerEnable := s.deliverSET(simulator.SET{UserID: "1001", EventType: "account-enabled", IssuedAt: now})
	s.finish(newerEnable)
	s.expectAudit(newerEnable, "account-enabled/received=received", "account-enabled/unlock_account=done",
		completed("account-enabled"))
	if p := s.mustProfile("1001"); p.Locked || !p.LockChangedAt.Time.Equal(now) {
		t.Fatalf("after a newer account-enabled: locked=%v at %v", p.Locked, p.LockChangedAt)
	}

	// The SET delivered three times was applied once (the audit above has
	// one "received"), by the user's one stream.
	if n := s.streamRuns("1001"); n != 1 {
		t.Fatalf("%d runs of 1001's stream, want 1", n)
	}
	if msgs := mp.Messages(t); len(msgs) != 3 {
		t.Fatalf("%d emails in Mailpit, want 3 (one per notice event)", len(msgs))
	}
}

// ---------------------------------------------------------------------------
// 2. Link family.

// user-unlinked revokes, marks the user unlinked, syncs the CRM and schedules
// the purge; when the retention timer fires the user's data is purged: the
// profile row stays as a tombstone with its fields blanked, the sessions
// created up to the unlink are deleted, and the CRM sync deletes the contact.
func TestReactionUnlinkPurgesAfterRetention(t *testing.T) {
	s := newStack(t)
	c := s.temporalStack()
	hs := newHubSpot(t)
	acts := s.activities()
	// Long enough that the unlinked state reaches the CRM before the purge
	// replaces it, even on a loaded CI machine (3 s was not).
	const retention = 12 * time.Second
	acts.CRM, acts.PurgeAfter = hs.client(), retention
	s.startWorkerWith(c, acts)

	s.seedProfile("2001", "gone@example.com", "gone")
	s.insertSession("2001-old", "2001", time.Now().Add(-time.Hour))
	s.insertSession("2001-other", "2002", time.Now().Add(-time.Hour))
	// The retention runs from the unlink's event time (its iat, in seconds).
	unlinkedAt := time.Now().Truncate(time.Second)
	key := s.deliverSET(simulator.SET{UserID: "2001", EventType: "user-unlinked", IssuedAt: unlinkedAt,
		Fields: map[string]any{"reason": "UNLINK_FROM_SERVICE"}})
	if res := s.finish(key); res.SessionsRevoked != 1 || !s.revoked("2001-old") {
		t.Fatalf("unlink reaction %+v", res)
	}
	s.expectAudit(key, defaultTrail("user-unlinked")...)
	if p := s.mustProfile("2001"); !p.Linked.Valid || p.Linked.Bool {
		t.Fatalf("profile after unlink: linked %v", p.Linked)
	}
	unlinkedVersion := s.waitSynced("2001")
	if ct, _ := hs.contact("2001"); ct["kakao_linked"] != "false" || ct["email"] != "gone@example.com" {
		t.Fatalf("crm contact after unlink: %v", ct)
	}
	if ups := hs.withKey(syncKey("2001", unlinkedVersion, "upsert")); len(ups) != 1 || !ups[0].Applied {
		t.Fatalf("crm upserts of the unlinked state: %+v", ups)
	}

	// The purge waits out the retention on the stream's durable timer, then
	// deletes.
	run := s.waitAudit(key, "purge/run")
	if run.Outcome != "done" {
		t.Fatalf("purge run %s %v", run.Outcome, run.Detail)
	}
	if d := run.CreatedAt.Sub(unlinkedAt); d < retention {
		t.Fatalf("purged %v after the unlink, before the %v retention", d, retention)
	}
	if c, err := time.Parse(time.RFC3339Nano, fmt.Sprint(run.Detail["cutoff"])); err != nil || !c.Equal(unlinkedAt) {
		t.Fatalf("purge cutoff %v (%v), want the unlink's time %v", run.Detail["cutoff"], err, unlinkedAt)
	}
	if r := s.waitAudit(key, "purge/sessions"); r.Outcome != "done" || r.Detail["sessions_deleted"] != float64(1) {
		t.Fatalf("purge sessions %s %v", r.Outcome, r.Detail)
	}
	p, err := s.profileOf("2001")
	if err != nil {
		t.Fatalf("profile after purge: %v, want the tombstone row", err)
	}
	if p.Email.Valid || p.Nickname.Valid || p.PhoneNumber.Valid || !p.Linked.Valid || p.Linked.Bool {
		t.Fatalf("profile after purge: email %v nickname %v phone %v linked %v, want blank fields, unlinked",
			p.Email, p.Nickname, p.PhoneNumber, p.Linked)
	}
	if st := s.state("2001").State; st.Tombstone == nil || st.Purge != nil {
		t.Fatalf("state after purge: tombstone %+v pending %+v", st.Tombstone, st.Purge)
	}
	if n := s.sessionCount("2001"); n != 0 {
		t.Fatalf("%d sessions left after purge", n)
	}
	if s.sessionCount("2002") != 1 {
		t.Fatal("purge deleted another user's session")
	}
	purgedVersion := s.waitSynced("2001")
	if _, ok := hs.contact("2001"); ok || hs.deleted("2001") != 1 {
		t.Fatalf("crm contact still there or deleted %d times", hs.deleted("2001"))
	}
	if dels := hs.seen(func(r crmRequest) bool { return r.Contact == "2001" && r.Op == "gdpr-delete" }); len(dels) != 1 || purgedVersion <= unlinkedVersion {
		t.Fatalf("crm deletes %+v (sync v%d after v%d)", dels, purgedVersion, unlinkedVersion)
	}
	s.expectAudit(key, append(defaultTrail("user-unlinked"), "purge/run=done", "purge/sessions=done")...)
	s.expectAudit(syncEventKey("2001"), fmt.Sprintf("crm-sync/v%d=done", unlinkedVersion), fmt.Sprintf("crm-sync/v%d=done", purgedVersion))
}

// A user who links again before the retention ends cancels the purge and
// keeps their data. The unlink webhook and the OAUTH user-unlinked SET report
// the same unlink: both are applied to the user's state, the second changes
// nothing (its unlink is not newer) and its revocation ends no session
// created since the first.
func TestReactionRelinkCancelsPurgeAndUnlinkRunsOnce(t *testing.T) {
	s := newStack(t)
	w := s.withWebhooks()
	c := s.temporalStack()
	hs := newHubSpot(t)
	acts := s.activities()
	// Long enough that the purge cannot fire during the test: the outcome
	// must come from the cancellation.
	acts.CRM, acts.PurgeAfter = hs.client(), 20*time.Second
	s.startWorkerWith(c, acts)

	now := time.Now().Truncate(time.Second)
	s.seedProfile("2101", "back@example.com", "back")
	s.insertSession("2101-old", "2101", now.Add(-time.Hour))
	unlink := s.deliverSET(simulator.SET{UserID: "2101", EventType: "user-unlinked", IssuedAt: now.Add(-2 * time.Second)})
	s.finish(unlink)
	if st := s.stream("2101"); st.Purge == nil || !st.Purge.Cutoff.Equal(now.Add(-2*time.Second)) {
		t.Fatalf("stream after unlink: pending purge %+v", st.Purge)
	}
	link := s.deliverSET(simulator.SET{UserID: "2101", EventType: "user-linked", IssuedAt: now})
	s.finish(link)
	s.expectAudit(link, "user-linked/received=received", "user-linked/mark_linked=done",
		"user-linked/cancel_purge=done", "user-linked/crm_upsert=done", completed("user-linked"))

	// The cancellation stopped the stream's timer: nothing is pending, in
	// the stream or in the state, and the unlink's trail has no purge.
	if st := s.stream("2101"); st.Purge != nil {
		t.Fatalf("stream after the link: pending purge %+v", st.Purge)
	}
	if st := s.state("2101").State; st.Purge != nil || st.Tombstone != nil {
		t.Fatalf("state after the link: pending %+v tombstone %+v", st.Purge, st.Tombstone)
	}
	s.expectAudit(unlink, defaultTrail("user-unlinked")...)
	p := s.mustProfile("2101")
	if !p.Linked.Bool || p.Email.String != "back@example.com" || s.sessionCount("2101") != 1 {
		t.Fatalf("data not kept: %+v sessions %d", p, s.sessionCount("2101"))
	}
	s.waitSynced("2101")
	if ct, ok := hs.contact("2101"); !ok || hs.deleted("2101") != 0 || ct["kakao_linked"] != "true" {
		t.Fatalf("crm contact %v (exists %v), deleted %d times", ct, ok, hs.deleted("2101"))
	}

	// The same unlink reported by the unlink webhook and by a SET.
	s.insertSession("2102-old", "2102", now.Add(-time.Hour))
	if st := w.deliver(simulator.Delivery{Path: ingress.PathUnlink, Encoding: simulator.EncodingForm,
		Fields: map[string]any{"app_id": webhookAppID, "user_id": "2102", "referrer_type": "UNLINK_FROM_APPS"}}); st != http.StatusOK {
		t.Fatalf("unlink webhook: %d", st)
	}
	var hookKey string
	if err := s.DB.Get(&hookKey, `SELECT dedupe_key FROM setflow_inbox WHERE source = 'unlink'`); err != nil {
		t.Fatal(err)
	}
	if res := s.finish(hookKey); res.SessionsRevoked != 1 {
		t.Fatalf("webhook reaction %+v", res)
	}
	s.expectAudit(hookKey, defaultTrail("user-unlinked")...)
	hookVersion := s.waitSynced("2102")
	// Signed in after the webhook's unlink: the SET's revocation (as of its
	// own, earlier event time) must not end it. Its time is in whole seconds
	// and covers its second (event.SessionsUpTo): the session is made after
	// that second.
	between := time.Now()
	if between.Before(now.Add(time.Second)) {
		between = now.Add(time.Second)
	}
	s.insertSession("2102-between", "2102", between)
	setKey := s.deliverSET(simulator.SET{UserID: "2102", EventType: "user-unlinked", IssuedAt: now})
	if res := s.finish(setKey); res.SessionsRevoked != 0 {
		t.Fatalf("second report of the unlink revoked %d sessions", res.SessionsRevoked)
	}
	s.expectAudit(setKey, "user-unlinked/received=received", "user-unlinked/revoke_sessions=done",
		"user-unlinked/mark_unlinked=superseded", "user-unlinked/crm_upsert=superseded",
		"user-unlinked/schedule_purge=superseded", completed("user-unlinked"))
	if s.revoked("2102-between") {
		t.Fatal("the second report of the same unlink revoked a session created after the first")
	}
	if st := s.state("2102"); st.State.Version != hookVersion || st.State.Purge == nil || st.State.Purge.EventKey != hookKey {
		t.Fatalf("state after the second report: v%d (want v%d), pending purge %+v", st.State.Version, hookVersion, st.State.Purge)
	}
	if ups := hs.seen(func(r crmRequest) bool { return r.Contact == "2102" && r.Op == "upsert" }); len(ups) != 1 {
		t.Fatalf("%d crm upserts for the unlinked user, want 1", len(ups))
	}
}

// ---------------------------------------------------------------------------
// 3. Profile and CRM family.

// user-profile-changed without fields refreshes the profile from Kakao's user
// API and syncs the new email to the CRM; user-scope-withdraw deletes the
// withdrawn email from the profile and the CRM; Talk Channel added and blocked
// switch the CRM's marketing property on and off, and an older event does not
// flip it (nor write to the CRM at all).
func TestReactionProfileAndCRMFamily(t *testing.T) {
	s := newStack(t)
	w := s.withWebhooks()
	c := s.temporalStack()
	hs := newHubSpot(t)
	kakao := newKakaoAPI(t, map[string]kakaoUser{"3001": {Email: "new@example.com", Nickname: "새이름"}})
	acts := s.activities()
	acts.CRM, acts.Kakao = hs.client(), kakao.client()
	s.startWorkerWith(c, acts)

	s.seedProfile("3001", "old@example.com", "옛이름")
	changed := s.deliverSET(simulator.SET{UserID: "3001", EventType: "user-profile-changed"})
	s.finish(changed)
	s.expectAudit(changed, "user-profile-changed/received=received", "user-profile-changed/refresh_profile=done",
		"user-profile-changed/crm_upsert=done", completed("user-profile-changed"))
	if calls := kakao.Calls(); len(calls) != 1 || calls[0] != "GET /v2/user/me 3001" {
		t.Fatalf("kakao api calls %q", calls)
	}
	if p := s.mustProfile("3001"); p.Email.String != "new@example.com" || p.Nickname.String != "새이름" {
		t.Fatalf("profile after refresh: %v %v", p.Email, p.Nickname)
	}
	v := s.waitSynced("3001")
	upsertKey := syncKey("3001", v, "upsert")
	ups := hs.withKey(upsertKey)
	if len(ups) != 1 || ups[0].Op != "upsert" || ups[0].Contact != "3001" ||
		ups[0].Props["email"] != "new@example.com" || ups[0].Props["firstname"] != "새이름" {
		t.Fatalf("crm writes with key %s: %+v", upsertKey, ups)
	}

	withdraw := s.deliverSET(simulator.SET{UserID: "3001", EventType: "user-scope-withdraw",
		Fields: map[string]any{"scopes": []string{"account_email"}}})
	s.finish(withdraw)
	s.expectAudit(withdraw, "user-scope-withdraw/received=received", "user-scope-withdraw/update_consents=done",
		"user-scope-withdraw/crm_delete_fields=done", completed("user-scope-withdraw"))
	if p := s.mustProfile("3001"); p.Email.Valid || p.Nickname.String != "새이름" {
		t.Fatalf("profile after withdrawing account_email: email %v nickname %v", p.Email, p.Nickname)
	}
	s.waitSynced("3001")
	patches := hs.seen(func(r crmRequest) bool { return r.Contact == "3001" && r.Op == "patch" })
	if len(patches) != 1 || len(patches[0].Props) != 1 || patches[0].Props["email"] != "" {
		t.Fatalf("crm delete-fields writes %+v, want one PATCH blanking email", patches)
	}
	if ct, _ := hs.contact("3001"); ct["email"] != "" || ct["firstname"] != "새이름" {
		t.Fatalf("crm contact after withdraw: %v", ct)
	}

	// Talk Channel: added, an older blocked, a newer blocked. Event times
	// lie within the bounds an event time is clamped to.
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	channel := func(resource, ev string, at time.Time) string {
		t.Helper()
		d := simulator.Delivery{Path: ingress.PathTalkChannel, ResourceID: resource,
			Fields: map[string]any{"event": ev, "id": "3001", "id_type": "app_user_id",
				"channel_public_id": "_ZeUTxl", "channel_uuid": "@setflow", "updated_at": at.Format(time.RFC3339)}}
		if st := w.deliver(d); st != http.StatusOK {
			t.Fatalf("talk channel %s: %d", ev, st)
		}
		key := ingress.TalkChannelKey(resource)
		s.finish(key)
		return key
	}
	marketing := func() string {
		ct, _ := hs.contact("3001")
		return ct[crm.DefaultMarketingProperty]
	}
	added := channel("ch-add", "added", t0.Add(5*time.Minute))
	s.expectAudit(added, "channel-added/received=received", "channel-added/record_channel=done", "channel-added/crm_marketing=done",
		completed("channel-added"))
	s.waitSynced("3001")
	if got := marketing(); got != "true" {
		t.Fatalf("marketing after added: %q", got)
	}
	before, writes := s.state("3001").State.Version, len(hs.forContact("3001"))
	older := channel("ch-old", "blocked", t0)
	s.expectAudit(older, "channel-blocked/received=received", "channel-blocked/record_channel=superseded",
		"channel-blocked/crm_marketing=superseded", completed("channel-blocked"))
	if got := marketing(); got != "true" {
		t.Fatalf("an older blocked flipped marketing to %q", got)
	}
	if v := s.state("3001").State.Version; v != before {
		t.Fatalf("the older channel event changed the state: v%d after v%d", v, before)
	}
	if ws := hs.forContact("3001"); len(ws) != writes {
		t.Fatalf("the older channel event wrote to the CRM: %+v", ws[writes:])
	}
	newer := channel("ch-new", "blocked", t0.Add(10*time.Minute))
	s.expectAudit(newer, "channel-blocked/received=received", "channel-blocked/record_channel=done", "channel-blocked/crm_marketing=done",
		completed("channel-blocked"))
	s.waitSynced("3001")
	if got := marketing(); got != "false" {
		t.Fatalf("marketing after a newer blocked: %q", got)
	}
}

// ---------------------------------------------------------------------------
// 4. Failure handling.

// A CRM answering 429 with Retry-After is retried after the delay it asked
// for, and a 503 is retried: each sync then succeeds with one write applied,
// every attempt of a version's sync under the same idempotency key. A 400 is
// permanent: not retried, the user's sync parks in the stream (the event
// itself is through: the sync brings the CRM to the state, whichever events
// asked for it), and an operator's retry signal re-drives it once the CRM is
// fixed.
func TestReactionCRMFailures(t *testing.T) {
	s := newStack(t)
	c := s.temporalStack()
	hs := newHubSpot(t)
	acts := s.activities()
	acts.CRM = hs.client()
	s.startWorkerWith(c, acts)

	hs.script("4001", crmAnswer{Status: http.StatusTooManyRequests, RetryAfter: "2"},
		crmAnswer{Status: http.StatusTooManyRequests, RetryAfter: "2"})
	hs.script("4002", crmAnswer{Status: http.StatusServiceUnavailable})
	hs.refuseAll("4003", http.StatusBadRequest)
	limited := s.deliverSET(simulator.SET{UserID: "4001", EventType: "user-linked"})
	unavailable := s.deliverSET(simulator.SET{UserID: "4002", EventType: "user-linked"})
	refused := s.deliverSET(simulator.SET{UserID: "4003", EventType: "user-linked"})

	okTrail := []string{"user-linked/received=received", "user-linked/mark_linked=done",
		"user-linked/cancel_purge=skipped", "user-linked/crm_upsert=done", completed("user-linked")}
	s.finish(limited)
	s.expectAudit(limited, okTrail...)
	v := s.waitSynced("4001")
	reqs := hs.withKey(syncKey("4001", v, "upsert"))
	if len(reqs) != 3 || applied(reqs) != 1 || !reqs[2].Applied {
		t.Fatalf("rate-limited upsert: %d requests, %d applied, want 3 and 1 (the last)", len(reqs), applied(reqs))
	}
	// Temporal's own schedule would retry after 1 s the first time: the
	// 2 s wait is the CRM's Retry-After.
	for i := 1; i < 3; i++ {
		if gap := reqs[i].At.Sub(reqs[i-1].At); gap < 1900*time.Millisecond {
			t.Fatalf("retry %d came %v after a 429 with Retry-After: 2", i, gap)
		}
	}
	s.expectAudit(syncEventKey("4001"), fmt.Sprintf("crm-sync/v%d=done", v))

	s.finish(unavailable)
	s.expectAudit(unavailable, okTrail...)
	v = s.waitSynced("4002")
	if reqs := hs.withKey(syncKey("4002", v, "upsert")); len(reqs) != 2 || applied(reqs) != 1 {
		t.Fatalf("upsert after a 503: %d requests, %d applied", len(reqs), applied(reqs))
	}

	// 400: the event completes; its sync fails once and parks.
	s.finish(refused)
	s.expectAudit(refused, okTrail...)
	v = s.state("4003").State.Version
	refusedKey := syncKey("4003", v, "upsert")
	waitFor(t, "the refused sync to park", func() bool { return slices.Contains(s.stream("4003").Parked, syncEventKey("4003")) })
	recs, err := s.Audit.ForEvent(context.Background(), syncEventKey("4003"))
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || !strings.HasPrefix(recs[0].Step, "crm-sync/failed@") || recs[0].Outcome != "failed" ||
		!strings.Contains(fmt.Sprint(recs[0].Detail["error"]), "HTTP 400") {
		t.Fatalf("sync audit after a 400: %+v", recs)
	}
	if r := s.inboxRow(refused); r.Status != "dispatched" {
		t.Fatalf("inbox row of the event whose sync parked: %+v", r)
	}
	if reqs := hs.withKey(refusedKey); len(reqs) != 1 {
		t.Fatalf("a permanent 400 was tried %d times, want once", len(reqs))
	}
	if snap := s.state("4003"); snap.CRMVersion >= snap.State.Version {
		t.Fatalf("a refused sync marked v%d synced", snap.CRMVersion)
	}
	// A parked stream does not look like a running one: operators find it.
	parkedQuery := fmt.Sprintf(`SetflowOutcome = "parked" AND SetflowSubject = %q`, subjects.Hash(testIssuer, "4003"))
	waitFor(t, "the parked stream by search attribute", func() bool { return s.countWorkflows(parkedQuery) == 1 })
	if n := s.countWorkflows(`SetflowOutcome = "parked"`); n != 1 {
		t.Fatalf("%d parked workflows, want only the refused user's", n)
	}

	// The CRM is fixed; the operator retries the user's sync.
	hs.refuseAll("4003", 0)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Temporal.SignalWorkflow(ctx, workflows.UserStreamID(subjects.Hash(testIssuer, "4003")), "",
		workflows.SignalRetry, syncEventKey("4003")); err != nil {
		t.Fatal(err)
	}
	if got := s.waitSynced("4003"); got != v {
		t.Fatalf("synced v%d, want v%d", got, v)
	}
	if st := s.stream("4003"); len(st.Parked) != 0 {
		t.Fatalf("still parked after the retry: %v", st.Parked)
	}
	waitFor(t, "no parked workflow after the retry", func() bool { return s.countWorkflows(`SetflowOutcome = "parked"`) == 0 })
	s.expectAudit(syncEventKey("4003"), recs[0].Step+"=failed", fmt.Sprintf("crm-sync/v%d=done", v))
	if reqs := hs.withKey(refusedKey); len(reqs) != 2 || applied(reqs) != 1 {
		t.Fatalf("after the retry: %d requests, %d applied", len(reqs), applied(reqs))
	}
	if ct, _ := hs.contact("4003"); ct["kakao_linked"] != "true" {
		t.Fatalf("crm contact after the retry: %v", ct)
	}
}

// ---------------------------------------------------------------------------
// 5. Crash and retry.

// A worker goes away mid-reaction — one event after the email was accepted by
// the SMTP server but before the worker heard so, another while its CRM sync
// is in flight. A fresh worker (new activities, same database) finishes both:
// the notice is sent again with the same Message-ID (at least once: a lost
// notice is worse than a recognisable repeat), exactly one applied CRM write
// per idempotency key (the retried sync of a version reuses its key), each
// audit row once. The same holds when the SMTP answer is lost without any
// crash.
func TestReactionCrashAndRetry(t *testing.T) {
	s := newStack(t)
	c := s.temporalStack()
	mp := testenv.Mailpit(t)
	proxy := newSMTPProxy(t, mp.SMTPAddr())
	hs := newHubSpot(t)
	kakao := newKakaoAPI(t, map[string]kakaoUser{"5001": {Email: "a@example.com", Nickname: "a"}})
	// The reaction table is configurable per event type: here
	// credential-compromise also logs the user out of Kakao and syncs the CRM.
	pol, err := policy.Parse([]byte(`
version: 1
events:
  credential-compromise:
    steps:
      - revoke_sessions
      - kakao_logout
      - require_reauth
      - send_notice: {notice: credential-compromise}
      - crm_upsert
`))
	if err != nil {
		t.Fatal(err)
	}
	newActs := func() *activities.Activities {
		acts := s.activities()
		acts.Policy, acts.CRM, acts.Kakao = pol, hs.client(), kakao.client()
		acts.Mailer = newMailer(t, proxy.Host, proxy.Port)
		return acts
	}
	first := s.runWorker(c, newActs())

	s.seedProfile("5001", "a@example.com", "a")
	s.seedProfile("5002", "b@example.com", "b")
	s.insertSession("5001-old", "5001", time.Now().Add(-time.Hour))
	proxy.loseNext("hold")
	hs.script("5002", crmAnswer{Hold: true})
	mailEvent := s.deliverSET(simulator.SET{UserID: "5001", EventType: "credential-compromise"})
	crmEvent := s.deliverSET(simulator.SET{UserID: "5002", EventType: "user-linked"})

	timeout := time.After(60 * time.Second)
	select {
	case <-proxy.lost:
	case <-timeout:
		t.Fatal("timed out waiting for the email's answer to be held")
	}
	select {
	case <-hs.held:
	case <-timeout:
		t.Fatal("timed out waiting for the crm write to be held")
	}
	if msgs := mp.WaitMessages(t, 1, 10*time.Second); len(msgs) != 1 {
		t.Fatalf("%d emails before the crash", len(msgs))
	}
	first() // the worker goes away with both steps in flight

	s.runWorker(c, newActs())
	s.finish(mailEvent)
	s.finish(crmEvent)

	// Re-authentication is not part of the CRM contact: credential-compromise
	// changes nothing the CRM holds, so its crm_upsert asks for no sync.
	s.expectAudit(mailEvent, "credential-compromise/received=received", "credential-compromise/revoke_sessions=done",
		"credential-compromise/kakao_logout=done", "credential-compromise/require_reauth=done",
		"credential-compromise/send_notice=done", "credential-compromise/crm_upsert=skipped", completed("credential-compromise"))
	if d := s.auditDetail(mailEvent, "credential-compromise/send_notice"); d["repeat"] != true {
		t.Fatalf("send_notice detail %v, want repeat", d)
	}
	s.expectAudit(crmEvent, "user-linked/received=received", "user-linked/mark_linked=done",
		"user-linked/cancel_purge=skipped", "user-linked/crm_upsert=done", completed("user-linked"))
	v := s.waitSynced("5002")
	if n := len(mailsWithID(t, mp, noticeID(mailEvent, "credential-compromise"))); n != 2 {
		t.Fatalf("%d emails for the event, want the uncertain one and its repeat, with one Message-ID", n)
	}
	if calls := kakao.Calls(); len(calls) != 1 || calls[0] != "POST /v1/user/logout 5001" {
		t.Fatalf("kakao api calls %q", calls)
	}
	if ws := hs.forContact("5001"); len(ws) != 0 {
		t.Fatalf("crm writes for the email event: %+v, want none", ws)
	}
	crmUpsert := hs.withKey(syncKey("5002", v, "upsert"))
	if len(crmUpsert) != 2 || crmUpsert[0].Applied || applied(crmUpsert) != 1 || crmUpsert[1].Props["email"] != "b@example.com" {
		t.Fatalf("crm writes for the crm event: %+v, want the abandoned one and one applied", crmUpsert)
	}
	if ws := hs.seen(func(r crmRequest) bool { return r.Applied }); len(ws) != 1 {
		t.Fatalf("%d crm writes applied in all, want 1", len(ws))
	}
	if ws := hs.forContact("5002"); len(ws) != 2 {
		t.Fatalf("crm requests for 5002: %+v, want only the two attempts of one key", ws)
	}

	// The SMTP server accepts a message but the connection drops before the
	// sender hears so: the retry sends it again, with the same Message-ID.
	s.seedProfile("5003", "c@example.com", "c")
	proxy.loseNext("drop")
	lostAck := s.deliverSET(simulator.SET{UserID: "5003", EventType: "account-disabled",
		Fields: map[string]any{"reason": "hijacking"}})
	s.finish(lostAck)
	s.expectAudit(lostAck, "account-disabled/received=received", "account-disabled/revoke_sessions=done",
		"account-disabled/lock_account=done", "account-disabled/send_notice=done", completed("account-disabled"))
	if n := len(mailsWithID(t, mp, noticeID(lostAck, "account-disabled"))); n != 2 {
		t.Fatalf("%d emails after a lost SMTP answer, want the lost one and its repeat", n)
	}
	if msgs := mp.Messages(t); len(msgs) != 4 {
		t.Fatalf("%d emails in all, want 4", len(msgs))
	}
}

// auditDetail returns the detail of one audit row of an event.
func (s *stack) auditDetail(key, step string) map[string]any {
	s.t.Helper()
	recs, err := s.Audit.ForEvent(context.Background(), key)
	if err != nil {
		s.t.Fatal(err)
	}
	for _, r := range recs {
		if r.Step == step {
			return r.Detail
		}
	}
	s.t.Fatalf("no audit row %s for %s", step, key)
	return nil
}

// countWorkflows counts the workflows a visibility query selects.
func (s *stack) countWorkflows(query string) int {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := s.Temporal.CountWorkflow(ctx, &workflowservice.CountWorkflowExecutionsRequest{Query: query})
	if err != nil {
		s.t.Fatalf("%s: %v", query, err)
	}
	return int(resp.GetCount())
}
