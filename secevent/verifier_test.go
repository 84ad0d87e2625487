package secevent

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestVerifyKakaoDocumentedExample(t *testing.T) {
	v := newTestVerifier(t, nil)
	tok := signRaw(t, kakaoHeader, kakaoExample, rsaA)
	set, err := v.Verify(context.Background(), []byte(tok))
	require.NoError(t, err)

	assert.Equal(t, testIssuer, set.Issuer)
	assert.Equal(t, "7185208e-c045-41e9-a2ff-0b219b9e123e", set.JTI)
	assert.Equal(t, []string{testAud}, set.Audience)
	assert.Equal(t, time.Unix(1744789997, 0).UTC(), set.IssuedAt)
	assert.Equal(t, "1d61d6c8-173b-488c-b8af-2e2b6ca29777", set.TxnID)
	assert.Equal(t, "k1", set.KeyID)
	assert.Equal(t, "RS256", set.Algorithm)
	assert.Equal(t, Subject{Format: "iss_sub", Issuer: testIssuer, UserID: "701541"}, withoutRaw(set.Subject))

	require.Len(t, set.Events, 1)
	ev := set.Events[0]
	assert.Equal(t, EventUserLinked, ev.Type)
	assert.Equal(t, "user-linked", ev.Name)
	assert.Equal(t, CategoryOAuth, ev.Category)
	assert.Equal(t, "iss_sub", ev.Subject.Format)
	assert.Equal(t, "701541", ev.Subject.UserID)
	assert.Equal(t, testIssuer, ev.Subject.Issuer)
	assert.JSONEq(t, `{"sub": "701541", "subject_type": "iss-sub", "iss": "https://kauth.kakao.com"}`, string(ev.Subject.Raw))
	assert.Equal(t, set.IssuedAt, ev.Time, "no toe or event_timestamp: event time falls back to iat")
	assert.JSONEq(t, `{"subject": {"sub": "701541", "subject_type": "iss-sub", "iss": "https://kauth.kakao.com"}}`, string(ev.Payload))
}

func withoutRaw(s Subject) Subject { s.Raw = nil; return s }

func TestVerifyTxnPreferredOverTxm(t *testing.T) {
	v := newTestVerifier(t, nil)
	tok := signRaw(t, kakaoHeader, baseClaims().with("txn", "T1").json(t), rsaA)
	set, err := v.Verify(context.Background(), []byte(tok))
	require.NoError(t, err)
	assert.Equal(t, "T1", set.TxnID)

	tok = signRaw(t, kakaoHeader, baseClaims().json(t), rsaA)
	set, err = v.Verify(context.Background(), []byte(tok))
	require.NoError(t, err)
	assert.Empty(t, set.TxnID, "neither txn nor txm is required")
}
