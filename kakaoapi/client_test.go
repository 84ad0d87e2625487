package kakaoapi

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
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/setflow/setflow/internal/httpx"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const (
	testKey   = "adm1n-k3y-5ecret-0123456789abcdef"
	testEmail = "jiwoo.kim@example.co.kr"
	testNick  = "지우짱"
	testPhone = "+82 10-1234-5678"
)

// meBody is shaped like Kakao's documented GET /v2/user/me answer.
const meBody = `{
  "id": 1234567890,
  "connected_at": "2024-03-01T09:30:00Z",
  "kakao_account": {
    "profile_nickname_needs_agreement": false,
    "profile": {"nickname": "` + testNick + `", "is_default_nickname": false},
    "email_needs_agreement": false,
    "is_email_valid": true,
    "is_email_verified": true,
    "email": "` + testEmail + `",
    "phone_number_needs_agreement": false,
    "phone_number": "` + testPhone + `"
  }
}`

// kakao is a local stand-in following Kakao's documented contract: admin-key
// auth, form parameters, {"id"} on logout/unlink, {"msg","code"} on errors.
type kakao struct {
	t     *testing.T
	calls atomic.Int32
	// handle answers a request that passed the documented checks.
	handle func(w http.ResponseWriter, r *http.Request)
	last   atomic.Pointer[http.Request]
	form   atomic.Pointer[string]
}

func newKakao(t *testing.T, handle func(w http.ResponseWriter, r *http.Request)) (*kakao, *Client) {
	k := &kakao{t: t, handle: handle}
	srv := httptest.NewServer(k)
	t.Cleanup(srv.Close)
	return k, &Client{BaseURL: srv.URL, AdminKey: testKey, HTTP: srv.Client()}
}

func (k *kakao) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	k.calls.Add(1)
	body, _ := io.ReadAll(r.Body)
	s := string(body)
	k.form.Store(&s)
	k.last.Store(r)
	if r.Header.Get("Authorization") != "KakaoAK "+testKey {
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, `{"msg":"wrong appKey format","code":-401}`)
		return
	}
	k.handle(w, r)
}

func writeJSON(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/json;charset=UTF-8")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

func TestLogoutAndUnlinkRequestShape(t *testing.T) {
	for _, tc := range []struct {
		name string
		path string
		call func(*Client, context.Context, string) error
	}{
		{"logout", "/v1/user/logout", (*Client).Logout},
		{"unlink", "/v1/user/unlink", (*Client).Unlink},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, c := newKakao(t, func(w http.ResponseWriter, r *http.Request) {
				writeJSON(w, 200, `{"id":1234567890}`)
			})
			require.NoError(t, tc.call(c, context.Background(), "1234567890"))

			r := k.last.Load()
			assert.Equal(t, http.MethodPost, r.Method)
			assert.Equal(t, tc.path, r.URL.Path)
			assert.Empty(t, r.URL.RawQuery, "parameters go in the form body")
			assert.Equal(t, "KakaoAK "+testKey, r.Header.Get("Authorization"))
			assert.Equal(t, "application/x-www-form-urlencoded;charset=utf-8", r.Header.Get("Content-Type"))
			assert.Equal(t, "target_id=1234567890&target_id_type=user_id", *k.form.Load())
		})
	}
}

func TestLogoutRejectsAnswerForAnotherUser(t *testing.T) {
	_, c := newKakao(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, `{"id":42}`)
	})
	err := c.Logout(context.Background(), "1234567890")
	require.Error(t, err)
	assert.False(t, httpx.IsRetryable(err))
}

