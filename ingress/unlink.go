package ingress

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/setflow/setflow/event"
	"github.com/setflow/setflow/inbox"
	"github.com/setflow/setflow/secevent"
)

// Unlink webhook event identity. Its Name is the one of the OAUTH user-unlinked
// SET, so that both get the same reaction plan.
const (
	UnlinkEventType = "kakao:unlink-webhook"
	UnlinkEventName = "user-unlinked"
	// KakaoWebhookCategory is the Category of the admin-key webhooks' events.
	KakaoWebhookCategory = "kakao-webhook"
	// KakaoUserIDFormat is the subject Format of a Kakao user number.
	KakaoUserIDFormat = "kakao_user_id"
)

// Unlink is one unlink webhook delivery.
type Unlink struct {
	AppID          string
	UserID         string
	ReferrerType   string
	GroupUserToken string
}

// UnlinkPayload is the unlink event's payload (the user id is its subject).
type UnlinkPayload struct {
	AppID          string `json:"app_id"`
	ReferrerType   string `json:"referrer_type"`
	GroupUserToken string `json:"group_user_token,omitempty"`
}

// UnlinkKey derives the unlink webhook's dedupe key: Kakao sends no event id,
// so repeats of the same (app, user, referrer type) within one window of
// fixed, epoch-aligned buckets count as one delivery. Two deliveries that
// straddle a bucket boundary get two keys; the reaction is idempotent anyway.
func UnlinkKey(u Unlink, receivedAt time.Time, window time.Duration) string {
	if window <= 0 {
		window = DefaultUnlinkWindow
	}
	bucket := receivedAt.UnixNano() / int64(window)
	h := sha256.New()
	for _, part := range []string{u.AppID, u.UserID, u.ReferrerType, strconv.FormatInt(bucket, 10), strconv.FormatInt(int64(window), 10)} {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	return "unlink:" + hex.EncodeToString(h.Sum(nil))
}

// UnlinkEnvelope builds the inbox envelope of an unlink webhook delivery.
func UnlinkEnvelope(u Unlink, issuer string, receivedAt time.Time, window time.Duration) event.Envelope {
	receivedAt = receivedAt.UTC()
	sub := event.Subject{Issuer: issuer, UserID: u.UserID, Format: KakaoUserIDFormat}
	payload, _ := json.Marshal(UnlinkPayload{AppID: u.AppID, ReferrerType: u.ReferrerType, GroupUserToken: u.GroupUserToken})
	return event.Envelope{
		Key:        UnlinkKey(u, receivedAt, window),
		Source:     event.SourceUnlink,
		Subject:    sub,
		IssuedAt:   receivedAt,
		ReceivedAt: receivedAt,
		Events: []event.Event{{
			Type:     UnlinkEventType,
			Name:     UnlinkEventName,
			Category: KakaoWebhookCategory,
			Subject:  sub,
			Time:     receivedAt,
			Payload:  payload,
		}},
	}
}

// unlink receives Kakao's unlink webhook: GET with a query string, or POST
// with a form or JSON body. Every authenticated, well-formed delivery is
// answered exactly 200 once stored — also for a user the service does not
// know, and for a repeat — because Kakao has already unlinked the user and
// only wants to know that the service heard it.
func (s *Server) unlink(w http.ResponseWriter, r *http.Request) {
	const route = "unlink"
	if !s.allowMethod(w, r, route, http.MethodGet, http.MethodPost) || !s.authorize(w, r, route) {
		return
	}
	p, raw, rerr := s.readParams(w, r, encQuery|encForm|encJSON)
	if rerr != nil {
		s.fail(w, r, route, rerr)
		return
	}
	var u Unlink
	var missing []string
	for _, f := range []struct {
		name     string
		dst      *string
		required bool
	}{
		{"app_id", &u.AppID, true},
		{"user_id", &u.UserID, true},
		{"referrer_type", &u.ReferrerType, false},
		{"group_user_token", &u.GroupUserToken, false},
	} {
		v, ok, rerr := p.str(f.name)
		if rerr != nil {
			s.fail(w, r, route, rerr)
			return
		}
		if !ok && f.required {
			missing = append(missing, f.name)
		}
		*f.dst = v
	}
	if len(missing) > 0 {
		s.fail(w, r, route, badRequest("missing %s", strings.Join(missing, " and ")))
		return
	}
	// app_id is not a secret; comparing it plainly leaks nothing.
	if s.Kakao.AppID == "" || u.AppID != s.Kakao.AppID {
		s.fail(w, r, route, &reqError{status: http.StatusUnauthorized, code: secevent.CodeAuthenticationFailed,
			desc: "app_id does not name this app"})
		return
	}
	env := UnlinkEnvelope(u, s.Kakao.issuer(), s.now(), s.Kakao.unlinkWindow())
	s.store(w, r, inbox.Entry{Envelope: env, Raw: raw}, http.StatusOK)
}
