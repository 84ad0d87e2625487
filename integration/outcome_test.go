package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"strings"
	"sync"
	"testing"

	"go.temporal.io/sdk/client"

	"github.com/setflow/setflow/crm"
	"github.com/setflow/setflow/inbox"
	"github.com/setflow/setflow/internal/testenv"
	"github.com/setflow/setflow/mailer"
	"github.com/setflow/setflow/policy"
	"github.com/setflow/setflow/userstate"
	"github.com/setflow/setflow/userstate/statedb"
	"github.com/setflow/setflow/workflows"
)

// The outcome of a run of chaosEvents under faults (TestChaosKillAndRestart,
// TestOutagesUnderLoad): one oracle, so that the crash test and the outage
// test hold the product to the same guarantees.

// crmLedger is what a CRM stand-in was asked and what it applied, the way
// crm.Webhook's documented receiver works: each idempotency key's document is
// applied once however often it arrives.
type crmLedger struct {
	mu       sync.Mutex
	requests map[string]int      // by idempotency key
	applied  map[string]bool     // keys whose document was applied
	writes   map[string][]string // contact → applied keys, in order
	contacts map[string]*chaosContact
}

func (l *crmLedger) init() {
	l.requests, l.applied = map[string]int{}, map[string]bool{}
	l.writes, l.contacts = map[string][]string{}, map[string]*chaosContact{}
}

// applyOnce applies a document unless its key was applied (l.mu held).
func (l *crmLedger) applyOnce(doc crm.Document) {
	key := doc.IdempotencyKey
	if l.applied[key] {
		return
	}
	l.applied[key] = true
	l.writes[doc.Contact.ExternalID] = append(l.writes[doc.Contact.ExternalID], key)
	applyCRMDocument(l.contacts, doc)
}

// readCRMDocument reads a signed CRM document as crm.Webhook's documented
// receiver does; a request that is not one is answered here (4xx) and ok is
// false.
func readCRMDocument(w http.ResponseWriter, r *http.Request, secret []byte) (doc crm.Document, ok bool) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "read", http.StatusBadRequest)
		return doc, false
	}
	if err := crm.Verify(secret, r.Header.Get(crm.HeaderSignature), r.Header.Get(crm.HeaderTimestamp), body, 0); err != nil {
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return doc, false
	}
	if err := json.Unmarshal(body, &doc); err != nil || doc.IdempotencyKey == "" || doc.IdempotencyKey != r.Header.Get(crm.HeaderIdempotencyKey) {
		http.Error(w, "bad document", http.StatusBadRequest)
		return doc, false
	}
	return doc, true
}

// crmRecord is a copy of a ledger, taken once the run is over.
type crmRecord struct {
	requests map[string]int
	writes   map[string][]string
	contacts map[string]chaosContact
	applied  int
}

func (l *crmLedger) record() crmRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := crmRecord{requests: maps.Clone(l.requests), writes: map[string][]string{}, contacts: map[string]chaosContact{},
		applied: len(l.applied)}
	for contact, ks := range l.writes {
		r.writes[contact] = append([]string(nil), ks...)
	}
	for id, ct := range l.contacts {
		r.contacts[id] = *ct
	}
	return r
}

// chaosContact is a contact as a stand-in holds it.
type chaosContact struct {
	Email, Nickname, Phone string
	Properties             map[string]string
	Marketing              *bool
}

// applyCRMDocument changes the contacts as a signed CRM document says, the
// way the generic webhook adapter's receiver would.
func applyCRMDocument(contacts map[string]*chaosContact, doc crm.Document) {
	id := doc.Contact.ExternalID
	ct := contacts[id]
	if ct == nil && doc.Type != crm.TypeDelete {
		ct = &chaosContact{Properties: map[string]string{}}
		contacts[id] = ct
	}
	switch doc.Type {
	case crm.TypeUpsert:
		// Empty fields are left alone, as an upsert does.
		for dst, v := range map[*string]string{&ct.Email: doc.Contact.Email, &ct.Nickname: doc.Contact.Nickname, &ct.Phone: doc.Contact.Phone} {
			if v != "" {
				*dst = v
			}
		}
		for k, v := range doc.Contact.Properties {
			ct.Properties[k] = v
		}
	case crm.TypeFieldsDeleted:
		for _, f := range doc.Contact.DeletedFields {
			switch f {
			case crm.FieldEmail:
				ct.Email = ""
			case crm.FieldNickname:
				ct.Nickname = ""
			case crm.FieldPhone:
				ct.Phone = ""
			}
		}
	case crm.TypeMarketing:
		ct.Marketing = doc.Contact.MarketingSubscribed
	case crm.TypeDelete:
		delete(contacts, id)
	}
}

