package secevent

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseSubject(t *testing.T) {
	const def = "https://kauth.kakao.com"
	ok := []struct {
		raw                  string
		format, issuer, user string
	}{
		{`{"sub":"701541","subject_type":"iss-sub","iss":"https://kauth.kakao.com"}`, "iss_sub", def, "701541"},
		{`{"subject_type":"iss_sub","sub":"1"}`, "iss_sub", def, "1"},
		{`{"subject_type":"ISS-SUB","iss":"https://x.example","sub":"1"}`, "iss_sub", "https://x.example", "1"},
		{`{"subject_type":"id_token_claims","iss":"https://x.example","sub":"1","email":"a@b"}`, "iss_sub", "https://x.example", "1"},
		{`{"sub":"1"}`, "iss_sub", def, "1"},
		{`{"subject_type":"email","email":"Kim@Kakao.COM"}`, "email", def, "Kim@kakao.com"},
		{`{"subject_type":"phone","phone":"+8210"}`, "phone_number", def, "+8210"},
		{`{"format":"phone_number","phone_number":"+8210"}`, "phone_number", def, "+8210"},
		{`{"format":"opaque","id":"x"}`, "opaque", def, "x"},
		{`{"format":"account","uri":"acct:a@b.example"}`, "account", def, "acct:a@b.example"},
		{`{"format":"did","url":"did:web:x"}`, "did", def, "did:web:x"},
		{`{"format":"uri","uri":"urn:x"}`, "uri", def, "urn:x"},
		{`{"format":"aliases","identifiers":[{"format":"email","email":"a@b"},{"format":"opaque","id":"o"}]}`, "email", def, "a@b"},
		{`{"format":"complex","session":{"format":"opaque","id":"s"}}`, "opaque", def, "s"},
		{`{"format":"complex","user":{"format":"iss_sub","iss":"https://u.example","sub":"u"},"session":{"format":"opaque","id":"s"}}`, "iss_sub", "https://u.example", "u"},
		{`{"format":"future-format","anything":1}`, "future-format", def, ""},
	}
	for _, tc := range ok {
		s, err := ParseSubject(json.RawMessage(tc.raw), def)
		require.NoError(t, err, tc.raw)
		assert.Equal(t, tc.format, s.Format, tc.raw)
		assert.Equal(t, tc.issuer, s.Issuer, tc.raw)
		assert.Equal(t, tc.user, s.UserID, tc.raw)
		assert.Equal(t, tc.raw, string(s.Raw))
	}

	bad := []string{
		``, `null`, `"701541"`, `[]`, `{}`, `{"format":1}`, `{"subject_type":["iss-sub"]}`,
		`{"format":"iss_sub"}`, `{"format":"iss_sub","sub":""}`, `{"format":"iss_sub","sub":1}`,
		`{"format":"iss_sub","sub":"1","iss":5}`, `{"format":"email"}`, `{"format":"opaque","id":null}`,
		`{"format":"account","uri":"mailto:a@b"}`, `{"format":"did"}`, `{"format":"uri","uri":"  "}`,
		`{"format":"aliases"}`, `{"format":"aliases","identifiers":[]}`, `{"format":"aliases","identifiers":"x"}`,
		`{"format":"aliases","identifiers":[{"format":"aliases","identifiers":[{"format":"opaque","id":"x"}]}]}`,
		`{"format":"aliases","identifiers":[{"format":"email"}]}`,
		`{"format":"complex"}`, `{"format":"complex","user":{"format":"complex","user":{"format":"opaque","id":"x"}}}`,
		`{"format":"complex","user":"u"}`,
		`{"format":"iss_sub","sub":"1","sub":"2"}`, `{"format":"opaque","id":"x"} {}`, "{\"format\":\"opaque\",\"id\":\"\xff\"}",
	}
	for _, raw := range bad {
		_, err := ParseSubject(json.RawMessage(raw), def)
		assert.Error(t, err, raw)
		if err != nil {
			assert.NotContains(t, err.Error(), "701541")
		}
	}
}

func TestCheckStrictJSON(t *testing.T) {
	good := []string{`{}`, `[]`, `1`, `"s"`, `{"a":{"a":1},"b":[{"a":1},{"a":2}]}`, ` {"a" : 1 } `}
	for _, g := range good {
		assert.NoError(t, checkStrictJSON([]byte(g)), g)
	}
	bad := []string{``, `{`, `{"a":1,"a":2}`, `{"a":{"b":1,"b":1}}`, `[{"a":1,"a":1}]`, `{"a":1}{}`, `{"a":1} x`,
		`{"a":1,}`, `{'a':1}`, "\"\xff\"", `{"\u0061":1,"a":2}`}
	for _, b := range bad {
		assert.Error(t, checkStrictJSON([]byte(b)), b)
	}
}

func TestEventNameAndCategory(t *testing.T) {
	for _, typ := range KnownEventTypes {
		assert.NotEqual(t, CategoryUnknown, CategoryOf(typ), typ)
		assert.NotEmpty(t, EventName(typ))
	}
	assert.Len(t, KnownEventTypes, 32)
	assert.Equal(t, "user-profile-changed", EventName(EventUserProfileChanged))
	assert.Equal(t, CategoryKakao, CategoryOf(EventUserProfileChanged))
	assert.Equal(t, "x", EventName("urn:example:event:x"))
	assert.Equal(t, "y", EventName("https://e.example/y/"))
	assert.Equal(t, CategoryUnknown, CategoryOf("https://schemas.openid.net/secevent/other/event-type/x"))
}
