package secevent

import (
	"context"
	"testing"

	"github.com/go-jose/go-jose/v4"
)

// BenchmarkVerify measures full verification of Kakao's documented SET
// (RS256, 2048-bit key, static key source): parsing, strict JSON checks,
// signature and claims.
func BenchmarkVerify(b *testing.B) {
	v := newTestVerifier(b, nil)
	tok := []byte(signRaw(b, kakaoHeader, kakaoExample, rsaA))
	ctx := context.Background()
	if _, err := v.Verify(ctx, tok); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := v.Verify(ctx, tok); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyRejectBogusKid measures the cost of rejecting a token with
// an unknown kid (no signature work): the cheap path under a flood.
func BenchmarkVerifyRejectBogusKid(b *testing.B) {
	v := newTestVerifier(b, nil)
	tok := []byte(signRaw(b, hdr("RS256", "bogus", "secevent+jwt"), kakaoExample, rsaA))
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(ctx, tok); err == nil {
			b.Fatal("accepted")
		}
	}
}

// BenchmarkGoJoseBaseline is the floor Verify builds on: go-jose parse and
// RS256 verify of the same token, nothing else. Compare with BenchmarkVerify
// in the same run.
func BenchmarkGoJoseBaseline(b *testing.B) {
	testKeys(b)
	tok := signRaw(b, kakaoHeader, kakaoExample, rsaA)
	b.ReportAllocs()
	for b.Loop() {
		j, err := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{jose.RS256})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := j.Verify(&rsaA.PublicKey); err != nil {
			b.Fatal(err)
		}
	}
}
