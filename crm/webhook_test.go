package crm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/setflow/setflow/internal/httpx"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var whSecret = []byte("whsec_5f2b9c0e7d4a41b8a6c3e9f0d1b2a3c4")

// receiver is a local stand-in for a service's endpoint that follows the
// documented contract: verify the signature with Verify, deduplicate on
// Idempotency-Key (409 on a repeat), answer 2xx.
type receiver struct {
	mu     sync.Mutex
	seen   map[string]bool
	docs   []Document
	reqs   []recorded
	inject []func(w http.ResponseWriter)
	verify []error
}

func newReceiver(t *testing.T) (*receiver, *Webhook) {
	rc := &receiver{seen: map[string]bool{}}
	srv := httptest.NewServer(rc)
	t.Cleanup(srv.Close)
	return rc, &Webhook{URL: srv.URL + "/hooks/crm", Secret: whSecret, HTTP: srv.Client()}
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.reqs = append(rc.reqs, recorded{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Clone(), body})
	err := Verify(whSecret, r.Header.Get(HeaderSignature), r.Header.Get(HeaderTimestamp), body, 0)
	rc.verify = append(rc.verify, err)
	if len(rc.inject) > 0 {
		f := rc.inject[0]
		rc.inject = rc.inject[1:]
		f(w)
		return
	}
	if err != nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, `{"error":"bad signature"}`)
		return
	}
	key := r.Header.Get(HeaderIdempotencyKey)
	if rc.seen[key] {
		w.WriteHeader(http.StatusConflict)
		return
	}
	var d Document
	if json.Unmarshal(body, &d) != nil || d.IdempotencyKey != key {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	rc.seen[key] = true
	rc.docs = append(rc.docs, d)
	w.WriteHeader(http.StatusAccepted)
}

func (rc *receiver) answer(fs ...func(w http.ResponseWriter)) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.inject = append(rc.inject, fs...)
}

func (rc *receiver) snapshot() ([]recorded, []Document, []error) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]recorded(nil), rc.reqs...), append([]Document(nil), rc.docs...), append([]error(nil), rc.verify...)
}

func TestWebhookRequestShapeForEachType(t *testing.T) {
	rc, wh := newReceiver(t)
	fixed := time.Now().Truncate(time.Second)
	wh.Now = func() time.Time { return fixed }

	c := Contact{ExternalID: "1234567890", Email: testEmail, Nickname: testNick, Phone: testPhone,
		Properties: map[string]string{"plan": "pro"}}
	require.NoError(t, wh.Upsert(ctx, "evt-1:crm", c))
	require.NoError(t, wh.Delete(ctx, "evt-2:crm", "1234567890"))
	require.NoError(t, wh.SetMarketing(ctx, "evt-3:crm", "1234567890", false))
	require.NoError(t, wh.DeleteFields(ctx, "evt-4:crm", "1234567890", []string{FieldEmail, "plan"}))

	reqs, docs, verr := rc.snapshot()
	require.Len(t, reqs, 4)
	for i, r := range reqs {
		assert.Equal(t, http.MethodPost, r.Method)
		assert.Equal(t, "/hooks/crm", r.Path)
		assert.Equal(t, "application/json", r.Header.Get("Content-Type"))
		assert.Equal(t, strconv.FormatInt(fixed.Unix(), 10), r.Header.Get(HeaderTimestamp))
		assert.Equal(t, Sign(whSecret, fixed.Unix(), r.Body), r.Header.Get(HeaderSignature))
		assert.NoError(t, verr[i])
		assert.Equal(t, docs[i].IdempotencyKey, r.Header.Get(HeaderIdempotencyKey))
	}
	assert.JSONEq(t, `{"type":"contact.upsert","idempotency_key":"evt-1:crm","occurred_at":"`+fixed.UTC().Format(time.RFC3339)+`",
		"contact":{"external_id":"1234567890","email":"`+testEmail+`","nickname":"`+testNick+`","phone":"`+testPhone+`","properties":{"plan":"pro"}}}`,
		string(reqs[0].Body))
	assert.JSONEq(t, `{"type":"contact.delete","idempotency_key":"evt-2:crm","occurred_at":"`+fixed.UTC().Format(time.RFC3339)+`",
		"contact":{"external_id":"1234567890"}}`, string(reqs[1].Body))
	assert.JSONEq(t, `{"type":"contact.marketing","idempotency_key":"evt-3:crm","occurred_at":"`+fixed.UTC().Format(time.RFC3339)+`",
		"contact":{"external_id":"1234567890","marketing_subscribed":false}}`, string(reqs[2].Body),
		"false must be sent, not omitted")
	assert.JSONEq(t, `{"type":"contact.fields_deleted","idempotency_key":"evt-4:crm","occurred_at":"`+fixed.UTC().Format(time.RFC3339)+`",
		"contact":{"external_id":"1234567890","deleted_fields":["email","plan"]}}`, string(reqs[3].Body))

	// No fields: nothing to send.
	require.NoError(t, wh.DeleteFields(ctx, "evt-5:crm", "1", nil))
	reqs, _, _ = rc.snapshot()
	assert.Len(t, reqs, 4)
}

