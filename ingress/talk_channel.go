package ingress

import (
	"encoding/json"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/setflow/setflow/event"
	"github.com/setflow/setflow/inbox"
	"github.com/setflow/setflow/talk"
	"github.com/setflow/setflow/unknowns"
)

// DefaultIDType is the id_type assumed when a Talk Channel delivery has none:
// the app user id, the only type Kakao documents besides open_id.
const DefaultIDType = "app_user_id"

// TalkChannelKey is the dedupe key of a Talk Channel delivery.
func TalkChannelKey(resourceID string) string { return "talk-channel:" + resourceID }

// ChannelEventName is the reaction name of a channel event: "channel-added",
// "channel-blocked", or "channel-<value>" (lower-cased, limited to letters,
// digits, '-' and '_') for a value Kakao may add later.
func ChannelEventName(ev string) string {
	ev = strings.ToLower(strings.TrimSpace(ev))
	var b strings.Builder
	for _, c := range ev {
		if b.Len() >= 40 {
			break
		}
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
			b.WriteRune(c)
		default:
			b.WriteByte('_')
		}
	}
	return talk.NameChannelPrefix + b.String()
}

// TalkChannelEnvelope builds the inbox envelope of a Talk Channel delivery;
// the event's time is Kakao's time of the change, which orders the events of
// one user and channel.
func TalkChannelEnvelope(p talk.ChannelPayload, issuer string, receivedAt time.Time) event.Envelope {
	sub := event.Subject{Issuer: issuer, UserID: p.UserID, Format: p.IDType}
	payload, _ := json.Marshal(p)
	return event.Envelope{
		Key:        TalkChannelKey(p.ResourceID),
		Source:     event.SourceTalkChannel,
		Subject:    sub,
		IssuedAt:   p.UpdatedAt.UTC(),
		ReceivedAt: receivedAt.UTC(),
		Events: []event.Event{{
			Type:     talk.TypeChannel,
			Name:     ChannelEventName(p.Event),
			Category: KakaoWebhookCategory,
			Subject:  sub,
			Time:     p.UpdatedAt.UTC(),
			Payload:  payload,
		}},
	}
}

// talkChannel receives the Kakao Talk Channel webhook: a JSON POST telling that
// a user added or blocked one of the app's channels. Both the current and the
// older (plus_friend_*, timestamp) member names are accepted; an unknown event
// value is recorded as it is.
func (s *Server) talkChannel(w http.ResponseWriter, r *http.Request) {
	const route = "talk-channel"
	if !s.allowMethod(w, r, route, http.MethodPost) || !s.authorize(w, r, route) {
		return
	}
	id, rerr := resourceID(r)
	if rerr != nil {
		s.fail(w, r, route, rerr)
		return
	}
	params, raw, rerr := s.readParams(w, r, encJSON, channelMembers...)
	if rerr != nil {
		s.fail(w, r, route, rerr)
		return
	}
	now := s.now()
	p, rerr := channelPayload(id, params, now)
	if rerr != nil {
		s.fail(w, r, route, rerr)
		return
	}
	if s.store(w, r, inbox.Entry{Envelope: TalkChannelEnvelope(p, s.Kakao.issuer(), now), Raw: raw}, http.StatusOK) {
		s.noteUnknowns(func() []unknowns.Kind { return channelUnknowns(params) })
	}
}

// channelUnknowns lists the members setflow does not read and the older
// spellings the notes say only earlier senders used.
func channelUnknowns(p params) []unknowns.Kind {
	out := fieldUnknowns(event.SourceTalkChannel, p, channelMembers)
	for _, old := range []string{"plus_friend_public_id", "plus_friend_uuid", "timestamp"} {
		if _, ok := p[old]; ok {
			out = append(out, unknowns.Kind{Route: string(event.SourceTalkChannel), Kind: unknowns.Spelling, Detail: old})
		}
	}
	return out
}

var channelMembers = []string{"event", "id", "id_type", "channel_public_id", "channel_uuid",
	"plus_friend_public_id", "plus_friend_uuid", "updated_at", "timestamp"}

func channelPayload(id string, params params, receivedAt time.Time) (talk.ChannelPayload, *reqError) {
	p := talk.ChannelPayload{ResourceID: id}
	var rerr *reqError
	get := func(name string) string {
		v, _, err := params.str(name)
		if err != nil && rerr == nil {
			rerr = err
		}
		return v
	}
	p.Event = get("event")
	p.UserID = get("id")
	p.IDType = get("id_type")
	p.ChannelPublicID = get("channel_public_id")
	p.ChannelUUID = get("channel_uuid")
	oldPublic, oldUUID := get("plus_friend_public_id"), get("plus_friend_uuid")
	updatedAt, timestamp := get("updated_at"), get("timestamp")
	if rerr != nil {
		return p, rerr
	}
	var missing []string
	if p.Event == "" {
		missing = append(missing, "event")
	}
	if p.UserID == "" {
		missing = append(missing, "id")
	}
	if p.ChannelPublicID == "" && oldPublic != "" {
		p.ChannelPublicID, p.Legacy = oldPublic, true
	}
	if p.ChannelUUID == "" && oldUUID != "" {
		p.ChannelUUID, p.Legacy = oldUUID, true
	}
	if p.ChannelPublicID == "" && p.ChannelUUID == "" {
		missing = append(missing, "channel_public_id (or channel_uuid)")
	}
	if len(missing) > 0 {
		return p, badRequest("missing %s", strings.Join(missing, ", "))
	}
	for _, f := range []struct{ name, v string }{
		{"id", p.UserID}, {"id_type", p.IDType}, {"channel_public_id", p.ChannelPublicID}, {"channel_uuid", p.ChannelUUID},
	} {
		if rerr := checkName(f.name, f.v); rerr != nil {
			return p, rerr
		}
	}
	if p.IDType == "" {
		p.IDType = DefaultIDType
	}
	var err error
	switch {
	case updatedAt != "":
		p.TimeSource = "updated_at"
		p.UpdatedAt, err = parseKakaoTime(updatedAt)
	case timestamp != "":
		p.TimeSource, p.Legacy = "timestamp", true
		p.UpdatedAt, err = parseKakaoTime(timestamp)
	default:
		// Neither: order by arrival rather than lose the event.
		p.TimeSource, p.UpdatedAt = "received", receivedAt
	}
	// A time outside years 1–9999 (UTC) has no RFC 3339 form to store it in.
	if y := p.UpdatedAt.UTC().Year(); err != nil || y < 1 || y > 9999 {
		return p, badRequest("%s must be an RFC 3339 time or a Unix time in seconds or milliseconds", p.TimeSource)
	}
	p.UpdatedAt = p.UpdatedAt.UTC()
	if extra := params.raw(channelMembers...); len(extra) > 0 {
		p.Extra = extra
	}
	return p, nil
}

// parseKakaoTime reads RFC 3339 (updated_at), or a Unix time in seconds or
// milliseconds (the older timestamp, as a number or a string).
func parseKakaoTime(s string) (time.Time, error) {
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		if math.IsNaN(f) || math.IsInf(f, 0) || f <= 0 || f >= 1e15 {
			return time.Time{}, strconv.ErrRange
		}
		// 1e12 ms is September 2001; 1e12 s is the year 33658.
		if f >= 1e12 {
			return time.UnixMilli(int64(f)), nil
		}
		sec, frac := math.Modf(f)
		return time.Unix(int64(sec), int64(frac*1e9)), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02 15:04:05"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, strconv.ErrSyntax
}