// reactionOutcome is what checkReactionOutcome counted, for the caller's
// check that its faults happened and for its log.
type reactionOutcome struct {
	events, inboxRows, streams, auditRows int
	revocations                           int // sessions revoked (each once)
	revokedOnRetry                        int // revocations audited as found done: an earlier attempt did them
	crmApplied                            int // CRM writes applied (one per key)
	crmSynced                             int // users whose contact changed
	crmReplays                            int // CRM requests beyond the first of their key
	emails                                int
	notices                               int
	noticeRepeats                         int // notices that went out more than once (same Message-ID)
}

// outcomeOptions are a caller's additions to the oracle's error messages.
type outcomeOptions struct {
	// prepared names the events that were made but maybe never accepted, so
	// that a stray inbox row says whether it is one of them.
	prepared map[string]bool
	// noticeHistory describes what happened to an event's notice, when a
	// repeat was not audited as one.
	noticeHistory func(msgs []testenv.MailpitMessage, e chaosEvent) string
}

// checkReactionOutcome asserts that nothing accepted was lost and nothing
// happened twice: every accepted event (one user each) has exactly one inbox
// row, dispatched, and nothing else is stored; each user's stream ran once and
// no reaction workflow ran; the audit holds each expected step of each event
// once, nothing failed, and one CRM sync row per changed user, in an intact
// chain; each event's earlier session is revoked once and the later one kept;
// each changed user's contact got exactly one applied write, under the key of
// its state version, and holds what the state asks for; every notice went out
// at least once, every copy with the notice's Message-ID, and a second copy
// is audited as a repeat.
func checkReactionOutcome(t *testing.T, s *stack, c client.Client, accepted []chaosEvent, ledger *crmLedger,
	mail *testenv.MailpitServer, o outcomeOptions) reactionOutcome {
	t.Helper()
	keys := map[string]chaosEvent{}
	for _, e := range accepted {
		keys[e.key] = e
	}
	if len(keys) != len(accepted) {
		t.Fatalf("%d distinct keys for %d accepted events", len(keys), len(accepted))
	}
	out := reactionOutcome{events: len(keys)}
	out.inboxRows = checkInboxOutcome(t, s, keys, o.prepared)
	byHash := checkOneStreamPerEvent(t, t.Context(), c, keys)
	out.streams = len(byHash)
	audit := checkAuditOutcome(t, s, keys, byHash)
	out.auditRows, out.revokedOnRetry, out.notices = audit.rows, audit.revokedOnRetry, audit.notices
	out.revocations = checkSessionsOutcome(t, s, keys)
	out.crmApplied, out.crmSynced, out.crmReplays = checkCRMOutcome(t, s, keys, ledger.record(), audit.syncs)
	out.emails, out.noticeRepeats = checkNoticesOutcome(t, keys, mail.Messages(t), audit.repeatAudited, o.noticeHistory)
	return out
}

// checkInboxOutcome: one row per accepted event, dispatched; nothing else
// stored. It returns how many rows there are.
func checkInboxOutcome(t *testing.T, s *stack, keys map[string]chaosEvent, prepared map[string]bool) int {
	t.Helper()
	var rows []struct {
		Key    string `db:"dedupe_key"`
		Status string `db:"status"`
	}
	if err := s.DB.Select(&rows, `SELECT dedupe_key, status FROM setflow_inbox`); err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, r := range rows {
		seen[r.Key]++
		if _, ok := keys[r.Key]; !ok {
			t.Errorf("inbox row %s (%s) is no accepted event (prepared: %v)", r.Key, r.Status, prepared[r.Key])
		}
		if r.Status != string(inbox.StatusDispatched) {
			t.Errorf("inbox row %s is %s", r.Key, r.Status)
		}
	}
	for k := range keys {
		if seen[k] != 1 {
			t.Errorf("event %s: %d inbox rows, want 1", k, seen[k])
		}
	}
	return len(rows)
}

// auditOutcome is what the audit trail says beyond its own checks.
type auditOutcome struct {
	rows           int
	syncs          map[string]map[string]string // subject hash → sync step → outcome
	repeatAudited  map[string]bool              // event key → its notice was audited as a repeat
	revokedOnRetry int
	notices        int
}

