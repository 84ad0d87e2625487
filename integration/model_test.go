package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sdkworker "go.temporal.io/sdk/worker"

	"github.com/setflow/setflow/crm"
	"github.com/setflow/setflow/event"
	"github.com/setflow/setflow/ingress"
	"github.com/setflow/setflow/internal/testenv"
	"github.com/setflow/setflow/mailer"
	"github.com/setflow/setflow/policy"
	"github.com/setflow/setflow/servicehook"
	"github.com/setflow/setflow/simulator"
	"github.com/setflow/setflow/statusapi"
	"github.com/setflow/setflow/worker"
	"github.com/setflow/setflow/workflows"
)

// TestModelRandomDeliveryOrder is the model-based test of the per-user
// stream: many users, each with a random sequence of events (link, unlink by
// SET and by webhook, profile changes of different fields, scope consent and
// withdrawal, disable/enable, purge, Talk Channel added/blocked, credential
// change), delivered in random order with duplicates through the ingress,
// two relays and two workers, one worker stopped mid-run. Every event also
// runs notify_service. Every user's final sessions, profile, CRM contact,
// notices and the last document the service's own endpoint got must equal
// an oracle that
// applies the accepted events (read back from the inbox) in event-time order
// (shared/spec/user-state.md, "The oracle").
//
// CI runs 150 users with 8–10 events each (notify_service made each event a
// step longer; 150 keeps the integration package where 200 was without it).
// A longer soak:
//
//	SETFLOW_MODEL_USERS=2000 SETFLOW_MODEL_EVENTS=16 SETFLOW_MODEL_SEED=7 \
//	  go test -run TestModelRandomDeliveryOrder -timeout 60m ./integration/
func TestModelRandomDeliveryOrder(t *testing.T) {
	users := envInt("SETFLOW_MODEL_USERS", 150)
	perUser := envInt("SETFLOW_MODEL_EVENTS", 8)
	seed := uint64(envInt("SETFLOW_MODEL_SEED", int(time.Now().UnixNano()%1_000_000)))
	t.Logf("model: %d users, %d+ events each, seed %d (SETFLOW_MODEL_SEED reproduces the event sequences)", users, perUser, seed)
	rng := rand.New(rand.NewPCG(seed, seed^0x5e7f10))

	s := newStack(t)
	// A pool as a deployment's (cmd/setflow/wiring.go): the server's limit is
	// shared with other tests, and with database/sql's default of 2 idle
	// connections every burst opened and closed backends (a fork each).
	s.DB.SetMaxOpenConns(32)
	s.DB.SetMaxIdleConns(32)
	srv := &ingress.Server{Inbox: s.Inbox, Log: s.log, Ready: s.DB.PingContext,
		Kakao: ingress.Kakao{AdminKeys: []string{webhookAdminKey}, AppID: webhookAppID, Issuer: testIssuer, KeyHash: subjects.Key}}
	hooks := &webhooks{stack: s, URL: newHTTPServer(t, srv.Handler())}
	dev := testenv.Temporal(t, "")
	s.startRelay(dev.FrontendHostPort())
	s.startRelay(dev.FrontendHostPort())
	mp := testenv.Mailpit(t)
	hs := newHubSpot(t)
	acts := s.activities()
	acts.CRM, acts.Mailer, acts.PurgeAfter = hs.client(), newMailer(t, mp.SMTPHost, mp.SMTPPort), time.Hour
	docs := newServiceDocs(t)
	acts.Policy, acts.ServiceHook = withNotifyService(t), docs.webhook
	workers := make([]*worker.Set, 2)
	for i := range workers {
		// Bounded like a deployment's worker, so that its activities do not
		// take every database connection from the ingress sharing the pool.
		workers[i] = worker.New(dev.Client(), acts, workerOptions(sdkworker.Options{
			MaxConcurrentActivityExecutionSize: 8, MaxConcurrentLocalActivityExecutionSize: 8}))
		if err := workers[i].Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(workers[i].Stop)
	}
	s.Temporal = dev.Client()

	start := time.Now().Truncate(time.Second)
	plan := newModelPlan(rng, users, perUser, start)
	for _, u := range plan.users {
		for i, at := range u.sessions {
			s.insertSession(fmt.Sprintf("%s-s%d", u.id, i), u.id, at)
		}
	}
	// Every user starts with an email address, applied and synced before the
	// random phase, so that notices have a recipient and the CRM a contact.
	var seedKeys []string
	for _, u := range plan.users {
		seedKeys = append(seedKeys, s.deliverSET(simulator.SET{UserID: u.id, EventType: "user-profile-changed",
			Fields: map[string]any{"email": u.id + "@seed.example", "event_timestamp": start.Add(-time.Hour).Unix()}}))
	}
	for _, k := range seedKeys {
		s.waitReaction(k)
	}
	t.Logf("model: seeded in %v", time.Since(start).Round(time.Second))

	var sent, retried atomic.Int64
	deliveries, late := plan.deliveries(rng)
	sendAll := func(events []modelEvent, stopWorkerAt int) {
		work := make(chan modelEvent)
		var wg sync.WaitGroup
		for range 6 {
			wg.Go(func() {
				for e := range work {
					// A 503 stores nothing and asks the sender to try again,
					// as Kakao does; under the race detector on a loaded
					// machine the ingress's deadline is sometimes too short.
					st := e.send(t, s, hooks)
					for try := 1; st == http.StatusServiceUnavailable && try < 10; try++ {
						retried.Add(1)
						time.Sleep(time.Duration(try) * 200 * time.Millisecond)
						st = e.send(t, s, hooks)
					}
					if st != http.StatusAccepted && st != http.StatusOK {
						t.Errorf("%s for user %s answered %d", e.kind, e.user, st)
					}
					sent.Add(1)
				}
			})
		}
		for i, e := range events {
			if i == stopWorkerAt {
				// A worker goes away mid-run; the other takes over its work.
				go workers[0].Stop()
			}
			work <- e
		}
		close(work)
		wg.Wait()
	}
	sendAll(deliveries, len(deliveries)/2)
	deadline := time.Now().Add(envDuration("SETFLOW_MODEL_WAIT", 10*time.Minute))
	waitThrough(t, s, acceptedEnvelopes(t, s), deadline)
	// Address changes held back until the notices after them went out: a
	// late one must still reach every notice it predates (renotify).
	sendAll(late, -1)
	t.Logf("model: %d deliveries sent (%d events, the rest repeats; %d address changes late; %d re-sent after a 503)",
		sent.Load(), plan.events, len(late), retried.Load())

	// Wait until every accepted event is through and every stream is quiet.
	envelopes := acceptedEnvelopes(t, s)
	waitThrough(t, s, envelopes, deadline)
	t.Logf("model: all events through after %v", time.Since(start).Round(time.Second))
	var renotified int
	if err := s.DB.Get(&renotified, `SELECT count(*) FROM setflow_audit WHERE detail ? 'renotify'`); err != nil {
		t.Fatal(err)
	}
	t.Logf("model: %d notices sent again for an address change that arrived after them", renotified)
	for _, u := range plan.users {
		waitStreamQuiet(t, s, u.id, deadline)
	}

	// Compare every user with the oracle.
	byUser := map[string][]event.Envelope{}
	for _, env := range envelopes {
		byUser[env.Subject.UserID] = append(byUser[env.Subject.UserID], env)
	}
	mails := map[string][]string{} // Message-ID → recipients
	msgs := mp.Messages(t)
	for _, m := range msgs {
		for _, to := range m.To {
			mails[m.MessageID] = append(mails[m.MessageID], to.Address)
		}
	}
	t.Logf("model: %d emails", len(msgs))
	failed := 0
	for _, u := range plan.users {
		want := oracle(u, byUser[u.id])
		diffs := compareUser(t, s, hs, u, want, mails)
		if diffs = append(diffs, compareService(t, s, docs, u, want)...); len(diffs) > 0 {
			failed++
			if failed <= 5 {
				t.Errorf("user %s differs from the oracle:\n  %s\n  events in time order: %s", u.id, strings.Join(diffs, "\n  "), want.trace)
			}
		}
	}
	if failed > 0 {
		t.Fatalf("%d of %d users differ from the oracle (seed %d)", failed, len(plan.users), seed)
	}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func envDuration(name string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(name)); err == nil && d > 0 {
		return d
	}
	return def
}

