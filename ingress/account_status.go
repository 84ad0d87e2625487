package ingress

import (
	"context"
	"errors"
	"io"
	"mime"
	"net/http"
	"time"

	"github.com/setflow/setflow/event"
	"github.com/setflow/setflow/inbox"
	"github.com/setflow/setflow/secevent"
	"github.com/setflow/setflow/unknowns"
)

// SETContentType is the media type of a pushed SET (RFC 8935 §2).
const SETContentType = "application/secevent+jwt"

// accountStatus receives Kakao's Account Status Change webhook: one SET per
// POST. 202 once stored (also for a duplicate), 400 with an RFC 8935 error body
// for a token that is malformed, forged or not for us, 503 only when it could
// not be stored.
func (s *Server) accountStatus(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, http.StatusMethodNotAllowed, secevent.CodeInvalidRequest, "the Security Event Token must be POSTed")
		return
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != SETContentType {
		writeError(w, http.StatusUnsupportedMediaType, secevent.CodeInvalidRequest,
			"Content-Type must be "+SETContentType)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.maxBody()))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, secevent.CodeInvalidRequest, "the request body is too large")
			return
		}
		writeError(w, http.StatusBadRequest, secevent.CodeInvalidRequest, "the request body could not be read")
		return
	}
	set, err := s.SETs.Verify(r.Context(), body)
	if err != nil && secevent.IsTemporary(err) {
		// Our side failed (keys unreachable): not the sender's fault, so not a 400.
		s.log().Warn("set verification unavailable", "error", err)
		w.Header().Set("Retry-After", "5")
		writeError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "verification keys are unavailable; retry later")
		return
	}
	if err != nil {
		code, ok := secevent.CodeOf(err)
		desc := "the Security Event Token could not be verified"
		var verr *secevent.Error
		if errors.As(err, &verr) {
			desc = verr.Description
		}
		if !ok {
			code = secevent.CodeInvalidRequest
		}
		// Descriptions never carry token contents, so they are safe to log.
		s.log().Info("set rejected", "err", string(code), "description", desc, "remote", r.RemoteAddr)
		writeError(w, http.StatusBadRequest, code, desc)
		return
	}
	env := EnvelopeFromSET(set, s.now())
	if s.store(w, r, inbox.Entry{Envelope: env, Raw: body}, http.StatusAccepted) {
		s.noteUnknowns(func() []unknowns.Kind { return SETUnknowns(set) })
	}
}

// store commits the entry and answers okStatus, also for a duplicate; 503 when
// the inbox could not be written, so that a sender that retries does. Every
// route stores through here, so this is where the envelope is made storable:
// what PostgreSQL's jsonb and text columns cannot hold (NUL, lone
// surrogates, numbers beyond numeric, very deep nesting) is normalised in the
// envelope (event.Envelope.Storable), while Raw keeps the delivery's bytes
// exactly. Odd but valid input is thus stored and answered, never a 503.
//
// It reports whether the entry is stored (now, or by an earlier delivery).
func (s *Server) store(w http.ResponseWriter, r *http.Request, e inbox.Entry, okStatus int) bool {
	e.Envelope = e.Envelope.Storable()
	ctx, cancel := context.WithTimeout(r.Context(), s.storeTimeout())
	defer cancel()
	inserted, err := s.Inbox.Put(ctx, e)
	if err != nil {
		s.log().Error("inbox write failed", "source", string(e.Envelope.Source), "key", e.Envelope.Key, "error", err)
		w.Header().Set("Retry-After", "5")
		writeError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "the event could not be stored; retry later")
		return false
	}
	s.log().Debug("event accepted", "source", string(e.Envelope.Source), "key", e.Envelope.Key, "duplicate", !inserted)
	w.WriteHeader(okStatus)
	if !inserted {
		s.noteRedelivered(e.Envelope.Source, okStatus)
	}
	return true
}

func (s *Server) storeTimeout() time.Duration {
	if s.StoreTimeout > 0 {
		return s.StoreTimeout
	}
	return 2 * time.Second
}

// SETKey is the dedupe key of a SET: its jti, which the sender makes unique.
// A jti a text column cannot hold (one with a NUL) gets a key that can, still
// one per jti (event.StorableKey).
func SETKey(jti string) string { return event.StorableKey("set:" + jti) }

// EnvelopeFromSET turns a verified SET into the inbox envelope.
func EnvelopeFromSET(set *secevent.SET, receivedAt time.Time) event.Envelope {
	env := event.Envelope{
		Key:        SETKey(set.JTI),
		Source:     event.SourceSET,
		Subject:    subjectOf(set.Subject, set.Issuer),
		IssuedAt:   set.IssuedAt.UTC(),
		ReceivedAt: receivedAt.UTC(),
		TxnID:      set.TxnID,
	}
	for _, ev := range set.Events {
		sub := subjectOf(ev.Subject, set.Issuer)
		if sub.UserID == "" {
			sub = env.Subject
		}
		env.Events = append(env.Events, event.Event{
			Type:     ev.Type,
			Name:     ev.Name,
			Category: string(ev.Category),
			Subject:  sub,
			Time:     ev.Time.UTC(),
			Payload:  ev.Payload,
		})
	}
	return env
}

func subjectOf(s secevent.Subject, issuer string) event.Subject {
	iss := s.Issuer
	if iss == "" {
		iss = issuer
	}
	return event.Subject{Issuer: iss, UserID: s.UserID, Format: s.Format}
}
