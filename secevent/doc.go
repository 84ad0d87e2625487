// Package secevent verifies Security Event Tokens (SETs, RFC 8417) delivered
// by push (RFC 8935), as sent by Kakao's "Account Status Change" webhook and
// other OpenID Shared Signals (SSF, RISC, CAEP) transmitters.
//
// It is a standalone package: the only dependencies are the standard
// library, go-jose v4 and golang.org/x/sync. It never logs, and error
// descriptions never contain token contents.
//
// # Usage
//
//	keys := secevent.NewDiscovery(secevent.DiscoveryOptions{
//		Issuer: "https://kauth.kakao.com",
//		// Pinned fallback if discovery is unavailable:
//		JWKS: secevent.JWKSOptions{URL: "https://kauth.kakao.com/.well-known/jwks.json"},
//	})
//	v, err := secevent.NewVerifier(secevent.Config{
//		Issuer:    "https://kauth.kakao.com",
//		Audiences: []string{restAPIKey},
//		Keys:      keys,
//	})
//	...
//	set, err := v.Verify(r.Context(), body)
//	if err != nil {
//		if secevent.IsTemporary(err) { // keys unreachable: let the sender retry
//			w.WriteHeader(http.StatusServiceUnavailable)
//			return
//		}
//		code, _ := secevent.CodeOf(err)
//		var e *secevent.Error
//		errors.As(err, &e)
//		writeJSON(w, 400, map[string]string{"err": string(code), "description": e.Description})
//		return
//	}
//	// set.JTI is the dedupe key; set.Events are sorted by type.
//	for _, ev := range set.Events {
//		details, _ := ev.Details() // *secevent.UserUnlinked, *secevent.AccountDisabled, ...
//		_ = details
//	}
//
// # What Verify enforces, and the RFC 8935 code of each failure
//
//	invalid_request        not compact JWS (JSON serialization, JWE, wrong segment count, empty
//	                       segment, bad base64url), token larger than MaxTokenSize, header or
//	                       payload not a JSON object, duplicate JSON members, invalid UTF-8,
//	                       missing/ill-typed alg or kid, typ not secevent+jwt (or missing unless
//	                       AllowMissingTyp), any crit or b64 header, missing/empty/too long/
//	                       non-string jti, iat missing/not a number/older than MaxAge/more than
//	                       MaxFutureSkew ahead, exp passed, nbf ahead, events missing/not an
//	                       object/empty/with a non-object member, malformed sub_id or event
//	                       subject, top-level sub disagreeing with the event subject, ill-typed
//	                       iss/aud/txn/txm/toe
//	invalid_key            algorithm not in the allow-list (e.g. HS256, PS256 when only RS256),
//	                       unknown kid (after a rate-limited refresh), key not public, use not
//	                       sig, key alg differing from the token alg, key type not matching the
//	                       algorithm, RSA key outside 2048..8192 bits; also key lookup failures
//	                       (IsTemporary reports those that are receiver-side)
//	authentication_failed  signature does not verify, alg "none"
//	invalid_issuer         iss missing or not exactly Config.Issuer
//	invalid_audience       aud missing or not naming any of Config.Audiences
//	access_denied          never returned by Verify; for callers' own policy checks
//
// The signature is verified with a key looked up for the configured issuer
// before any claim is trusted. Unknown claims, unknown event types and
// unknown subject formats are accepted (the sets are open); Kakao's quirks
// (txm instead of txn, a top-level sub, legacy in-event "subject" with
// "subject_type": "iss-sub") are accepted.
package secevent