func TestWebhookIdempotencyKeyStableAcrossRetries(t *testing.T) {
	rc, wh := newReceiver(t)
	clock := time.Now()
	wh.Now = func() time.Time { clock = clock.Add(time.Second); return clock }
	rc.answer(func(w http.ResponseWriter) { w.WriteHeader(http.StatusServiceUnavailable) })

	err := wh.SetMarketing(ctx, "evt-9:crm-marketing", "5", true)
	require.True(t, httpx.IsRetryable(err))
	require.NoError(t, wh.SetMarketing(ctx, "evt-9:crm-marketing", "5", true)) // retry delivered
	require.NoError(t, wh.SetMarketing(ctx, "evt-9:crm-marketing", "5", true)) // duplicate: receiver says 409

	reqs, docs, _ := rc.snapshot()
	require.Len(t, reqs, 3)
	for _, r := range reqs {
		assert.Equal(t, "evt-9:crm-marketing", r.Header.Get(HeaderIdempotencyKey))
		var d Document
		require.NoError(t, json.Unmarshal(r.Body, &d))
		assert.Equal(t, "evt-9:crm-marketing", d.IdempotencyKey)
	}
	assert.Len(t, docs, 1, "the receiver applied it once")
	// Each attempt is signed afresh with its own timestamp.
	assert.NotEqual(t, reqs[1].Header.Get(HeaderTimestamp), reqs[2].Header.Get(HeaderTimestamp))
}

func TestWebhookClassification(t *testing.T) {
	retryAt := time.Now().Add(45 * time.Second).UTC().Format(http.TimeFormat)
	for _, tc := range []struct {
		name        string
		status      int
		header      map[string]string
		body        string
		ok          bool
		retryable   bool
		delay       time.Duration
		delta       time.Duration
		reasonHas   string
		rateLimited bool
	}{
		{"200", 200, nil, "", true, false, 0, 0, "", false},
		{"204", 204, nil, "", true, false, 0, 0, "", false},
		{"409 already processed", 409, nil, `{"error":"duplicate"}`, true, false, 0, 0, "", false},
		{"429 seconds", 429, map[string]string{"Retry-After": "30"}, "", false, true, 30 * time.Second, 0, "Too Many Requests", true},
		{"429 http-date", 429, map[string]string{"Retry-After": retryAt}, "", false, true, 45 * time.Second, 2 * time.Second, "", true},
		{"500", 500, nil, "", false, true, 0, 0, "Internal Server Error", false},
		{"503 retry-after", 503, map[string]string{"Retry-After": "4"}, "", false, true, 4 * time.Second, 0, "", false},
		{"408", 408, nil, "", false, true, 0, 0, "", false},
		{"400 json reason", 400, map[string]string{"Content-Type": "application/json"}, `{"error":"unknown field","message":"contact.phone must be E.164"}`, false, false, 0, 0, "unknown field contact.phone must be E.164", false},
		{"422 text reason", 422, map[string]string{"Content-Type": "text/plain; charset=utf-8"}, "external_id not known", false, false, 0, 0, "external_id not known", false},
		{"404", 404, nil, "", false, false, 0, 0, "Not Found", false},
		{"401", 401, map[string]string{"Retry-After": "9"}, "", false, false, 0, 0, "Unauthorized", false},
		{"html 403", 403, map[string]string{"Content-Type": "text/html"}, "<html>" + testEmail + "</html>", false, false, 0, 0, "Forbidden", false},
		{"redirect not followed", 304, nil, "", false, false, 0, 0, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc, wh := newReceiver(t)
			rc.answer(func(w http.ResponseWriter) {
				for k, v := range tc.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(tc.status)
				_, _ = io.WriteString(w, tc.body)
			})
			err := wh.Delete(ctx, "k", "1")
			if tc.ok {
				require.NoError(t, err)
				return
			}
			var e *Error
			require.ErrorAs(t, err, &e)
			assert.Equal(t, "webhook", e.Adapter)
			assert.Equal(t, "delete", e.Op)
			assert.Equal(t, tc.status, e.Status)
			assert.Equal(t, tc.retryable, httpx.IsRetryable(err))
			_, d := httpx.RetryOf(err)
			assert.InDelta(t, tc.delay, d, float64(tc.delta))
			assert.Equal(t, tc.delay > 0, d > 0)
			assert.Equal(t, tc.rateLimited, errors.Is(err, ErrRateLimited))
			assert.Contains(t, e.Reason, tc.reasonHas)
			assert.NotContains(t, err.Error(), testEmail)
		})
	}
}

