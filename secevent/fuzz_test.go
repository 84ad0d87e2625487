package secevent

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// FuzzVerify feeds arbitrary bytes to Verify (structure, header and key
// lookup paths) and, separately, signs the input as a payload with a fast
// ES256 key so the claims parser behind the signature check is reached too.
// Neither may panic, and every failure must be an *Error with a code.
func FuzzVerify(f *testing.F) {
	testKeys(f)
	f.Add([]byte(signRaw(f, kakaoHeader, kakaoExample, rsaA)))
	f.Add([]byte(kakaoExample))
	f.Add([]byte(baseClaims().with("sub_id", map[string]any{"format": "complex", "user": map[string]any{"format": "email", "email": "a@b"}}).json(f)))
	f.Add([]byte(baseClaims().with("toe", 1.5).with("exp", 2e9).json(f)))
	f.Add([]byte(`{"iss":"a","iss":"b"}`))
	f.Add([]byte(`eyJhbGciOiJub25lIn0.e30.`))
	f.Add([]byte(`a.b.c.d.e`))
	f.Add([]byte(`{"payload":"e30","signatures":[]}`))
	f.Add([]byte(`[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]`))

	rsKeys, err := NewStaticKeys(testIssuer, jose.JSONWebKeySet{Keys: []jose.JSONWebKey{pubJWK(testKID, rsaA.Public(), "RS256")}})
	if err != nil {
		f.Fatal(err)
	}
	esKeys, err := NewStaticKeys(testIssuer, jose.JSONWebKeySet{Keys: []jose.JSONWebKey{pubJWK(testKID, ecKey.Public(), "ES256")}})
	if err != nil {
		f.Fatal(err)
	}
	rs, _ := NewVerifier(Config{Issuer: testIssuer, Audiences: []string{testAud}, Keys: rsKeys, Now: func() time.Time { return testNow }})
	es, _ := NewVerifier(Config{Issuer: testIssuer, Audiences: []string{testAud}, Keys: esKeys, Now: func() time.Time { return testNow },
		Algorithms: []jose.SignatureAlgorithm{jose.ES256}})
	esHeader := hdr("ES256", testKID, "secevent+jwt")

	check := func(t *testing.T, set *SET, err error) {
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Code == "" || e.Description == "" {
				t.Fatalf("failure is not a coded *Error: %#v", err)
			}
			if set != nil {
				t.Fatal("SET returned with an error")
			}
			return
		}
		if set.JTI == "" || set.Issuer != testIssuer || len(set.Events) == 0 {
			t.Fatalf("accepted SET violates invariants: %+v", set)
		}
		for _, ev := range set.Events {
			_, _ = ev.Details()
			if !json.Valid(ev.Payload) {
				t.Fatal("event payload is not valid JSON")
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		set, err := rs.Verify(context.Background(), data)
		check(t, set, err)
		tok := signES256(t, esHeader, string(data), ecKey)
		set, err = es.Verify(context.Background(), []byte(tok))
		check(t, set, err)
	})
}

// FuzzParseSubject must never panic; an accepted subject keeps its raw form
// and, for identifier formats that require one, has a user id.
func FuzzParseSubject(f *testing.F) {
	seeds := []string{
		`{"sub":"701541","subject_type":"iss-sub","iss":"https://kauth.kakao.com"}`,
		`{"format":"email","email":"A@B.C"}`,
		`{"format":"aliases","identifiers":[{"format":"opaque","id":"x"},{"format":"iss_sub","iss":"i","sub":"s"}]}`,
		`{"format":"complex","user":{"format":"phone_number","phone_number":"+1"},"session":{"format":"opaque","id":"s"}}`,
		`{"format":"account","uri":"acct:x@y"}`, `{"format":"did","url":"did:x"}`, `{"format":"unknown"}`,
		`{"a":1,"a":2}`, `null`, `[]`, `{"format":"aliases","identifiers":[{"format":"aliases"}]}`,
	}
	for _, s := range seeds {
		f.Add([]byte(s), "https://kauth.kakao.com")
	}
	f.Fuzz(func(t *testing.T, data []byte, issuer string) {
		s, err := ParseSubject(data, issuer)
		if err != nil {
			return
		}
		if string(s.Raw) != string(data) {
			t.Fatal("Raw differs from input")
		}
		switch s.Format {
		case FormatIssSub, FormatEmail, FormatOpaque, FormatAccount, FormatDID, FormatURI, FormatPhoneNumber:
			if s.UserID == "" {
				t.Fatalf("format %s accepted without an identifier", s.Format)
			}
		}
		if s.Issuer == "" && issuer != "" {
			t.Fatal("issuer fallback lost")
		}
	})
}

// FuzzStrictJSON checks the hand-written strict scanner against
// encoding/json: it may only refuse valid JSON for duplicates, depth or
// invalid UTF-8, and must never accept what encoding/json rejects. Accepted
// objects must decode to the same members.
func FuzzStrictJSON(f *testing.F) {
	for _, s := range []string{`{"a":1,"b":[true,false,null,"x\u00e9\n"],"c":{"d":-1.5e+3}}`, `{"a":1,"a":2}`,
		`{"\u0061":1,"a":2}`, `[1,2`, `01`, `1.`, `"\ud800"`, `{"a" :  {"b":{}} }  `, "\"\xff\"", `-`, `1e`, `[]`, `{}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		err := checkStrictJSON(data)
		valid := json.Valid(data)
		if err == nil && !valid {
			t.Fatalf("strict scanner accepted invalid JSON %q", data)
		}
		if err != nil && valid && !errors.Is(err, errDuplicateKey) && !errors.Is(err, errTooDeep) && !errors.Is(err, errInvalidUTF8) {
			t.Fatalf("strict scanner refused valid JSON %q: %v", data, err)
		}
		if err == nil {
			m, derr := decodeObject(data)
			var ref map[string]json.RawMessage
			if json.Unmarshal(data, &ref) == nil && ref != nil {
				if derr != nil || len(m) != len(ref) {
					t.Fatalf("member mismatch for %q", data)
				}
				for k := range ref {
					if _, ok := m[k]; !ok {
						t.Fatalf("member %q missing", k)
					}
				}
			}
		}
	})
}