// waitThrough waits until every event of envs has completed all its steps.
func waitThrough(t *testing.T, s *stack, envs []event.Envelope, deadline time.Time) {
	t.Helper()
	for _, env := range envs {
		for !through(t, s, env) {
			if time.Now().After(deadline) {
				// Slow or stuck? Say how many are left and where the
				// first one's stream is.
				t.Fatalf("event %s not through: %s; %d of %d events not through; its stream: %s", env.Key,
					s.auditSteps(env.Key), notThrough(t, s, envs), len(envs), streamStatus(s, env.Subject))
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}

// notThrough counts the envelopes whose events are not all completed.
func notThrough(t *testing.T, s *stack, envs []event.Envelope) int {
	t.Helper()
	n := 0
	for _, env := range envs {
		if !through(t, s, env) {
			n++
		}
	}
	return n
}

// through says whether every event of the envelope is audited completed.
func through(t *testing.T, s *stack, env event.Envelope) bool {
	t.Helper()
	recs, err := s.Audit.ForEvent(context.Background(), env.Key)
	if err != nil {
		t.Fatal(err)
	}
	done := 0
	for _, r := range recs {
		if strings.HasSuffix(r.Step, "/"+workflows.StepCompleted) {
			done++
		}
	}
	return done >= len(env.Events)
}

// streamStatus is what the subject's stream says of itself.
func streamStatus(s *stack, sub event.Subject) string {
	id := workflows.UserStreamID(subjects.Hash(sub.Issuer, sub.UserID))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, err := s.Temporal.QueryWorkflow(ctx, id, "", workflows.QueryState)
	if err != nil {
		return fmt.Sprintf("%s: query: %v", id, err)
	}
	var st workflows.StreamStatus
	if err := v.Get(&st); err != nil {
		return fmt.Sprintf("%s: %v", id, err)
	}
	return fmt.Sprintf("%s: %+v", id, st)
}

// waitStreamQuiet waits until the user's stream has nothing queued, running
// or waiting to sync.
func waitStreamQuiet(t *testing.T, s *stack, user string, deadline time.Time) {
	t.Helper()
	id := workflows.UserStreamID(subjects.Hash(testIssuer, user))
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		v, err := s.Temporal.QueryWorkflow(ctx, id, "", workflows.QueryState)
		cancel()
		var st workflows.StreamStatus
		if err == nil && v.Get(&st) == nil && st.Queued == 0 && st.Running == 0 && !st.SyncPending && !st.SyncRunning {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream of %s not quiet: %+v %v", user, st, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// ---------------------------------------------------------------------------
// The plan: users, their events and sessions.

type modelUser struct {
	id       string
	events   []modelEvent
	sessions []time.Time
}

type modelEvent struct {
	user   string
	kind   string
	at     time.Time // event time of SETs and Talk Channel events
	fields map[string]any
	jti    string
	res    string // Talk Channel resource id
}

type modelPlan struct {
	users  []*modelUser
	events int
}

var modelKinds = []string{
	"link", "link", "unlink-set", "unlink-hook", "profile-email", "profile-nickname", "profile-phone",
	"consent", "withdraw", "disable", "enable", "purge", "channel-added", "channel-blocked", "credential-change",
}

var modelScopes = []string{"account_email", "profile_nickname", "phone_number"}

func newModelPlan(rng *rand.Rand, users, perUser int, start time.Time) *modelPlan {
	p := &modelPlan{}
	for i := range users {
		u := &modelUser{id: strconv.Itoa(7_000_000 + i)}
		// Sessions before, amid and after the events' times; and one half a
		// second into the start's second, where events may fall (a SET's
		// time in whole seconds covers its second: event.SessionsUpTo).
		u.sessions = []time.Time{start.Add(-150 * time.Second), start, start.Add(150 * time.Second), start.Add(500 * time.Millisecond)}
		n := perUser + rng.IntN(3)
		for j := range n {
			kind := modelKinds[rng.IntN(len(modelKinds))]
			if kind == "purge" && rng.IntN(3) > 0 {
				kind = "credential-change" // purges are rarer
			}
			// Whole seconds in a four-minute span around the start, so
			// that equal times happen.
			e := modelEvent{user: u.id, kind: kind, at: start.Add(time.Duration(rng.IntN(241)-120) * time.Second),
				jti: fmt.Sprintf("model-%s-%d", u.id, j), res: fmt.Sprintf("model-ch-%s-%d", u.id, j)}
			switch kind {
			case "profile-email":
				e.fields = map[string]any{"email": fmt.Sprintf("%s.%d@example.test", u.id, j)}
			case "profile-nickname":
				e.fields = map[string]any{"nickname": fmt.Sprintf("nick-%d", j)}
			case "profile-phone":
				e.fields = map[string]any{"phone_number": fmt.Sprintf("+82 10-%04d-%04d", i, j)}
			case "consent", "withdraw":
				e.fields = map[string]any{"scopes": []string{modelScopes[rng.IntN(len(modelScopes))]}}
			case "disable":
				e.fields = map[string]any{"reason": []string{"hijacking", "bulk-account"}[rng.IntN(2)]}
			}
			u.events = append(u.events, e)
			p.events++
		}
		// And one half a second into the second of the user's first event.
		u.sessions = append(u.sessions, u.events[0].at.Add(500*time.Millisecond))
		p.users = append(p.users, u)
	}
	return p
}

// deliveries is every event once plus 10% repeats, shuffled; half the
// address changes are held back (late), to be sent after the rest is through.
func (p *modelPlan) deliveries(rng *rand.Rand) (out, late []modelEvent) {
	for _, u := range p.users {
		for _, e := range u.events {
			if e.kind == "profile-email" && rng.IntN(2) == 0 {
				late = append(late, e)
			} else {
				out = append(out, e)
			}
		}
	}
	for range len(out) / 10 {
		out = append(out, out[rng.IntN(len(out))])
	}
	rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	rng.Shuffle(len(late), func(i, j int) { late[i], late[j] = late[j], late[i] })
	return out, late
}

var setTypes = map[string]string{
	"link": "user-linked", "unlink-set": "user-unlinked", "profile-email": "user-profile-changed",
	"profile-nickname": "user-profile-changed", "profile-phone": "user-profile-changed", "consent": "user-scope-consent",
	"withdraw": "user-scope-withdraw", "disable": "account-disabled", "enable": "account-enabled", "purge": "account-purged",
	"credential-change": "credential-change",
}

// send delivers the event as Kakao would; a repeat sends the same jti or
// resource id (a SET is signed anew, as a re-sent delivery may be).
func (e modelEvent) send(t *testing.T, s *stack, hooks *webhooks) int {
	switch e.kind {
	case "unlink-hook":
		return hooks.deliverNoFatal(t, simulator.Delivery{Path: ingress.PathUnlink, Encoding: simulator.EncodingForm,
			Fields: map[string]any{"app_id": webhookAppID, "user_id": e.user, "referrer_type": "UNLINK_FROM_APPS"}})
	case "channel-added", "channel-blocked":
		return hooks.deliverNoFatal(t, simulator.Delivery{Path: ingress.PathTalkChannel, ResourceID: e.res,
			Fields: map[string]any{"event": strings.TrimPrefix(e.kind, "channel-"), "id": e.user, "id_type": "app_user_id",
				"channel_public_id": "_ZeUTxl", "channel_uuid": "@setflow", "updated_at": e.at.UTC().Format(time.RFC3339)}})
	}
	fields := map[string]any{"event_timestamp": e.at.Unix()}
	for k, v := range e.fields {
		fields[k] = v
	}
	claims, err := simulator.SET{Issuer: testIssuer, Audience: testAudience, UserID: e.user, EventType: setTypes[e.kind],
		Fields: fields, JTI: e.jti}.Claims()
	if err != nil {
		t.Error(err)
		return 0
	}
	token, err := s.Key.Sign(claims)
	if err != nil {
		t.Error(err)
		return 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, _, err := simulator.Post(ctx, nil, s.Ingress.URL+ingress.PathAccountStatus, token)
	if err != nil {
		t.Error(err)
	}
	return st
}

// acceptedEnvelopes reads back the envelopes the ingress stored.
func acceptedEnvelopes(t *testing.T, s *stack) []event.Envelope {
	t.Helper()
	var raws [][]byte
	if err := s.DB.Select(&raws, `SELECT envelope FROM setflow_inbox ORDER BY id`); err != nil {
		t.Fatal(err)
	}
	var out []event.Envelope
	for _, raw := range raws {
		var env event.Envelope
		if err := json.Unmarshal(raw, &env); err != nil {
			t.Fatal(err)
		}
		out = append(out, env)
	}
	return out
}

// ---------------------------------------------------------------------------
// The oracle: user-state.md applied to a user's accepted events sorted by
// event time. Written apart from package userstate on purpose.

type oreg struct {
	v   string
	at  time.Time
	set bool
}

func orank(v string) int {
	switch v {
	case "unlinked", "locked", "withdrawn", "blocked":
		return 1
	case "":
		return 2 // a blank field
	}
	return 0
}

// put applies the rule: later wins; on an equal time the safer value, then
// the larger string.
func (r *oreg) put(v string, at time.Time) {
	if !r.set || at.After(r.at) || (at.Equal(r.at) && (orank(v) > orank(r.v) || (orank(v) == orank(r.v) && v > r.v))) {
		*r = oreg{v: v, at: at, set: true}
	}
}

type oracleUser struct {
	link, lock, channel oreg
	consents            map[string]*oreg
	fields              map[string]*oreg // email, nickname, phone
	tomb                *time.Time
	pending             *time.Time
	sessions            map[int]string // live, revoked, deleted
	notices             map[string]string
	noticeAt            map[string]time.Time
	emailBlanked        bool
	// emailOffers is every value (blank: a withdrawal or purge) an event
	// gave the email field, for the notices to previous addresses.
	emailOffers []oreg
	// notifyKeys are the notify_service step keys of the user's events.
	notifyKeys []string
	trace      string
}

type oracleEvent struct {
	key, name string
	at        time.Time
	payload   map[string]any
}

func oracle(u *modelUser, envs []event.Envelope) *oracleUser {
	o := &oracleUser{consents: map[string]*oreg{}, notices: map[string]string{}, noticeAt: map[string]time.Time{}, sessions: map[int]string{},
		fields: map[string]*oreg{"email": {}, "nickname": {}, "phone": {}}}
	for i := range u.sessions {
		o.sessions[i] = "live"
	}
	var evs []oracleEvent
	for _, env := range envs {
		for _, ev := range env.Events {
			at := ev.Time
			if at.IsZero() {
				at = env.ReceivedAt
			}
			var p map[string]any
			_ = json.Unmarshal(ev.Payload, &p)
			evs = append(evs, oracleEvent{key: env.Key, name: ev.Name, at: at.UTC().Truncate(time.Microsecond), payload: p})
			o.notifyKeys = append(o.notifyKeys, workflows.StepKey(env.Key, ev.Name, policy.NotifyService))
		}
	}
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].at.Before(evs[j].at) })
	var trace []string
	revoke := func(at time.Time, state string) {
		for i, created := range u.sessions {
			if !created.After(event.SessionsUpTo(at)) && (o.sessions[i] == "live" || state == "deleted") {
				o.sessions[i] = state
			}
		}
	}
	for _, e := range evs {
		trace = append(trace, fmt.Sprintf("%s@%s", e.name, e.at.Format("15:04:05.000")))
		switch e.name {
		case "user-linked":
			o.link.put("linked", e.at)
			if o.pending != nil && e.at.After(*o.pending) {
				o.pending = nil
			}
		case "user-unlinked":
			o.link.put("unlinked", e.at)
			revoke(e.at, "revoked")
			if o.link.v == "unlinked" && o.link.at.Equal(e.at) && (o.tomb == nil || e.at.After(*o.tomb)) &&
				(o.pending == nil || e.at.After(*o.pending)) {
				at := e.at
				o.pending = &at
			}
		case "account-purged":
			o.link.put("unlinked", e.at)
			revoke(e.at, "revoked")
			revoke(e.at, "deleted")
			if o.tomb == nil || e.at.After(*o.tomb) {
				at := e.at
				o.tomb = &at
			}
			for _, f := range o.fields {
				f.put("", e.at)
			}
			o.emailBlanked = true
			o.emailOffers = append(o.emailOffers, oreg{at: e.at, set: true})
			if o.pending != nil && !o.pending.After(e.at) {
				o.pending = nil
			}
		case "user-profile-changed":
			for k, f := range map[string]string{"email": "email", "nickname": "nickname", "phone_number": "phone"} {
				if v, ok := e.payload[k].(string); ok && v != "" {
					o.fields[f].put(v, e.at)
					if f == "email" {
						o.emailOffers = append(o.emailOffers, oreg{v: v, at: e.at, set: true})
					}
				}
			}
		case "user-scope-consent", "user-scope-withdraw":
			v := "granted"
			if e.name == "user-scope-withdraw" {
				v = "withdrawn"
			}
			scopes, _ := e.payload["scopes"].([]any)
			for _, sc := range scopes {
				scope, _ := sc.(string)
				if o.consents[scope] == nil {
					o.consents[scope] = &oreg{}
				}
				o.consents[scope].put(v, e.at)
				if v == "withdrawn" {
					f := map[string]string{"account_email": "email", "profile_nickname": "nickname", "phone_number": "phone"}[scope]
					o.fields[f].put("", e.at)
					if f == "email" {
						o.emailBlanked = true
						o.emailOffers = append(o.emailOffers, oreg{at: e.at, set: true})
					}
				}
			}
		case "account-disabled":
			o.lock.put("locked", e.at)
			revoke(e.at, "revoked")
			if e.payload["reason"] == "hijacking" {
				o.notices[e.key] = policy.NoticeAccountHijacked
				o.noticeAt[e.key] = e.at
			}
		case "account-enabled":
			o.lock.put("unlocked", e.at)
		case "credential-change":
			revoke(e.at, "revoked")
			o.notices[e.key] = policy.NoticePasswordChanged
			o.noticeAt[e.key] = e.at
		case "channel-added":
			o.channel.put("added", e.at)
		case "channel-blocked":
			o.channel.put("blocked", e.at)
		}
	}
	o.trace = strings.Join(trace, " ")
	return o
}

// contact is the CRM contact the oracle's state asks for, as the HubSpot
// stand-in stores it; nil when there is none.
func (o *oracleUser) contact() map[string]string {
	if o.tomb != nil && !(o.link.v == "linked" && o.link.at.After(*o.tomb)) {
		return nil
	}
	c := map[string]string{"email": o.fields["email"].v, "firstname": o.fields["nickname"].v, "phone": o.fields["phone"].v,
		"kakao_locked": strconv.FormatBool(o.lock.v == "locked")}
	if o.link.set {
		c["kakao_linked"] = strconv.FormatBool(o.link.v == "linked")
	}
	if o.channel.set {
		c[crm.DefaultMarketingProperty] = strconv.FormatBool(o.channel.v == "added")
	}
	return c
}

func compareUser(t *testing.T, s *stack, hs *hubSpot, u *modelUser, o *oracleUser, mails map[string][]string) []string {
	t.Helper()
	var diffs []string
	differ := func(what string, got, want any) {
		if fmt.Sprint(got) != fmt.Sprint(want) {
			diffs = append(diffs, fmt.Sprintf("%s: got %v, want %v", what, got, want))
		}
	}
	// Sessions.
	for i := range u.sessions {
		var revoked []bool
		if err := s.DB.Select(&revoked, `SELECT revoked_at IS NOT NULL FROM sessions WHERE id = $1`, fmt.Sprintf("%s-s%d", u.id, i)); err != nil {
			t.Fatal(err)
		}
		got := "deleted"
		if len(revoked) == 1 {
			got = "live"
			if revoked[0] {
				got = "revoked"
			}
		}
		differ(fmt.Sprintf("session %d", i), got, o.sessions[i])
	}
	// Profile.
	p, err := s.profileOf(u.id)
	if err != nil {
		diffs = append(diffs, "profile: "+err.Error())
	} else {
		linked := "unknown"
		if p.Linked.Valid {
			linked = strconv.FormatBool(p.Linked.Bool)
		}
		wantLinked := "unknown"
		if o.link.set {
			wantLinked = strconv.FormatBool(o.link.v == "linked")
		}
		differ("linked", linked, wantLinked)
		differ("locked", p.Locked, o.lock.v == "locked")
		differ("email", p.Email.String, o.fields["email"].v)
		differ("nickname", p.Nickname.String, o.fields["nickname"].v)
		differ("phone", p.PhoneNumber.String, o.fields["phone"].v)
		var granted []string
		for scope, r := range o.consents {
			if r.v == "granted" {
				granted = append(granted, scope)
			}
		}
		slices.Sort(granted)
		got := append([]string(nil), p.Consents...)
		slices.Sort(got)
		differ("consents", got, granted)
	}
	// CRM.
	ct, ok := hs.contact(u.id)
	want := o.contact()
	switch {
	case want == nil && ok:
		diffs = append(diffs, fmt.Sprintf("crm: contact %v exists, want none", ct))
	case want != nil && !ok:
		diffs = append(diffs, "crm: no contact, want one")
	case want != nil:
		for k, v := range want {
			differ("crm "+k, ct[k], v)
		}
	}
	// Notices: at least once, with the Message-ID of the event and step; a
	// user whose address was never blanked gets every one.
	for key, kind := range o.notices {
		name := map[string]string{policy.NoticeAccountHijacked: "account-disabled", policy.NoticePasswordChanged: "credential-change"}[kind]
		id := strings.Trim(mailer.MessageID(workflows.StepKey(key, name, policy.SendNotice), mailDomain), "<>")
		if len(mails[id]) == 0 && !o.emailBlanked {
			diffs = append(diffs, fmt.Sprintf("notice %s for %s not sent", kind, key))
		}
		// Every address the account had before the event (all within
		// the 30-day window here) was told, by the notice's own message
		// or by its copy keyed by when the address was set.
		stepKey := workflows.StepKey(key, name, policy.SendNotice)
		ids := []string{id}
		for _, e := range o.emailOffers {
			ids = append(ids, strings.Trim(mailer.MessageID(fmt.Sprintf("%s/previous@%d", stepKey, e.at.UnixNano()), mailDomain), "<>"))
		}
		for _, addr := range o.addressesUntil(o.noticeAt[key]) {
			if !slices.ContainsFunc(ids, func(id string) bool { return slices.Contains(mails[id], addr) }) {
				diffs = append(diffs, fmt.Sprintf("notice %s for %s never reached the earlier address %s", kind, key, addr))
			}
		}
	}
	return diffs
}

// serviceDocs is the service's notify_service endpoint (servicehook.Handler):
// it keeps each user's highest-version document and every step key it got.
type serviceDocs struct {
	webhook *crm.Webhook
	mu      sync.Mutex
	latest  map[string]statusapi.Subject // Kakao user id → state of the highest version
	keys    map[string]bool
}

func newServiceDocs(t *testing.T) *serviceDocs {
	secret := []byte("model-service-secret")
	d := &serviceDocs{latest: map[string]statusapi.Subject{}, keys: map[string]bool{}}
	srv := httptest.NewServer(servicehook.Handler(secret, func(_ *http.Request, doc servicehook.Document) error {
		d.mu.Lock()
		defer d.mu.Unlock()
		d.keys[doc.IdempotencyKey] = true
		if st := doc.State; st != nil && st.Version >= d.latest[st.KakaoUserID].Version {
			d.latest[st.KakaoUserID] = *st
		}
		return nil
	}))
	t.Cleanup(srv.Close)
	d.webhook = &crm.Webhook{URL: srv.URL, Secret: secret}
	return d
}

// withNotifyService is the default policy with notify_service added to every
// event type's steps.
func withNotifyService(t *testing.T) *policy.Policy {
	t.Helper()
	def := policy.Default()
	events := map[string]any{}
	for _, typ := range def.Types() {
		var steps []any
		for _, st := range def.For(typ, typ).Steps {
			if len(st.Params) == 0 && len(st.When) == 0 {
				steps = append(steps, st.Name)
				continue
			}
			params := map[string]any{}
			for k, v := range st.Params {
				params[k] = v
			}
			if len(st.When) > 0 {
				params["when"] = st.When
			}
			steps = append(steps, map[string]any{st.Name: params})
		}
		events[typ] = map[string]any{"steps": append(steps, policy.NotifyService)}
	}
	doc, err := json.Marshal(map[string]any{"version": 1, "events": events})
	if err != nil {
		t.Fatal(err)
	}
	pol, err := policy.Parse(doc)
	if err != nil {
		t.Fatal(err)
	}
	return pol
}

// compareService checks what the service's own endpoint got: a document for
// every event (at least once), and, as the last (highest-version) one, the
// user's final state — the state's stored version, and the link, lock,
// consents, purge and session horizon the oracle says.
func compareService(t *testing.T, s *stack, docs *serviceDocs, u *modelUser, o *oracleUser) []string {
	t.Helper()
	docs.mu.Lock()
	defer docs.mu.Unlock()
	var diffs []string
	for _, k := range o.notifyKeys {
		if !docs.keys[k] {
			diffs = append(diffs, "service: no document for "+k)
		}
	}
	doc, ok := docs.latest[u.id]
	if !ok {
		return append(diffs, "service: no document with a state")
	}
	var version int64
	if err := s.DB.Get(&version, `SELECT version FROM setflow_user_state WHERE subject_hash = $1`, subjects.Hash(testIssuer, u.id)); err != nil {
		t.Fatal(err)
	}
	want := o.view()
	want.Version, want.Issuer, want.KakaoUserID = version, doc.Issuer, doc.KakaoUserID
	if want.Purge.State == doc.Purge.State {
		// When the purge is due and when the tombstone was written follow
		// from the configuration and the clock, not from the events.
		want.Purge.Due, want.Purge.At = doc.Purge.Due, doc.Purge.At
	}
	got, _ := json.Marshal(doc)
	wantJSON, _ := json.Marshal(want)
	if string(got) != string(wantJSON) {
		diffs = append(diffs, fmt.Sprintf("service: last document's state\n    got  %s\n    want %s", got, wantJSON))
	}
	return diffs
}

// view is the status API's answer for the oracle's state (statusapi.View):
// what the last notify_service document must say.
func (o *oracleUser) view() statusapi.Subject {
	v := statusapi.Subject{Known: true, Locked: o.lock.v == "locked", Purge: statusapi.Purge{State: statusapi.PurgeNone}}
	at := func(t time.Time) *time.Time { t = t.UTC(); return &t }
	var valid time.Time
	if o.link.set {
		linked := o.link.v == "linked"
		v.Linked = &linked
		if !linked {
			valid = o.link.at
		}
	}
	if v.Locked {
		v.LockedSince = at(o.lock.at)
		if o.lock.at.After(valid) {
			valid = o.lock.at
		}
	}
	if !valid.IsZero() {
		v.SessionsValidAfter = at(event.SessionsUpTo(valid))
	}
	for scope, r := range o.consents {
		if v.Consents == nil {
			v.Consents = map[string]string{}
		}
		v.Consents[scope] = r.v
	}
	switch {
	case o.pending != nil:
		v.Purge = statusapi.Purge{State: statusapi.PurgePending, Cutoff: at(*o.pending)}
	case o.tomb != nil && !(o.link.v == "linked" && o.link.at.After(*o.tomb)):
		v.Purge = statusapi.Purge{State: statusapi.PurgePurged, Cutoff: at(*o.tomb)}
	}
	return v
}

// addressesUntil is every address the account had at or before t that the
// latest blank (a withdrawal or purge, at any time) left: a blank deletes
// the addresses at or before it. Of two set at the same time only the
// larger was ever in effect.
func (o *oracleUser) addressesUntil(t time.Time) []string {
	var blank *time.Time
	for _, e := range o.emailOffers {
		if e.v == "" && (blank == nil || e.at.After(*blank)) {
			at := e.at
			blank = &at
		}
	}
	winners := map[int64]string{}
	for _, e := range o.emailOffers {
		if e.v == "" || e.at.After(t) || (blank != nil && !e.at.After(*blank)) {
			continue
		}
		if w := winners[e.at.UnixNano()]; e.v > w {
			winners[e.at.UnixNano()] = e.v
		}
	}
	var out []string
	for _, v := range winners {
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	slices.Sort(out)
	return out
}

func newHTTPServer(t *testing.T, h http.Handler) string {
	t.Helper()
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	return ts.URL
}

// deliverNoFatal is deliver for senders on other goroutines: it reports
// failures with t.Error.
func (w *webhooks) deliverNoFatal(t *testing.T, d simulator.Delivery) int {
	if d.AdminKey == "" {
		d.AdminKey = webhookAdminKey
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := d.Request(ctx, w.URL)
	if err != nil {
		t.Error(err)
		return 0
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Error(err)
		return 0
	}
	defer resp.Body.Close()
	return resp.StatusCode
}
