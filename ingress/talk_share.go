package ingress

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/setflow/setflow/event"
	"github.com/setflow/setflow/inbox"
	"github.com/setflow/setflow/talk"
)

// Members of a Talk Share delivery that are Kakao's; every other member is one
// of the app's serverCallbackArgs.
const (
	talkChatType   = "CHAT_TYPE"
	talkHashChatID = "HASH_CHAT_ID"
	talkTemplateID = "TEMPLATE_ID"
)

// TalkShareKey is the dedupe key of a Talk Share delivery.
func TalkShareKey(resourceID string) string { return "talk-share:" + resourceID }

// TalkShareEnvelope builds the inbox envelope of a Talk Share delivery. It has
// no user subject: Kakao does not say who shared.
func TalkShareEnvelope(p talk.SharePayload, receivedAt time.Time) event.Envelope {
	receivedAt = receivedAt.UTC()
	if p.Args == nil {
		p.Args = map[string]json.RawMessage{}
	}
	payload, _ := json.Marshal(p)
	return event.Envelope{
		Key:        TalkShareKey(p.ResourceID),
		Source:     event.SourceTalkShare,
		IssuedAt:   receivedAt,
		ReceivedAt: receivedAt,
		Events: []event.Event{{
			Type:     talk.TypeShare,
			Name:     talk.NameShare,
			Category: KakaoWebhookCategory,
			Time:     receivedAt,
			Payload:  payload,
		}},
	}
}

// talkShare receives the Kakao Talk Share webhook (GET or POST; query, form or
// JSON). Kakao sends it once and never again, so anything well-formed is
// stored and answered 200; an unknown CHAT_TYPE is recorded as it is.
func (s *Server) talkShare(w http.ResponseWriter, r *http.Request) {
	const route = "talk-share"
	if !s.allowMethod(w, r, route, http.MethodGet, http.MethodPost) || !s.authorize(w, r, route) {
		return
	}
	id, rerr := resourceID(r)
	if rerr != nil {
		s.fail(w, r, route, rerr)
		return
	}
	params, raw, rerr := s.readParams(w, r, encQuery|encForm|encJSON, talkChatType, talkHashChatID, talkTemplateID)
	if rerr != nil {
		s.fail(w, r, route, rerr)
		return
	}
	p, rerr := sharePayload(id, params)
	if rerr != nil {
		s.fail(w, r, route, rerr)
		return
	}
	s.store(w, r, inbox.Entry{Envelope: TalkShareEnvelope(p, s.now()), Raw: raw}, http.StatusOK)
}

func sharePayload(id string, params params) (talk.SharePayload, *reqError) {
	p := talk.SharePayload{ResourceID: id}
	var ok bool
	var rerr *reqError
	if p.ChatType, ok, rerr = params.str(talkChatType); rerr != nil {
		return p, rerr
	} else if !ok {
		return p, badRequest("missing %s", talkChatType)
	}
	if p.HashChatID, ok, rerr = params.str(talkHashChatID); rerr != nil {
		return p, rerr
	} else if !ok {
		return p, badRequest("missing %s", talkHashChatID)
	}
	tmpl, ok, rerr := params.str(talkTemplateID)
	if rerr != nil {
		return p, rerr
	}
	if ok {
		n, err := strconv.ParseInt(tmpl, 10, 64)
		if err != nil {
			return p, badRequest("%s must be an integer", talkTemplateID)
		}
		p.TemplateID = &n
	}
	p.Args = params.raw(talkChatType, talkHashChatID, talkTemplateID)
	return p, nil
}