// checkAuditOutcome: one row per (event, step) — the unique key — and exactly
// the expected steps of each event, from one "received" to "completed";
// nothing failed (a parked step); the CRM syncs of the users whose contact
// changed are audited under their own key, and no other user's; the chain is
// intact.
func checkAuditOutcome(t *testing.T, s *stack, keys, byHash map[string]chaosEvent) auditOutcome {
	t.Helper()
	var audits []struct {
		Key     string `db:"event_key"`
		Step    string `db:"step"`
		Outcome string `db:"outcome"`
		Revoked *int   `db:"revoked"`
		Repeat  bool   `db:"repeat"`
	}
	if err := s.DB.Select(&audits, `SELECT event_key, step, outcome, (detail->>'revoked')::int AS revoked,
		COALESCE((detail->>'repeat')::boolean, false) AS repeat FROM setflow_audit ORDER BY id`); err != nil {
		t.Fatal(err)
	}
	out := auditOutcome{rows: len(audits), syncs: map[string]map[string]string{}, repeatAudited: map[string]bool{}}
	steps := map[string]map[string]string{}
	for _, a := range audits {
		if a.Outcome == "failed" {
			t.Errorf("audit: %s %s failed (a step parked)", a.Key, a.Step)
		}
		if a.Repeat && strings.HasSuffix(a.Step, "/send_notice") {
			out.repeatAudited[a.Key] = true
		}
		if strings.HasSuffix(a.Step, "/revoke_sessions") && a.Revoked != nil && *a.Revoked == 0 {
			out.revokedOnRetry++
		}
		into, what := steps, a.Key
		if h, ok := strings.CutPrefix(a.Key, workflows.CRMSyncKeyPrefix); ok {
			if !chaosSyncs[byHash[h].kind] {
				t.Errorf("sync audited for %s, whose event changed no contact", a.Key)
				continue
			}
			into, what = out.syncs, h
		} else if _, ok := keys[a.Key]; !ok {
			t.Errorf("audit row %s %s belongs to no accepted event", a.Key, a.Step)
			continue
		}
		if into[what] == nil {
			into[what] = map[string]string{}
		}
		if _, dup := into[what][a.Step]; dup {
			t.Errorf("%s: step %s audited twice", a.Key, a.Step)
		}
		into[what][a.Step] = a.Outcome
	}
	want := map[string][]string{
		"account-disabled":  {"received=received", "revoke_sessions=done", "lock_account=done", "send_notice=done|duplicate", "completed=done"},
		"credential-change": {"received=received", "revoke_sessions=done", "send_notice=done|duplicate", "completed=done"},
		"user-unlinked": {"received=received", "revoke_sessions=done", "mark_unlinked=done", "schedule_purge=done", "crm_upsert=done",
			"completed=done"},
	}
	for k, e := range keys {
		got := steps[k]
		if len(got) != len(want[e.kind]) {
			t.Errorf("event %s (%s): audited steps %v, want %v", k, e.kind, got, want[e.kind])
			continue
		}
		for _, w := range want[e.kind] {
			step, outcomes, _ := strings.Cut(w, "=")
			o := got[e.kind+"/"+step]
			if !strings.Contains("|"+outcomes+"|", "|"+o+"|") {
				t.Errorf("event %s (%s): step %s audited %q, want %s", k, e.kind, step, o, outcomes)
			}
			if step == "send_notice" {
				out.notices++
			}
		}
	}
	if res, err := s.Audit.Verify(t.Context()); err != nil {
		t.Errorf("audit chain after the run: %v", err)
	} else if res.Rows != int64(len(audits)) {
		t.Errorf("audit chain covers %d rows of %d", res.Rows, len(audits))
	}
	return out
}

// checkSessionsOutcome: each event's earlier session revoked exactly once,
// the later one kept (installRevocationLog counts them). It returns how many
// revocations were logged.
func checkSessionsOutcome(t *testing.T, s *stack, keys map[string]chaosEvent) int {
	t.Helper()
	var revs []string
	if err := s.DB.Select(&revs, `SELECT session_id FROM chaos_revocations`); err != nil {
		t.Fatal(err)
	}
	revoked := map[string]int{}
	for _, r := range revs {
		revoked[r]++
	}
	for _, e := range keys {
		if n := revoked[e.user+"-old"]; n != 1 {
			t.Errorf("event %s: session before the event revoked %d times, want once", e.key, n)
		}
		if n := revoked[e.user+"-later"]; n != 0 {
			t.Errorf("event %s: session after the event revoked %d times, want kept", e.key, n)
		}
	}
	if len(revs) != len(keys) {
		t.Errorf("%d revocations logged for %d accepted events", len(revs), len(keys))
	}
	return len(revs)
}

