package crm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/setflow/setflow/internal/httpx"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSignKnownVector(t *testing.T) {
	// printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac whsec_test
	assert.Equal(t, "v1=38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789",
		Sign([]byte("whsec_test"), 1700000000, []byte(`{"a":1}`)))
}

func TestVerify(t *testing.T) {
	now := time.Unix(1700000000, 0)
	body := []byte(`{"type":"contact.delete","idempotency_key":"k","contact":{"external_id":"1"}}`)
	ts := strconv.FormatInt(now.Unix(), 10)
	good := Sign(whSecret, now.Unix(), body)

	ok := func(header, ts string, body []byte) error {
		return verifyAt(now, whSecret, header, ts, body, time.Minute)
	}
	require.NoError(t, ok(good, ts, body))
	require.NoError(t, Verify(whSecret, Sign(whSecret, time.Now().Unix(), body), strconv.FormatInt(time.Now().Unix(), 10), body, 0),
		"the exported form uses the real clock")

	tampered := bytes.Replace(body, []byte(`"1"`), []byte(`"2"`), 1)
	assert.ErrorIs(t, ok(good, ts, tampered), ErrSignatureMismatch, "body changed")
	assert.ErrorIs(t, ok(good, ts, append(body, ' ')), ErrSignatureMismatch, "one byte added")
	assert.ErrorIs(t, ok(Sign(whSecret, now.Unix()-1, body), strconv.FormatInt(now.Unix()-1, 10), body), nil, "older but inside tolerance")
	assert.ErrorIs(t, ok(good, strconv.FormatInt(now.Unix()-1, 10), body), ErrSignatureMismatch, "timestamp swapped")
	assert.ErrorIs(t, verifyAt(now, []byte("other-secret"), good, ts, body, time.Minute), ErrSignatureMismatch)
	assert.ErrorIs(t, ok("v1=zz-not-hex", ts, body), ErrSignatureMismatch)
	assert.ErrorIs(t, ok("v1="+strings.Repeat("0", 64), ts, body), ErrSignatureMismatch)
	assert.ErrorIs(t, ok(strings.ToUpper(good[:3])+good[3:], ts, body), ErrNoSignature, "scheme name is case-sensitive")
	assert.ErrorIs(t, ok("", ts, body), ErrNoSignature)
	assert.ErrorIs(t, ok("v0=abc", ts, body), ErrNoSignature)
	require.NoError(t, ok("v0=abc, v1=deadbeef, "+good, ts, body), "rotation: any v1 may match")

	for _, bad := range []string{"", "abc", "-1", "0", "01700000000", "1700000000.5", " 1700000000"} {
		assert.ErrorIs(t, ok(good, bad, body), ErrBadTimestamp, bad)
	}

	stale := now.Add(-2 * time.Minute)
	assert.ErrorIs(t, ok(Sign(whSecret, stale.Unix(), body), strconv.FormatInt(stale.Unix(), 10), body), ErrTimestampTolerance, "replay of an old delivery")
	future := now.Add(2 * time.Minute)
	assert.ErrorIs(t, ok(Sign(whSecret, future.Unix(), body), strconv.FormatInt(future.Unix(), 10), body), ErrTimestampTolerance)

	// tolerance 0 means DefaultTolerance (5 minutes).
	four := now.Add(-4 * time.Minute)
	assert.NoError(t, verifyAt(now, whSecret, Sign(whSecret, four.Unix(), body), strconv.FormatInt(four.Unix(), 10), body, 0))
	six := now.Add(-6 * time.Minute)
	assert.ErrorIs(t, verifyAt(now, whSecret, Sign(whSecret, six.Unix(), body), strconv.FormatInt(six.Unix(), 10), body, 0), ErrTimestampTolerance)

	assert.Error(t, verifyAt(now, nil, good, ts, body, time.Minute), "an empty secret never verifies")
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"", 0, false},
		{"0", 0, true},
		{"120", 2 * time.Minute, true},
		{"-1", 0, false},
		{"later", 0, false},
		{now.Add(10 * time.Second).Format(http.TimeFormat), 10 * time.Second, true},
		{now.Add(-10 * time.Second).Format(http.TimeFormat), 0, true},
		{"Thu Jan  2 03:05:05 2025", time.Minute, true}, // asctime form
	} {
		got, ok := parseRetryAfter(tc.in, now)
		assert.Equal(t, tc.want, got, tc.in)
		assert.Equal(t, tc.ok, ok, tc.in)
	}
	d, ok := parseRetryAfter("9223372036854775807", now)
	assert.True(t, ok)
	assert.Positive(t, d)
}

func TestSanitize(t *testing.T) {
	s := sanitize("Email a.b+c@mail.example.com is invalid\nfor 김민수, phone 010-1234-5678 (+82 10 1234 5678) x",
		"김민수", "x", "")
	assert.NotContains(t, s, "a.b+c@mail.example.com")
	assert.NotContains(t, s, "김민수")
	assert.NotContains(t, s, "1234")
	assert.NotContains(t, s, "\n")
	assert.Contains(t, s, "is invalid")
	assert.True(t, strings.HasSuffix(s, " x"), "one-character values are not redacted: %q", s)

	long := sanitize(strings.Repeat("가", 1000))
	assert.Equal(t, 301, len([]rune(long)))
}