func TestWebhookReasonNeverEchoesPIIOrSecret(t *testing.T) {
	rc, wh := newReceiver(t)
	rc.answer(func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(400)
		b, _ := json.Marshal(map[string]string{"error": "rejected " + testEmail + " " + testNick + " " + testPhone + " with " + string(whSecret)})
		_, _ = w.Write(b)
	})
	err := wh.Upsert(ctx, "k", Contact{ExternalID: "1", Email: testEmail, Nickname: testNick, Phone: testPhone})
	require.Error(t, err)
	s := err.Error()
	for _, v := range []string{testEmail, testNick, testPhone, string(whSecret)} {
		assert.NotContains(t, s, v)
	}
	assert.Contains(t, s, "rejected")
}

func TestWebhookTimeoutIsRetryableAndQuick(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Reading the body lets the server notice the client hanging up.
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	}))
	defer srv.Close()
	wh := &Webhook{URL: srv.URL + "/x?token=url-secret-token", Secret: whSecret, Timeout: 100 * time.Millisecond}
	start := time.Now()
	err := wh.Delete(ctx, "k", "1")
	assert.Less(t, time.Since(start), time.Second)
	require.Error(t, err)
	assert.True(t, httpx.IsRetryable(err))
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.NotContains(t, err.Error(), "url-secret-token", "transport errors do not repeat the URL")
}

func TestWebhookConnectionRefusedIsRetryable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	u := srv.URL
	srv.Close()
	err := (&Webhook{URL: u, Secret: whSecret}).Delete(ctx, "k", "1")
	require.Error(t, err)
	assert.True(t, httpx.IsRetryable(err))
}

func TestWebhookCallerCancelIsNotRetryable(t *testing.T) {
	rc, wh := newReceiver(t)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	err := wh.Delete(cctx, "k", "1")
	require.ErrorIs(t, err, context.Canceled)
	assert.False(t, httpx.IsRetryable(err))
	reqs, _, _ := rc.snapshot()
	assert.Empty(t, reqs)
}

func TestWebhookRefusesBadCallsLocally(t *testing.T) {
	rc, wh := newReceiver(t)
	for name, err := range map[string]error{
		"empty key":  wh.Upsert(ctx, "", Contact{ExternalID: "1"}),
		"empty id":   wh.Delete(ctx, "k", ""),
		"no secret":  (&Webhook{URL: wh.URL}).Delete(ctx, "k", "1"),
		"no url":     (&Webhook{Secret: whSecret}).Delete(ctx, "k", "1"),
		"bad url":    (&Webhook{URL: "http://[::1", Secret: whSecret}).Delete(ctx, "k", "1"),
		"id, fields": wh.DeleteFields(ctx, "k", "", []string{"email"}),
	} {
		require.Error(t, err, name)
		assert.False(t, httpx.IsRetryable(err), name)
	}
	reqs, _, _ := rc.snapshot()
	assert.Empty(t, reqs)
}

func TestWebhookRedirectToGetIsNotSuccess(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/old", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/new", http.StatusMovedPermanently)
	})
	mux.HandleFunc("/new", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(200) })
	srv := httptest.NewServer(mux)
	defer srv.Close()
	err := (&Webhook{URL: srv.URL + "/old", Secret: whSecret}).Delete(ctx, "k", "1")
	require.Error(t, err)
	assert.False(t, httpx.IsRetryable(err))
	assert.Contains(t, err.Error(), "redirected")
}

// The printed and logged forms of the adapter carry no credential from its URL.
func TestWebhookPrintsNoURLCredentials(t *testing.T) {
	w := Webhook{URL: "https://ops:hunter2-pass@crm.example.test/hook?token=tok-secret-9", Secret: []byte("s3cr3t-signing")}
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("crm", "adapter", w)
	for _, out := range []string{w.String(), fmt.Sprintf("%#v", w), buf.String()} {
		for _, secret := range []string{"hunter2-pass", "tok-secret-9", "s3cr3t-signing"} {
			if strings.Contains(out, secret) {
				t.Fatalf("%q shows %s", out, secret)
			}
		}
		if !strings.Contains(out, "crm.example.test/hook") {
			t.Fatalf("%q lost the host and path", out)
		}
	}
}
