package ingress

import (
	"encoding/json"
	"slices"
	"strconv"

	"github.com/setflow/setflow/event"
	"github.com/setflow/setflow/secevent"
	"github.com/setflow/setflow/unknowns"
)

// UnknownsNoter takes note of deliveries of an unexpected shape without
// blocking (unknowns.Recorder): find runs later, off the request path.
type UnknownsNoter interface {
	Note(find func() []unknowns.Kind)
}

// noteUnknowns hands find to the recorder, if one is configured.
func (s *Server) noteUnknowns(find func() []unknowns.Kind) {
	if s.Unknowns != nil {
		s.Unknowns.Note(find)
	}
}

// noteRedelivered records that a delivery stored before came again after it
// was answered status: Kakao's retry policy and its reading of 200 vs 202
// are not documented.
func (s *Server) noteRedelivered(source event.Source, status int) {
	s.noteUnknowns(func() []unknowns.Kind {
		return []unknowns.Kind{{Route: string(source), Kind: unknowns.Redelivered, Detail: "after " + strconv.Itoa(status)}}
	})
}

// setClaims are the top-level claims setflow reads or expects of a SET
// (RFC 8417, SSF, and Kakao's documented example).
var setClaims = []string{"iss", "aud", "jti", "iat", "sub", "sub_id", "txn", "txm", "toe", "exp", "nbf", "events"}

// SETUnknowns lists what a verified SET shows that the notes did not expect:
// an unknown top-level claim, an unknown event type, a member of a known
// event that setflow does not read, and the RFC spelling txn where Kakao's
// example has txm. Names only, never values.
func SETUnknowns(set *secevent.SET) []unknowns.Kind {
	const route = string(event.SourceSET)
	var out []unknowns.Kind
	var claims map[string]json.RawMessage
	if json.Unmarshal(set.Payload, &claims) == nil {
		for name := range claims {
			if !slices.Contains(setClaims, name) {
				out = append(out, unknowns.Kind{Route: route, Kind: unknowns.Claim, Detail: unknowns.Name(name)})
			}
		}
		if _, ok := claims["txn"]; ok {
			out = append(out, unknowns.Kind{Route: route, Kind: unknowns.Spelling, Detail: "txn"})
		}
	}
	for _, ev := range set.Events {
		if !slices.Contains(secevent.KnownEventTypes, ev.Type) {
			out = append(out, unknowns.Kind{Route: route, Kind: unknowns.EventType, Detail: unknowns.Name(ev.Type)})
			continue
		}
		for _, name := range unreadMembers(ev) {
			out = append(out, unknowns.Kind{Route: route, Kind: unknowns.EventField, Detail: ev.Name + "." + unknowns.Name(name)})
		}
	}
	return out
}

// caepCommon are the optional members every CAEP event may carry; Details
// reads them for CAEP events only, so they count as known everywhere.
var caepCommon = []string{"event_timestamp", "initiating_entity", "reason_admin", "reason_user"}

// unreadMembers are the members of a known event that its typed details do
// not read (Extra; for the profile-change event, whose field names Kakao does
// not document, every member).
func unreadMembers(ev secevent.Event) []string {
	d, err := ev.Details()
	if err != nil {
		return nil
	}
	var extra map[string]any
	switch d := d.(type) {
	case *secevent.ProfileChanged:
		extra = d.Fields
	case *secevent.Generic:
		extra = d.Extra
	case *secevent.UserUnlinked:
		extra = d.Extra
	case *secevent.ScopeChange:
		extra = d.Extra
	case *secevent.AccountDisabled:
		extra = d.Extra
	case *secevent.IdentifierChanged:
		extra = d.Extra
	case *secevent.CredentialChange:
		extra = d.Extra
	case *secevent.LevelChange:
		extra = d.Extra
	case *secevent.DeviceComplianceChange:
		extra = d.Extra
	case *secevent.TokenClaimsChange:
		extra = d.Extra
	case *secevent.Verification:
		extra = d.Extra
	case *secevent.StreamUpdated:
		extra = d.Extra
	}
	var out []string
	for name := range extra {
		if !slices.Contains(caepCommon, name) {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// fieldUnknowns lists the members of a form or JSON webhook that are not
// among known.
func fieldUnknowns(source event.Source, p params, known []string) []unknowns.Kind {
	var out []unknowns.Kind
	for name := range p {
		if !slices.Contains(known, name) {
			out = append(out, unknowns.Kind{Route: string(source), Kind: unknowns.Field, Detail: unknowns.Name(name)})
		}
	}
	return out
}