func TestProfileRequestAndDecode(t *testing.T) {
	k, c := newKakao(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, meBody)
	})
	p, err := c.Profile(context.Background(), "1234567890")
	require.NoError(t, err)

	r := k.last.Load()
	assert.Equal(t, http.MethodGet, r.Method)
	assert.Equal(t, "/v2/user/me", r.URL.Path)
	assert.Equal(t, "user_id", r.URL.Query().Get("target_id_type"))
	assert.Equal(t, "1234567890", r.URL.Query().Get("target_id"))
	assert.Equal(t, "KakaoAK "+testKey, r.Header.Get("Authorization"))

	assert.Equal(t, int64(1234567890), p.ID)
	assert.Equal(t, testEmail, p.Email)
	assert.True(t, p.EmailValid)
	assert.True(t, p.EmailVerified)
	assert.Equal(t, testNick, p.Nickname)
	assert.Equal(t, testPhone, p.PhoneNumber)
	assert.Equal(t, time.Date(2024, 3, 1, 9, 30, 0, 0, time.UTC), p.ConnectedAt.UTC())
	assert.JSONEq(t, meBody, string(p.Raw))
	assert.Equal(t, testEmail, p.UsableEmail())
}

func TestProfileWithoutConsentOrInvalidEmail(t *testing.T) {
	_, c := newKakao(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, `{"id":7,"kakao_account":{"email_needs_agreement":false,"is_email_valid":false,"is_email_verified":true,"email":"old@example.com"}}`)
	})
	p, err := c.Profile(context.Background(), "7")
	require.NoError(t, err)
	assert.Equal(t, "old@example.com", p.Email)
	assert.Empty(t, p.UsableEmail(), "an expired address must not be used")
	assert.Empty(t, p.Nickname)
	assert.True(t, p.ConnectedAt.IsZero())
}

func TestProfileRejectsWrongOrMissingID(t *testing.T) {
	for _, body := range []string{
		`{"id":99,"kakao_account":{"email":"` + testEmail + `"}}`,
		`{"kakao_account":{"email":"` + testEmail + `"}}`,
		`{"id": "` + testEmail + `"`, // not JSON at all
	} {
		_, c := newKakao(t, func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, body) })
		p, err := c.Profile(context.Background(), "1234567890")
		require.Error(t, err, body)
		assert.Nil(t, p)
		assert.False(t, httpx.IsRetryable(err))
		assert.NotContains(t, err.Error(), testEmail)
	}
}

func TestNotLinkedIsDistinct(t *testing.T) {
	_, c := newKakao(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 400, `{"msg":"NotRegisteredUserException","code":-101}`)
	})
	ctx := context.Background()
	for name, err := range map[string]error{
		"logout":  c.Logout(ctx, "55"),
		"unlink":  c.Unlink(ctx, "55"),
		"profile": func() error { _, err := c.Profile(ctx, "55"); return err }(),
	} {
		require.ErrorIs(t, err, ErrNotLinked, name)
		assert.False(t, httpx.IsRetryable(err), name)
		var ae *APIError
		require.ErrorAs(t, err, &ae)
		assert.Equal(t, CodeNotLinked, ae.Code)
		assert.Equal(t, 400, ae.Status)
	}
	// Other errors must not match ErrNotLinked.
	_, c2 := newKakao(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 400, `{"msg":"invalid target_id","code":-2}`)
	})
	assert.NotErrorIs(t, c2.Logout(ctx, "55"), ErrNotLinked)
}

