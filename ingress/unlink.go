package ingress

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/setflow/setflow/event"
	"github.com/setflow/setflow/inbox"
	"github.com/setflow/setflow/secevent"
	"github.com/setflow/setflow/unknowns"
)

// Unlink webhook event identity. Its Name is the one of the OAUTH user-unlinked
// SET, so that both get the same reaction plan.
const (
	UnlinkEventType = "kakao:unlink-webhook"
	UnlinkEventName = event.NameUserUnlinked
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

// UnlinkKey derives the dedupe key of an unlink webhook delivery received at
// at: "unlink:" + hex HMAC-SHA256, keyed with keyHash (the audit key), over
// the app id, user id, referrer type and the epoch-aligned bucket of length
// window that holds at (window <= 0 means DefaultUnlinkWindow). Kakao sends no
// event id, so this is the delivery's identity; being keyed, neither it nor
// the workflow id derived from it reveals the user id. It fails with
// ErrNoKeyHash when keyHash is empty: there is no unkeyed fallback.
//
// The bucket only names the key; whether a delivery is a repeat is decided
// over a sliding window (see Server.unlink), so a repeat just across a bucket
// boundary is still a duplicate.
func UnlinkKey(keyHash []byte, u Unlink, at time.Time, window time.Duration) (string, error) {
	if window <= 0 {
		window = DefaultUnlinkWindow
	}
	return unlinkBucketKey(keyHash, u, unlinkBucket(at, window), window)
}

// unlinkBucket is the index of the window bucket holding t (floor division,
// so that buckets stay aligned before the epoch too).
func unlinkBucket(t time.Time, window time.Duration) int64 {
	n, w := t.UnixNano(), int64(window)
	b := n / w
	if n%w < 0 {
		b--
	}
	return b
}

// unlinkKeyDomain separates the unlink dedupe key from the other uses of the
// audit key (subject hashes).
const unlinkKeyDomain = "setflow/unlink-dedupe/v1"

func unlinkBucketKey(keyHash []byte, u Unlink, bucket int64, window time.Duration) (string, error) {
	if len(keyHash) == 0 {
		return "", ErrNoKeyHash
	}
	m := hmac.New(sha256.New, keyHash)
	// Every part is length-prefixed, so no two tuples encode alike.
	var n [binary.MaxVarintLen64]byte
	for _, part := range []string{unlinkKeyDomain, u.AppID, u.UserID, u.ReferrerType,
		strconv.FormatInt(bucket, 10), strconv.FormatInt(int64(window), 10)} {
		m.Write(n[:binary.PutUvarint(n[:], uint64(len(part)))])
		m.Write([]byte(part))
	}
	return "unlink:" + hex.EncodeToString(m.Sum(nil)), nil
}

// UnlinkEnvelope builds the inbox envelope of an unlink webhook delivery
// stored under key (see UnlinkKey).
func UnlinkEnvelope(u Unlink, key, issuer string, receivedAt time.Time) event.Envelope {
	receivedAt = receivedAt.UTC()
	sub := event.Subject{Issuer: issuer, UserID: u.UserID, Format: KakaoUserIDFormat}
	payload, _ := json.Marshal(UnlinkPayload{AppID: u.AppID, ReferrerType: u.ReferrerType, GroupUserToken: u.GroupUserToken})
	return event.Envelope{
		Key:        key,
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

// unlinkFields are the members of an unlink delivery.
var unlinkFields = []string{"app_id", "user_id", "referrer_type", "group_user_token"}

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
	p, raw, rerr := s.readParams(w, r, encQuery|encForm|encJSON, unlinkFields...)
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
	if rerr := checkName("user_id", u.UserID); rerr != nil {
		s.fail(w, r, route, rerr)
		return
	}
	// app_id is not a secret; comparing it plainly leaks nothing.
	if s.Kakao.AppID == "" || u.AppID != s.Kakao.AppID {
		s.fail(w, r, route, &reqError{status: http.StatusUnauthorized, code: secevent.CodeAuthenticationFailed,
			desc: "app_id does not name this app"})
		return
	}
	// Exact repeats within the window are one delivery, the window sliding
	// from the stored delivery's receive time: a delivery of this bucket is a
	// repeat when the previous bucket's key was stored less than one window
	// ago (checked here), or when this bucket's key is stored at all (Put's
	// conflict: same bucket, so less than one window ago). Past the window a
	// repeat is a new delivery under a new key.
	now := s.now()
	win := s.Kakao.unlinkWindow()
	bucket := unlinkBucket(now, win)
	key, err := unlinkBucketKey(s.Kakao.KeyHash, u, bucket, win)
	if err != nil {
		s.log().Error("unlink webhook not stored", "error", err)
		unavailable(w, "the unlink webhook is not configured; retry later")
		return
	}
	prev, _ := unlinkBucketKey(s.Kakao.KeyHash, u, bucket-1, win)
	ctx, cancel := context.WithTimeout(r.Context(), s.storeTimeout())
	dup, err := s.Inbox.ReceivedAfter(ctx, prev, now.Add(-win))
	cancel()
	if err != nil {
		s.log().Error("inbox read failed", "source", string(event.SourceUnlink), "key", prev, "error", err)
		unavailable(w, "the event could not be stored; retry later")
		return
	}
	if dup {
		s.log().Debug("event accepted", "source", string(event.SourceUnlink), "key", prev, "duplicate", true)
		w.WriteHeader(http.StatusOK)
		s.noteRedelivered(event.SourceUnlink, http.StatusOK)
		return
	}
	env := UnlinkEnvelope(u, key, s.Kakao.issuer(), now)
	if s.store(w, r, inbox.Entry{Envelope: env, Raw: raw}, http.StatusOK) {
		s.noteUnknowns(func() []unknowns.Kind { return fieldUnknowns(event.SourceUnlink, p, unlinkFields) })
	}
}

// unavailable answers 503 with Retry-After, so that a sender that retries, retries.
func unavailable(w http.ResponseWriter, desc string) {
	w.Header().Set("Retry-After", "5")
	writeError(w, http.StatusServiceUnavailable, "temporarily_unavailable", desc)
}