func TestErrorHelpers(t *testing.T) {
	e := &Error{Adapter: "hubspot", Op: "upsert", Reason: "RATE_LIMITS: slow",
		Retry: httpx.Retry{Status: 429, CanRetry: true, Delay: 5 * time.Second}}
	wrapped := fmt.Errorf("activity: %w", e)
	assert.True(t, httpx.IsRetryable(wrapped))
	_, d := httpx.RetryOf(wrapped)
	assert.Equal(t, 5*time.Second, d)
	assert.ErrorIs(t, wrapped, ErrRateLimited)
	assert.Equal(t, "crm hubspot upsert: HTTP 429 RATE_LIMITS: slow (retryable after 5s)", e.Error())

	assert.False(t, httpx.IsRetryable(errors.New("x")))
	assert.False(t, httpx.IsRetryable(nil))
	_, d = httpx.RetryOf(&Error{Retry: httpx.Retry{Status: 400, Delay: time.Second}})
	assert.Zero(t, d, "a permanent error carries no delay")
	assert.NotErrorIs(t, &Error{Retry: httpx.Retry{Status: 503}}, ErrRateLimited)
	assert.Equal(t, "crm webhook delete: HTTP 404 Not Found (not retryable)",
		classify("webhook", "delete", 404, http.Header{}, "", time.Now()).Error())
	assert.Equal(t, "service-webhook notify: HTTP 503 Service Unavailable (retryable)",
		classify("service-webhook", "notify", 503, http.Header{}, "", time.Now()).Error(),
		"a PostSigned caller's error is its own, not the CRM's")
}

func TestPrintingAndLoggingHideSecretsAndPII(t *testing.T) {
	c := Contact{ExternalID: "1234567890", Email: testEmail, Nickname: testNick, Phone: testPhone,
		Properties: map[string]string{"address": "Seoul"}}
	h := HubSpot{BaseURL: "https://api.hubapi.com", Token: hsToken}
	w := Webhook{URL: "https://crm.example/hook", Secret: whSecret}

	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "contact", c, "hubspot", h, "webhook", w, "pc", &c, "ph", &h, "pw", &w)
	slog.New(slog.NewTextHandler(&buf, nil)).Info("y", "contact", c, "hubspot", h, "webhook", w)
	for _, f := range []string{"%v", "%+v", "%#v", "%s"} {
		for _, v := range []any{c, &c, h, &h, w, &w} {
			fmt.Fprintf(&buf, f+"\n", v)
		}
	}
	out := buf.String()
	for _, secret := range []string{testEmail, testNick, testPhone, "Seoul", hsToken, string(whSecret), "1234567890"} {
		assert.NotContains(t, out, secret)
	}
	assert.Contains(t, out, "has_external_id", "the log says which contact fields were there")
}

// testUserID cannot appear in an error text by accident.
const testUserID = "90817263544"

// Transport failures of both adapters (no answer, a refused connection, a
// transport that quotes the request) name neither the contact nor what was
// sent about it, nor a credential; HubSpot's DeleteFields puts the id in the
// URL's path.
func TestTransportErrorsNameNoContact(t *testing.T) {
	hijack := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
			conn.Close()
		}
	}))
	defer hijack.Close()
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	echo := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		body, _ := io.ReadAll(r.Body)
		return nil, fmt.Errorf("proxy refused %s %s: %s", r.Method, r.URL, body)
	})}
	contact := Contact{ExternalID: testUserID, Email: testEmail, Nickname: testNick, Phone: testPhone}
	for name, base := range map[string]string{"no answer": hijack.URL, "refused": closed.URL, "echoing": "http://crm.invalid"} {
		t.Run(name, func(t *testing.T) {
			var hc *http.Client
			if name == "echoing" {
				hc = echo
			}
			h := &HubSpot{BaseURL: base, Token: hsToken, HTTP: hc}
			w := &Webhook{URL: base + "/hook?token=url-secret-token", Secret: whSecret, HTTP: hc}
			var errs []error
			for _, c := range []Client{h, w} {
				errs = append(errs, c.Upsert(ctx, "k", contact), c.Delete(ctx, "k", testUserID),
					c.SetMarketing(ctx, "k", testUserID, true), c.DeleteFields(ctx, "k", testUserID, []string{FieldEmail}))
			}
			for _, err := range errs {
				require.Error(t, err)
				assert.True(t, httpx.IsRetryable(err))
				text := fmt.Sprintf("%v %+v", err, err)
				for _, v := range []string{testUserID, testEmail, testNick, testPhone, hsToken, string(whSecret), "url-secret-token"} {
					assert.NotContains(t, text, v)
				}
				t.Log(err)
			}
		})
	}
	// A malformed base URL: the parse error would quote the path.
	err := (&HubSpot{BaseURL: "http://crm.invalid:port", Token: hsToken}).DeleteFields(ctx, "k", testUserID, []string{FieldEmail})
	require.Error(t, err)
	assert.NotContains(t, err.Error(), testUserID)
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// An error answer that quotes the contact's id does not carry it on.
func TestErrorAnswersNameNoContact(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, `{"category":"VALIDATION_ERROR","message":"contact `+testUserID+` is invalid","error":"contact `+testUserID+` is invalid"}`)
	}))
	defer srv.Close()
	h := &HubSpot{BaseURL: srv.URL, Token: hsToken}
	w := &Webhook{URL: srv.URL, Secret: whSecret}
	for _, c := range []Client{h, w} {
		for _, err := range []error{c.Delete(ctx, "k", testUserID), c.SetMarketing(ctx, "k", testUserID, false),
			c.Upsert(ctx, "k", Contact{ExternalID: testUserID}), c.DeleteFields(ctx, "k", testUserID, []string{FieldPhone})} {
			require.Error(t, err)
			assert.NotContains(t, err.Error(), testUserID)
			assert.Contains(t, err.Error(), "is invalid")
		}
	}
}