func TestClassification(t *testing.T) {
	for _, tc := range []struct {
		name       string
		status     int
		body       string
		retryAfter string
		retryable  bool
		code       int
		wantDelay  time.Duration
	}{
		{"429 seconds", 429, `{"msg":"too many requests"}`, "7", true, 0, 7 * time.Second},
		{"429 no header", 429, ``, "", true, 0, 0},
		{"500", 500, `{"msg":"internal","code":-1}`, "", true, -1, 0},
		{"502 html", 502, `<html>bad gateway</html>`, "", true, 0, 0},
		{"503 maintenance", 503, `{"msg":"under maintenance","code":-9798}`, "120", true, -9798, 120 * time.Second},
		{"408", 408, ``, "", true, 0, 0},
		{"-1 internal", 400, `{"msg":"internal error","code":-1}`, "", true, -1, 0},
		{"-7 maintenance", 400, `{"msg":"service check","code":-7}`, "", true, -7, 0},
		{"-10 quota", 400, `{"msg":"quota exceeded","code":-10}`, "30", true, -10, 30 * time.Second},
		{"-603 timeout", 400, `{"msg":"timeout","code":-603}`, "", true, -603, 0},
		{"-2 invalid argument", 400, `{"msg":"invalid target_id","code":-2}`, "5", false, -2, 0},
		{"-3 not enabled", 403, `{"msg":"not enabled","code":-3}`, "", false, -3, 0},
		{"-9 api retired", 400, `{"msg":"api terminated","code":-9}`, "", false, -9, 0},
		{"-401 bad key", 401, `{"msg":"wrong appKey","code":-401}`, "", false, -401, 0},
		{"404 html", 404, `<html>not found</html>`, "", false, 0, 0},
		{"kauth style", 400, `{"error":"invalid_request","error_description":"bad","error_code":"KOE010"}`, "", false, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, c := newKakao(t, func(w http.ResponseWriter, r *http.Request) {
				if tc.retryAfter != "" {
					w.Header().Set("Retry-After", tc.retryAfter)
				}
				writeJSON(w, tc.status, tc.body)
			})
			err := c.Logout(context.Background(), "1234567890")
			var ae *APIError
			require.ErrorAs(t, err, &ae)
			assert.Equal(t, tc.status, ae.Status)
			assert.Equal(t, tc.code, ae.Code)
			assert.Equal(t, tc.retryable, httpx.IsRetryable(err))
			_, d := httpx.RetryOf(err)
			assert.Equal(t, tc.wantDelay, d)
			assert.NotEmpty(t, ae.Msg)
			assert.Contains(t, err.Error(), fmt.Sprintf("HTTP %d", tc.status))
		})
	}
}

func TestRetryAfterHTTPDate(t *testing.T) {
	_, c := newKakao(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", time.Now().Add(30*time.Second).UTC().Format(http.TimeFormat))
		writeJSON(w, 429, `{}`)
	})
	err := c.Unlink(context.Background(), "1")
	require.True(t, httpx.IsRetryable(err))
	_, d := httpx.RetryOf(err)
	require.Positive(t, d)
	// HTTP-date has one-second resolution.
	assert.InDelta(t, 30*time.Second, d, float64(2*time.Second))
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
		{" 12 ", 12 * time.Second, true},
		{"-3", 0, false},
		{"soon", 0, false},
		{"1.5", 0, false},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0, true},
		{"Thursday, 02-Jan-25 03:05:05 GMT", time.Minute, true}, // RFC 850 form
		{"99999999999999999999", 0, false},                      // overflows int64
	} {
		got, ok := parseRetryAfter(tc.in, now)
		assert.Equal(t, tc.want, got, tc.in)
		assert.Equal(t, tc.ok, ok, tc.in)
	}
	big, ok := parseRetryAfter("9223372036854775807", now)
	assert.True(t, ok)
	assert.Positive(t, big, "a huge delay must not overflow into a negative duration")
}

func TestTimeoutIsRetryableAndQuick(t *testing.T) {
	_, c := newKakao(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	})
	c.Timeout = 100 * time.Millisecond
	start := time.Now()
	err := c.Logout(context.Background(), "1")
	elapsed := time.Since(start)
	require.Error(t, err)
	assert.Less(t, elapsed, time.Second)
	assert.True(t, httpx.IsRetryable(err))
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.NotContains(t, err.Error(), testKey)
}

func TestDefaultsBaseURLAndTimeout(t *testing.T) {
	var gotURL string
	var gotDeadline time.Duration
	c := &Client{AdminKey: testKey, HTTP: &http.Client{Transport: roundTrip(func(r *http.Request) (*http.Response, error) {
		gotURL = r.URL.String()
		dl, ok := r.Context().Deadline()
		require.True(t, ok, "every call needs a deadline")
		gotDeadline = time.Until(dl)
		return &http.Response{StatusCode: 200, Body: io.NopCloser(strings.NewReader(`{"id":5}`)), Header: http.Header{}}, nil
	})}}
	require.NoError(t, c.Logout(context.Background(), "5"))
	assert.Equal(t, "https://kapi.kakao.com/v1/user/logout", gotURL)
	assert.InDelta(t, DefaultTimeout, gotDeadline, float64(time.Second))
	assert.Equal(t, 5*time.Second, DefaultTimeout)
}

type roundTrip func(*http.Request) (*http.Response, error)