// checkCRMOutcome: the contacts of the users whose event changed what the CRM
// should hold (chaosSyncs) are synced, the others never written. Each sync of
// a state version makes its calls under keys of that version — a retried sync
// reuses them — and the stand-in applies a key once: each event here is its
// user's one change, so one sync, one upsert key, one "done" sync audit row.
// The contact the CRM ends with is the one the user's state asks for.
func checkCRMOutcome(t *testing.T, s *stack, keys map[string]chaosEvent, rec crmRecord,
	syncs map[string]map[string]string) (applied, synced, replays int) {
	t.Helper()
	for _, n := range rec.requests {
		replays += n - 1
	}
	states := statedb.NewStore(s.DB)
	for _, e := range keys {
		ws := rec.writes[e.user]
		h := subjects.Hash(testIssuer, e.user)
		if !chaosSyncs[e.kind] {
			if len(ws) != 0 || len(syncs[h]) != 0 {
				t.Errorf("event %s (%s): CRM writes %v, syncs %v, want none", e.key, e.kind, ws, syncs[h])
			}
			continue
		}
		synced++
		snap, err := states.Get(t.Context(), h)
		if err != nil {
			t.Errorf("event %s: state: %v", e.key, err)
			continue
		}
		v := snap.State.Version
		if snap.CRMVersion != v {
			t.Errorf("event %s (%s): CRM synced to v%d, state is v%d", e.key, e.kind, snap.CRMVersion, v)
		}
		wantKey := fmt.Sprintf("%s%s/v%d/upsert", workflows.CRMSyncKeyPrefix, h, v)
		if len(ws) != 1 || ws[0] != wantKey {
			t.Errorf("event %s (%s): CRM writes applied %v, want exactly [%s]", e.key, e.kind, ws, wantKey)
		}
		for k, n := range rec.requests {
			if strings.HasPrefix(k, workflows.CRMSyncKeyPrefix+h+"/") && k != wantKey {
				t.Errorf("event %s (%s): CRM call under key %s (%d times), want only %s", e.key, e.kind, k, n, wantKey)
			}
		}
		if got, want := syncs[h], map[string]string{fmt.Sprintf("crm-sync/v%d", v): "done"}; !maps.Equal(got, want) {
			t.Errorf("event %s (%s): sync audit %v, want %v", e.key, e.kind, got, want)
		}
		wc := snap.State.Contact()
		wantLinked := "" // not sent while the link is unknown
		if wc.Linked != "" {
			wantLinked = fmt.Sprint(wc.Linked == userstate.Linked)
		}
		ct, ok := rec.contacts[e.user]
		if ok != wc.Present || ct.Email != wc.Email || ct.Nickname != wc.Nickname || ct.Phone != wc.Phone ||
			ct.Properties["kakao_locked"] != fmt.Sprint(wc.Locked) || ct.Properties["kakao_linked"] != wantLinked ||
			(ct.Marketing != nil) != (wc.Marketing != "") {
			t.Errorf("event %s (%s): CRM contact %+v (exists %v), the state asks for %+v", e.key, e.kind, ct, ok, wc)
		}
	}
	if rec.applied != synced {
		t.Errorf("CRM applied %d writes for %d users whose contact changed", rec.applied, synced)
	}
	return rec.applied, synced, replays
}

// checkNoticesOutcome: at least one email per notice, every copy with the
// Message-ID of the event and step; a second copy only where an attempt's
// outcome was unknown, audited as a repeat. It returns how many emails there
// are and how many notices went out more than once.
func checkNoticesOutcome(t *testing.T, keys map[string]chaosEvent, msgs []testenv.MailpitMessage, repeatAudited map[string]bool,
	history func([]testenv.MailpitMessage, chaosEvent) string) (emails, repeats int) {
	t.Helper()
	perRecipient := map[string]int{}
	perMessageID := map[string]int{}
	for _, m := range msgs {
		for _, to := range m.To {
			perRecipient[to.Address]++
		}
		perMessageID[m.MessageID]++
	}
	for k, e := range keys {
		if e.kind == "user-unlinked" {
			continue
		}
		n := perRecipient[chaosEmail(e.user)]
		id := strings.Trim(mailer.MessageID(workflows.StepKey(k, e.kind, policy.SendNotice), "example.test"), "<>")
		if n == 0 || perMessageID[id] != n {
			t.Errorf("event %s: %d emails to the user, %d with the notice's Message-ID %s: want at least one, all with it", k, n, perMessageID[id], id)
		}
		if n > 1 {
			repeats++
			if !repeatAudited[k] {
				more := ""
				if history != nil {
					more = history(msgs, e)
				}
				t.Errorf("event %s: %d copies but the audit does not say repeat%s", k, n, more)
			}
		}
	}
	return len(msgs), repeats
}
