package talk_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/setflow/setflow/internal/testenv"
	"github.com/setflow/setflow/talk"
)

func TestRecordDeliveryOncePerEventKey(t *testing.T) {
	db, _ := testenv.Database(t)
	s := talk.NewPostgres(db)
	tmpl := int64(12345)
	d := talk.Delivery{
		EventKey: "talk-share:r1", ResourceID: "r1", ChatType: "MemoChat", HashChatID: "h1", TemplateID: &tmpl,
		Args:       map[string]json.RawMessage{"campaign": json.RawMessage(`"spring"`), "n": json.RawMessage(`3`)},
		ReceivedAt: time.Date(2025, 4, 1, 10, 0, 0, 0, time.UTC),
	}
	for i, want := range []bool{true, false} {
		inserted, err := s.RecordDelivery(t.Context(), d)
		if err != nil || inserted != want {
			t.Fatalf("record %d: inserted=%v err=%v, want inserted=%v", i, inserted, err, want)
		}
	}
	var row struct {
		N          int    `db:"n"`
		ChatType   string `db:"chat_type"`
		TemplateID *int64 `db:"template_id"`
		Campaign   string `db:"campaign"`
		Num        int    `db:"num"`
	}
	if err := db.Get(&row, `SELECT count(*) OVER () AS n, chat_type, template_id, args->>'campaign' AS campaign, (args->>'n')::int AS num
		FROM setflow_talk_share_deliveries`); err != nil {
		t.Fatal(err)
	}
	if row.N != 1 || row.ChatType != "MemoChat" || row.TemplateID == nil || *row.TemplateID != 12345 || row.Campaign != "spring" || row.Num != 3 {
		t.Fatalf("stored %+v", row)
	}
	// Without a template id and without args.
	if _, err := s.RecordDelivery(t.Context(), talk.Delivery{EventKey: "talk-share:r2", ResourceID: "r2",
		ChatType: "OpenMultiChat", HashChatID: "h2", ReceivedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	var nullTmpl bool
	if err := db.Get(&nullTmpl, `SELECT template_id IS NULL AND args = '{}'::jsonb FROM setflow_talk_share_deliveries WHERE resource_id = 'r2'`); err != nil || !nullTmpl {
		t.Fatalf("second delivery: null template and empty args = %v (%v)", nullTmpl, err)
	}
}

func rel(key, status string, at time.Time) talk.Relationship {
	return talk.Relationship{
		Issuer: "https://kauth.kakao.com", UserID: "701541", IDType: "app_user_id",
		ChannelPublicID: "_ZeUTxl", ChannelUUID: "@setflow", Status: status,
		MarketingConsent: talk.ConsentFor(status), UpdatedAt: at, EventKey: key,
	}
}

func consent(b *bool) string {
	if b == nil {
		return "unknown"
	}
	if *b {
		return "on"
	}
	return "off"
}

// An older event never overwrites a newer one, whatever order they arrive in;
// a retry of the applied event still reports it applied.
func TestRelationshipNewestWins(t *testing.T) {
	db, _ := testenv.Database(t)
	s := talk.NewPostgres(db)
	ctx := t.Context()
	t0 := time.Date(2025, 4, 1, 10, 0, 0, 0, time.UTC)

	steps := []struct {
		r           talk.Relationship
		wantApplied bool
		wantStatus  string
		wantConsent string
	}{
		{rel("k-blocked", "blocked", t0.Add(2*time.Minute)), true, "blocked", "off"},
		{rel("k-added-older", "added", t0), false, "blocked", "off"},                  // arrives late, happened earlier
		{rel("k-blocked", "blocked", t0.Add(2*time.Minute)), true, "blocked", "off"},  // retry
		{rel("k-same-time", "added", t0.Add(2*time.Minute)), false, "blocked", "off"}, // tie: first wins
		{rel("k-added-newer", "added", t0.Add(5*time.Minute)), true, "added", "on"},
		// A status of unknown meaning is recorded but leaves the consent as it was.
		{rel("k-unknown", "muted", t0.Add(6*time.Minute)), true, "muted", "on"},
	}
	for i, st := range steps {
		cur, applied, err := s.RecordRelationship(ctx, st.r)
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if applied != st.wantApplied || cur.Status != st.wantStatus || consent(cur.MarketingConsent) != st.wantConsent {
			t.Fatalf("step %d (%s): applied=%v status=%s consent=%s, want %v %s %s", i, st.r.EventKey,
				applied, cur.Status, consent(cur.MarketingConsent), st.wantApplied, st.wantStatus, st.wantConsent)
		}
	}
	var rows int
	if err := db.Get(&rows, `SELECT count(*) FROM setflow_talk_channel_relationships`); err != nil || rows != 1 {
		t.Fatalf("%d rows (%v), want 1 per user and channel", rows, err)
	}
}

// Different channels, id types and users are separate relationships; a
// channel known only by uuid gets its own key; a first unknown status has no
// consent yet.
func TestRelationshipIdentity(t *testing.T) {
	db, _ := testenv.Database(t)
	s := talk.NewPostgres(db)
	ctx := t.Context()
	now := time.Now().UTC()
	a := rel("a", "added", now)
	b := rel("b", "blocked", now)
	b.ChannelPublicID = "_Other"
	c := rel("c", "blocked", now)
	c.IDType = "open_id"
	d := rel("d", "whatever", now)
	d.ChannelPublicID, d.ChannelUUID = "", "@uuid-only"
	for _, r := range []talk.Relationship{a, b, c, d} {
		if _, applied, err := s.RecordRelationship(ctx, r); err != nil || !applied {
			t.Fatalf("%s: applied=%v err=%v", r.EventKey, applied, err)
		}
	}
	got, err := s.Relationship(ctx, a.Issuer, "app_user_id", a.UserID, "_ZeUTxl")
	if err != nil || got.Status != "added" || consent(got.MarketingConsent) != "on" {
		t.Fatalf("channel a: %+v %v", got, err)
	}
	got, err = s.Relationship(ctx, d.Issuer, "app_user_id", d.UserID, "uuid:@uuid-only")
	if err != nil || got.Status != "whatever" || got.MarketingConsent != nil || got.ChannelPublicID != "" {
		t.Fatalf("uuid-only channel: %+v %v", got, err)
	}
	if _, err := s.Relationship(ctx, a.Issuer, "app_user_id", "nobody", "_ZeUTxl"); err != talk.ErrNotFound {
		t.Fatalf("unknown user: %v, want ErrNotFound", err)
	}
	if _, _, err := s.RecordRelationship(ctx, talk.Relationship{EventKey: "x", UserID: "1"}); err == nil {
		t.Fatal("a relationship without a channel was accepted")
	}
}