func (f roundTrip) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestCallerCancelIsNotRetryable(t *testing.T) {
	k, c := newKakao(t, func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, `{"id":1}`) })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := c.Logout(ctx, "1")
	require.ErrorIs(t, err, context.Canceled)
	assert.False(t, httpx.IsRetryable(err))
	assert.Zero(t, k.calls.Load())
}

func TestConnectionRefusedIsRetryable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	base := srv.URL
	srv.Close()
	c := &Client{BaseURL: base, AdminKey: testKey}
	err := c.Unlink(context.Background(), "1")
	require.Error(t, err)
	assert.True(t, httpx.IsRetryable(err))
	_, d := httpx.RetryOf(err)
	assert.Zero(t, d)
}

func TestLocalValidationMakesNoCall(t *testing.T) {
	k, c := newKakao(t, func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, `{"id":1}`) })
	for _, id := range []string{"", "abc", "-5", "0", "01", "+1", " 1", testEmail, "99999999999999999999"} {
		err := c.Logout(context.Background(), id)
		require.Error(t, err, id)
		assert.False(t, httpx.IsRetryable(err), id)
		if id != "" {
			assert.NotContains(t, err.Error(), id, "the bad value is not echoed")
		}
		_, err = c.Profile(context.Background(), id)
		require.Error(t, err, id)
	}
	noKey := &Client{BaseURL: c.BaseURL, HTTP: c.HTTP}
	err := noKey.Unlink(context.Background(), "1")
	require.Error(t, err)
	assert.False(t, httpx.IsRetryable(err))
	assert.Zero(t, k.calls.Load())
}

func TestErrorsNeverCarrySecretsOrPII(t *testing.T) {
	// A hostile or broken upstream echoes the Authorization header and
	// personal data into its error message.
	for _, status := range []int{400, 429, 500} {
		_, c := newKakao(t, func(w http.ResponseWriter, r *http.Request) {
			msg := "bad request from " + r.Header.Get("Authorization") + " for " + testEmail
			b, _ := json.Marshal(map[string]any{"msg": msg, "code": -2})
			writeJSON(w, status, string(b))
		})
		for _, err := range []error{
			c.Logout(context.Background(), "1"),
			func() error { _, err := c.Profile(context.Background(), "1"); return err }(),
		} {
			require.Error(t, err)
			s := err.Error()
			assert.NotContains(t, s, testKey)
			assert.NotContains(t, s, testEmail)
			assert.Contains(t, s, "[redacted]")
		}
	}
	// Wrong key: the 401 path must not quote the key we sent either.
	_, c := newKakao(t, nil)
	c.AdminKey = "another-secret-key-value"
	err := c.Logout(context.Background(), "1")
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "another-secret-key-value")
	assert.False(t, httpx.IsRetryable(err))
}

func TestPrintingAndLoggingHideSecretsAndPII(t *testing.T) {
	_, c := newKakao(t, func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, meBody) })
	p, err := c.Profile(context.Background(), "1234567890")
	require.NoError(t, err)

	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	log.Info("x", "client", *c, "profile", *p, "pprofile", p)
	slog.New(slog.NewTextHandler(&buf, nil)).Info("y", "client", c, "profile", p)
	for _, f := range []string{"%v", "%+v", "%#v", "%s"} {
		fmt.Fprintf(&buf, f+"\n", *c)
		fmt.Fprintf(&buf, f+"\n", c)
		fmt.Fprintf(&buf, f+"\n", *p)
		fmt.Fprintf(&buf, f+"\n", p)
	}
	out := buf.String()
	for _, secret := range []string{testKey, testEmail, testNick, testPhone, "1234567890"} {
		assert.NotContains(t, out, secret)
	}
	assert.Contains(t, out, "has_id", "the log says a profile was there")
}

// testUserID cannot appear in an error text by accident.
const testUserID = "90817263544"

// hijacker accepts each request and closes the connection without an answer.
func hijacker(t *testing.T) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// A transport failure (no answer, a refused connection, a timeout, a
// malformed base URL) names neither the user nor the admin key: net/http's
// *url.Error quotes the request URL, whose query carries target_id.
func TestTransportErrorsNameNoUser(t *testing.T) {
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body) // else the server cannot see the client go
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	}))
	defer slow.Close()
	echo := roundTrip(func(r *http.Request) (*http.Response, error) {
		// A transport (a proxy library, say) that repeats the URL in its error.
		return nil, fmt.Errorf("proxy refused %s (user %s)", r.URL, testUserID)
	})
	for name, c := range map[string]*Client{
		"no answer":      {BaseURL: hijacker(t), AdminKey: testKey},
		"refused":        {BaseURL: closed.URL, AdminKey: testKey},
		"timeout":        {BaseURL: slow.URL, AdminKey: testKey, Timeout: 50 * time.Millisecond},
		"echoing":        {BaseURL: "http://kapi.invalid", AdminKey: testKey, HTTP: &http.Client{Transport: echo}},
		"malformed base": {BaseURL: "http://user:pw@kapi.invalid:port", AdminKey: testKey},
	} {
		t.Run(name, func(t *testing.T) {
			_, perr := c.Profile(context.Background(), testUserID)
			lerr := c.Logout(context.Background(), testUserID)
			uerr := c.Unlink(context.Background(), testUserID)
			for _, err := range []error{perr, lerr, uerr} {
				require.Error(t, err)
				text := err.Error()
				assert.NotContains(t, text, testUserID)
				if name != "echoing" { // there the id is masked where the transport quotes it
					assert.NotContains(t, text, "target_id")
				}
				assert.NotContains(t, text, testKey)
				assert.NotContains(t, text, "pw@")
				assert.NotContains(t, fmt.Sprintf("%+v", err), testUserID)
				t.Log(text)
			}
			if name != "malformed base" {
				assert.True(t, httpx.IsRetryable(perr), "a transport failure stays retryable")
				// The operator still sees where the call went.
				assert.Contains(t, perr.Error(), "/v2/user/me")
			}
		})
	}
	// The cause is still there for errors.Is.
	c := &Client{BaseURL: slow.URL, AdminKey: testKey, Timeout: 50 * time.Millisecond}
	_, err := c.Profile(context.Background(), testUserID)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
}

// Kakao's own message is not trusted to leave the user id out.
func TestErrorMessageNamesNoUser(t *testing.T) {
	_, c := newKakao(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 400, `{"msg":"target_id `+testUserID+` is not registered (see 908172635440)","code":-2}`)
	})
	_, err := c.Profile(context.Background(), testUserID)
	require.Error(t, err)
	assert.NotContains(t, strings.ReplaceAll(err.Error(), "908172635440", ""), testUserID)
	assert.Contains(t, err.Error(), "908172635440", "a longer number is not cut up")
}

func TestHelpersOnWrappedAndForeignErrors(t *testing.T) {
	e := &APIError{Op: "logout", Retry: httpx.Retry{Status: 429, CanRetry: true, Delay: 3 * time.Second}}
	wrapped := fmt.Errorf("activity: %w", e)
	assert.True(t, httpx.IsRetryable(wrapped))
	_, d := httpx.RetryOf(wrapped)
	assert.Equal(t, 3*time.Second, d)

	assert.False(t, httpx.IsRetryable(errors.New("other")))
	assert.False(t, httpx.IsRetryable(nil))
	_, d = httpx.RetryOf(errors.New("other"))
	assert.Zero(t, d)
	// A non-retryable error carries no delay even if one was recorded.
	_, d = httpx.RetryOf(&APIError{Retry: httpx.Retry{Delay: time.Second}})
	assert.Zero(t, d)
	assert.Contains(t, e.Error(), "retryable after 3s")
}

func TestRedirectToGetIsNotSuccess(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/user/logout", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/elsewhere", http.StatusFound)
	})
	mux.HandleFunc("/elsewhere", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, `{"id":1}`) })
	srv := httptest.NewServer(mux)
	defer srv.Close()
	err := (&Client{BaseURL: srv.URL, AdminKey: testKey}).Logout(context.Background(), "1")
	require.Error(t, err)
	assert.False(t, httpx.IsRetryable(err))
	assert.Contains(t, err.Error(), "redirected")
}
