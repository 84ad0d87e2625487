package crm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/mail"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/setflow/setflow/internal/httpx"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const (
	hsToken   = "pat-na1-11111111-2222-3333-4444-555555555555"
	testEmail = "jiwoo.kim@example.co.kr"
	testNick  = "지우짱"
	testPhone = "+82 10-1234-5678"
)

// hubspotStub is a local stand-in for HubSpot's CRM v3 contacts API as
// documented: bearer auth, batch upsert by a unique id property, GDPR delete
// (204; 404 when unknown), PATCH by idProperty ("" clears), JSON error bodies
// {status, message, correlationId, category} whose validation messages quote
// the offending value.
type hubspotStub struct {
	t  *testing.T
	mu sync.Mutex
	// contacts by kakao_user_id.
	contacts map[string]map[string]string
	// known is the portal's property schema.
	known map[string]bool
	// inject answers the next requests instead of the normal behaviour.
	inject []func(w http.ResponseWriter)
	reqs   []recorded
}

type recorded struct {
	Method, Path, RawQuery string
	Header                 http.Header
	Body                   []byte
}

func newHubSpot(t *testing.T) (*hubspotStub, *HubSpot) {
	s := &hubspotStub{t: t, contacts: map[string]map[string]string{}, known: map[string]bool{
		"kakao_user_id": true, "email": true, "firstname": true, "phone": true,
		"kakao_marketing_consent": true, "plan": true, "lifecyclestage": true,
	}}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return s, &HubSpot{BaseURL: srv.URL, Token: hsToken, HTTP: srv.Client()}
}

func (s *hubspotStub) requests() []recorded {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]recorded(nil), s.reqs...)
}

func hsError(w http.ResponseWriter, status int, category, msg string) {
	w.Header().Set("Content-Type", "application/json;charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{
		"status": "error", "message": msg, "category": category,
		"correlationId": "a43683b0-5717-4ceb-80b4-104d02915d8c",
	})
}

func (s *hubspotStub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reqs = append(s.reqs, recorded{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Clone(), body})
	if len(s.inject) > 0 {
		f := s.inject[0]
		s.inject = s.inject[1:]
		f(w)
		return
	}
	if r.Header.Get("Authorization") != "Bearer "+hsToken {
		hsError(w, 401, "INVALID_AUTHENTICATION", "Authentication credentials not found. Got "+r.Header.Get("Authorization"))
		return
	}
	if r.Header.Get("Content-Type") != "application/json" {
		hsError(w, 415, "VALIDATION_ERROR", "unsupported content type")
		return
	}
	const prefix = "/crm/v3/objects/contacts/"
	switch {
	case r.Method == http.MethodPost && r.URL.Path == prefix+"batch/upsert":
		s.upsert(w, body)
	case r.Method == http.MethodPost && r.URL.Path == prefix+"gdpr-delete":
		var in struct{ ObjectID, IDProperty string }
		if json.Unmarshal(body, &in) != nil || in.ObjectID == "" || in.IDProperty != "kakao_user_id" {
			hsError(w, 400, "VALIDATION_ERROR", "Invalid input JSON")
			return
		}
		if _, ok := s.contacts[in.ObjectID]; !ok {
			hsError(w, 404, "OBJECT_NOT_FOUND", "resource not found")
			return
		}
		delete(s.contacts, in.ObjectID)
		w.WriteHeader(http.StatusNoContent)
	case r.Method == http.MethodPatch && strings.HasPrefix(r.URL.Path, prefix):
		id := strings.TrimPrefix(r.URL.Path, prefix)
		if r.URL.Query().Get("idProperty") != "kakao_user_id" {
			hsError(w, 404, "OBJECT_NOT_FOUND", "resource not found") // would be read as a HubSpot record id
			return
		}
		c, ok := s.contacts[id]
		if !ok {
			hsError(w, 404, "OBJECT_NOT_FOUND", "resource not found")
			return
		}
		var in struct{ Properties map[string]string }
		if json.Unmarshal(body, &in) != nil {
			hsError(w, 400, "VALIDATION_ERROR", "Invalid input JSON")
			return
		}
		if msg := s.validate(in.Properties); msg != "" {
			hsError(w, 400, "VALIDATION_ERROR", msg)
			return
		}
		for k, v := range in.Properties {
			if v == "" {
				delete(c, k)
			} else {
				c[k] = v
			}
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"id": "101", "properties": c})
	default:
		hsError(w, 404, "", "Not Found")
	}
}

func (s *hubspotStub) validate(props map[string]string) string {
	for k, v := range props {
		if !s.known[k] {
			return fmt.Sprintf("Property values were not valid: [{\"isValid\":false,\"message\":\"Property \\\"%s\\\" does not exist\",\"error\":\"PROPERTY_DOESNT_EXIST\",\"name\":\"%s\"}]", k, k)
		}
		if k == "email" && v != "" {
			if _, err := mail.ParseAddress(v); err != nil {
				return fmt.Sprintf("Property values were not valid: [{\"isValid\":false,\"message\":\"Email address %s is invalid\",\"error\":\"INVALID_EMAIL\",\"name\":\"email\"}]", v)
			}
		}
	}
	return ""
}

func (s *hubspotStub) upsert(w http.ResponseWriter, body []byte) {
	var in struct {
		Inputs []upsertInput `json:"inputs"`
	}
	if json.Unmarshal(body, &in) != nil || len(in.Inputs) == 0 {
		hsError(w, 400, "VALIDATION_ERROR", "Invalid input JSON")
		return
	}
	var results []map[string]any
	for _, input := range in.Inputs {
		if input.IDProperty != "kakao_user_id" || input.ID == "" {
			hsError(w, 400, "VALIDATION_ERROR", "idProperty must be a unique property")
			return
		}
		if msg := s.validate(input.Properties); msg != "" {
			hsError(w, 400, "VALIDATION_ERROR", msg)
			return
		}
		c, ok := s.contacts[input.ID]
		if !ok {
			c = map[string]string{"kakao_user_id": input.ID}
			s.contacts[input.ID] = c
		}
		for k, v := range input.Properties {
			c[k] = v
		}
		results = append(results, map[string]any{"id": "101", "new": !ok, "properties": c, "objectWriteTraceId": input.ObjectWriteTraceID})
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"status": "COMPLETE", "results": results,
		"startedAt": time.Now().UTC(), "completedAt": time.Now().UTC()})
}

func (s *hubspotStub) contact(id string) map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.contacts[id]
	if !ok {
		return nil
	}
	out := map[string]string{}
	for k, v := range c {
		out[k] = v
	}
	return out
}

func (s *hubspotStub) answer(fs ...func(w http.ResponseWriter)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inject = append(s.inject, fs...)
}

var ctx = context.Background()

func TestHubSpotUpsertRequestShapeAndEffect(t *testing.T) {
	s, h := newHubSpot(t)
	c := Contact{ExternalID: "1234567890", Email: testEmail, Nickname: testNick, Phone: testPhone,
		Properties: map[string]string{"plan": "pro", "email": "ignored@example.com", "kakao_user_id": "999"}}
	require.NoError(t, h.Upsert(ctx, "evt-1:crm-upsert", c))

	reqs := s.requests()
	require.Len(t, reqs, 1)
	r := reqs[0]
	assert.Equal(t, http.MethodPost, r.Method)
	assert.Equal(t, "/crm/v3/objects/contacts/batch/upsert", r.Path)
	assert.Equal(t, "Bearer "+hsToken, r.Header.Get("Authorization"))
	assert.Equal(t, "application/json", r.Header.Get("Content-Type"))
	assert.JSONEq(t, `{"inputs":[{
		"id":"1234567890","idProperty":"kakao_user_id","objectWriteTraceId":"evt-1:crm-upsert",
		"properties":{"email":"`+testEmail+`","firstname":"`+testNick+`","phone":"`+testPhone+`","plan":"pro"}}]}`,
		string(r.Body), "typed fields win; the id property is never written from Properties")

	assert.Equal(t, map[string]string{"kakao_user_id": "1234567890", "email": testEmail,
		"firstname": testNick, "phone": testPhone, "plan": "pro"}, s.contact("1234567890"))
}

func TestHubSpotUpsertIsRepeatableAndPartialUpdatesKeepFields(t *testing.T) {
	s, h := newHubSpot(t)
	c := Contact{ExternalID: "7", Email: testEmail, Nickname: testNick}
	require.NoError(t, h.Upsert(ctx, "k1", c))
	require.NoError(t, h.Upsert(ctx, "k1", c)) // a retry
	reqs := s.requests()
	require.Len(t, reqs, 2)
	assert.Equal(t, reqs[0].Body, reqs[1].Body, "a retry sends the same request")
	assert.Len(t, s.contacts, 1)

	// A later profile refresh without the email must not blank it.
	require.NoError(t, h.Upsert(ctx, "k2", Contact{ExternalID: "7", Nickname: "새닉"}))
	assert.Equal(t, testEmail, s.contact("7")["email"])
	assert.Equal(t, "새닉", s.contact("7")["firstname"])
}

func TestHubSpotCustomPropertyNames(t *testing.T) {
	s, h := newHubSpot(t)
	s.known["kakao_id"] = true
	s.known["nick"] = true
	s.known["mkt"] = true
	h.IDProperty, h.NicknameProperty, h.MarketingProperty = "kakao_id", "nick", "mkt"
	// The stub insists on kakao_user_id, so inspect the requests only.
	okBody := func(status int, body string) func(w http.ResponseWriter) {
		return func(w http.ResponseWriter) { w.WriteHeader(status); _, _ = io.WriteString(w, body) }
	}
	batch := `{"status":"COMPLETE","results":[]}`
	s.answer(okBody(200, batch), okBody(200, batch), okBody(204, ""), okBody(200, "{}"))
	require.NoError(t, h.Upsert(ctx, "k", Contact{ExternalID: "5", Nickname: "n"}))
	require.NoError(t, h.SetMarketing(ctx, "k", "5", true))
	require.NoError(t, h.Delete(ctx, "k", "5"))
	require.NoError(t, h.DeleteFields(ctx, "k", "5", []string{FieldNickname, "kakao_id"}))
	reqs := s.requests()
	assert.JSONEq(t, `{"inputs":[{"id":"5","idProperty":"kakao_id","objectWriteTraceId":"k","properties":{"nick":"n"}}]}`, string(reqs[0].Body))
	assert.JSONEq(t, `{"inputs":[{"id":"5","idProperty":"kakao_id","objectWriteTraceId":"k","properties":{"mkt":"true"}}]}`, string(reqs[1].Body))
	assert.JSONEq(t, `{"objectId":"5","idProperty":"kakao_id"}`, string(reqs[2].Body))
	assert.Equal(t, "idProperty=kakao_id", reqs[3].RawQuery)
	assert.JSONEq(t, `{"properties":{"nick":""}}`, string(reqs[3].Body), "never blanks the id property")
}

func TestHubSpotGDPRDelete(t *testing.T) {
	s, h := newHubSpot(t)
	require.NoError(t, h.Upsert(ctx, "k1", Contact{ExternalID: "42", Email: testEmail}))
	require.NoError(t, h.Delete(ctx, "k2", "42"))
	reqs := s.requests()
	r := reqs[len(reqs)-1]
	assert.Equal(t, http.MethodPost, r.Method)
	assert.Equal(t, "/crm/v3/objects/contacts/gdpr-delete", r.Path)
	assert.Equal(t, "Bearer "+hsToken, r.Header.Get("Authorization"))
	assert.JSONEq(t, `{"objectId":"42","idProperty":"kakao_user_id"}`, string(r.Body))
	assert.Nil(t, s.contact("42"))

	// Already gone (a retry after a lost answer): HubSpot says 404, we say done.
	require.NoError(t, h.Delete(ctx, "k2", "42"))
	assert.Len(t, s.requests(), 3)
}

func TestHubSpotSetMarketing(t *testing.T) {
	s, h := newHubSpot(t)
	require.NoError(t, h.SetMarketing(ctx, "k1", "77", true))
	assert.Equal(t, "true", s.contact("77")["kakao_marketing_consent"], "creates the contact when missing")
	require.NoError(t, h.SetMarketing(ctx, "k2", "77", false))
	assert.Equal(t, "false", s.contact("77")["kakao_marketing_consent"])
	r := s.requests()[1]
	assert.Equal(t, "/crm/v3/objects/contacts/batch/upsert", r.Path)
	assert.JSONEq(t, `{"inputs":[{"id":"77","idProperty":"kakao_user_id","objectWriteTraceId":"k2","properties":{"kakao_marketing_consent":"false"}}]}`, string(r.Body))
}

func TestHubSpotDeleteFields(t *testing.T) {
	s, h := newHubSpot(t)
	require.NoError(t, h.Upsert(ctx, "k1", Contact{ExternalID: "a/b 1", Email: testEmail, Nickname: testNick, Phone: testPhone,
		Properties: map[string]string{"plan": "pro"}}))
	require.NoError(t, h.DeleteFields(ctx, "k2", "a/b 1", []string{FieldEmail, FieldPhone, "plan", "kakao_user_id"}))

	r := s.requests()[1]
	assert.Equal(t, http.MethodPatch, r.Method)
	assert.Equal(t, "/crm/v3/objects/contacts/a/b 1", r.Path) // decoded form of the escaped path
	assert.Equal(t, "idProperty=kakao_user_id", r.RawQuery)
	assert.JSONEq(t, `{"properties":{"email":"","phone":"","plan":""}}`, string(r.Body))
	assert.Equal(t, map[string]string{"kakao_user_id": "a/b 1", "firstname": testNick}, s.contact("a/b 1"))

	// Unknown contact: nothing to blank.
	require.NoError(t, h.DeleteFields(ctx, "k3", "404404", []string{FieldEmail}))
	// No fields (or only the key): no request at all.
	n := len(s.requests())
	require.NoError(t, h.DeleteFields(ctx, "k4", "a/b 1", nil))
	require.NoError(t, h.DeleteFields(ctx, "k4", "a/b 1", []string{"kakao_user_id"}))
	assert.Len(t, s.requests(), n)
}

func TestHubSpotEscapesExternalIDInPath(t *testing.T) {
	var raw string
	h := &HubSpot{Token: hsToken, HTTP: &http.Client{Transport: rt(func(r *http.Request) (*http.Response, error) {
		raw = r.URL.EscapedPath()
		return &http.Response{StatusCode: 200, Body: io.NopCloser(strings.NewReader(`{}`)), Header: http.Header{}}, nil
	})}}
	require.NoError(t, h.DeleteFields(ctx, "k", "../x?y", []string{FieldEmail}))
	assert.Equal(t, "/crm/v3/objects/contacts/..%2Fx%3Fy", raw)
}

type rt func(*http.Request) (*http.Response, error)

func (f rt) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestHubSpotDefaults(t *testing.T) {
	var url string
	var left time.Duration
	h := &HubSpot{Token: hsToken, HTTP: &http.Client{Transport: rt(func(r *http.Request) (*http.Response, error) {
		url = r.URL.String()
		dl, ok := r.Context().Deadline()
		require.True(t, ok)
		left = time.Until(dl)
		return &http.Response{StatusCode: 204, Body: io.NopCloser(strings.NewReader("")), Header: http.Header{}}, nil
	})}}
	require.NoError(t, h.Delete(ctx, "k", "1"))
	assert.Equal(t, "https://api.hubapi.com/crm/v3/objects/contacts/gdpr-delete", url)
	assert.InDelta(t, DefaultTimeout, left, float64(time.Second))
}

func TestHubSpotClassification(t *testing.T) {
	retryAt := time.Now().Add(20 * time.Second).UTC().Format(http.TimeFormat)
	for _, tc := range []struct {
		name       string
		status     int
		header     map[string]string
		category   string
		retryable  bool
		delay      time.Duration
		delayDelta time.Duration
		rateLimit  bool
	}{
		{"429 seconds", 429, map[string]string{"Retry-After": "10"}, "RATE_LIMITS", true, 10 * time.Second, 0, true},
		{"429 http-date", 429, map[string]string{"Retry-After": retryAt}, "RATE_LIMITS", true, 20 * time.Second, 2 * time.Second, true},
		{"429 no header", 429, nil, "RATE_LIMITS", true, 0, 0, true},
		{"423 locked", 423, nil, "", true, 2 * time.Second, 0, false},
		{"500", 500, nil, "", true, 0, 0, false},
		{"502", 502, nil, "", true, 0, 0, false},
		{"503 retry-after", 503, map[string]string{"Retry-After": "3"}, "", true, 3 * time.Second, 0, false},
		{"400 validation", 400, map[string]string{"Retry-After": "3"}, "VALIDATION_ERROR", false, 0, 0, false},
		{"401", 401, nil, "INVALID_AUTHENTICATION", false, 0, 0, false},
		{"403", 403, nil, "MISSING_SCOPES", false, 0, 0, false},
		{"404 on upsert", 404, nil, "OBJECT_NOT_FOUND", false, 0, 0, false},
		{"409 conflict", 409, nil, "CONFLICT", false, 0, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, h := newHubSpot(t)
			s.answer(func(w http.ResponseWriter) {
				for k, v := range tc.header {
					w.Header().Set(k, v)
				}
				hsError(w, tc.status, tc.category, "something about the request")
			})
			err := h.Upsert(ctx, "k", Contact{ExternalID: "1"})
			var e *Error
			require.ErrorAs(t, err, &e)
			assert.Equal(t, tc.status, e.Status)
			assert.Equal(t, "hubspot", e.Adapter)
			assert.Equal(t, "upsert", e.Op)
			assert.Equal(t, tc.retryable, httpx.IsRetryable(err))
			_, d := httpx.RetryOf(err)
			assert.InDelta(t, tc.delay, d, float64(tc.delayDelta))
			assert.Equal(t, tc.delay > 0, d > 0)
			assert.Equal(t, tc.rateLimit, errors.Is(err, ErrRateLimited))
			if tc.category != "" {
				assert.Contains(t, e.Reason, tc.category)
			}
			assert.Contains(t, e.Reason, "something about the request")
			assert.Contains(t, e.Reason, "correlationId a43683b0-5717-4ceb-80b4-104d02915d8c")
		})
	}
}

func TestHubSpotValidationErrorHasReasonWithoutPII(t *testing.T) {
	_, h := newHubSpot(t)
	bad := "jiwoo.kim@@example.co.kr"
	err := h.Upsert(ctx, "k", Contact{ExternalID: "1", Email: bad, Nickname: testNick, Phone: testPhone})
	require.Error(t, err)
	assert.False(t, httpx.IsRetryable(err))
	s := err.Error()
	assert.Contains(t, s, "HTTP 400")
	assert.Contains(t, s, "VALIDATION_ERROR")
	assert.Contains(t, s, "INVALID_EMAIL")
	assert.NotContains(t, s, "jiwoo.kim")
	assert.NotContains(t, s, bad)

	err = h.Upsert(ctx, "k", Contact{ExternalID: "1", Properties: map[string]string{"no_such": "x"}})
	require.Error(t, err)
	assert.Contains(t, err.Error(), `Property \"no_such\" does not exist`, "the reason names what to fix")
}

func TestHubSpotPIIFromAnyPropertyIsRedacted(t *testing.T) {
	s, h := newHubSpot(t)
	s.answer(func(w http.ResponseWriter) {
		hsError(w, 400, "VALIDATION_ERROR", "bad values "+testNick+" / "+testPhone+" / 010 9876 5432 / Seoul Gangnam-gu 123")
	})
	err := h.Upsert(ctx, "k", Contact{ExternalID: "1", Nickname: testNick, Phone: testPhone,
		Properties: map[string]string{"address": "Seoul Gangnam-gu 123"}})
	require.Error(t, err)
	for _, v := range []string{testNick, testPhone, "010 9876 5432", "Seoul Gangnam-gu"} {
		assert.NotContains(t, err.Error(), v)
	}
}

func TestHubSpotTokenNeverInErrors(t *testing.T) {
	_, h := newHubSpot(t)
	h.Token = "pat-na1-wrong-token-value"
	err := h.Delete(ctx, "k", "1") // stub echoes the Authorization header
	require.Error(t, err)
	assert.False(t, httpx.IsRetryable(err))
	assert.Contains(t, err.Error(), "INVALID_AUTHENTICATION")
	assert.NotContains(t, err.Error(), "pat-na1-wrong-token-value")
}

func TestHubSpotBatchErrorsInOKAnswer(t *testing.T) {
	s, h := newHubSpot(t)
	s.answer(func(w http.ResponseWriter) {
		w.WriteHeader(207)
		_, _ = io.WriteString(w, `{"status":"COMPLETE","results":[],"numErrors":1,"errors":[{"status":"error","category":"VALIDATION_ERROR","message":"Email `+testEmail+` is invalid"}]}`)
	})
	err := h.Upsert(ctx, "k", Contact{ExternalID: "1", Email: testEmail})
	require.Error(t, err)
	assert.False(t, httpx.IsRetryable(err))
	assert.Contains(t, err.Error(), "VALIDATION_ERROR")
	assert.NotContains(t, err.Error(), testEmail)

	s.answer(func(w http.ResponseWriter) {
		w.WriteHeader(207)
		_, _ = io.WriteString(w, `{"numErrors":1,"errors":[{"category":"RATE_LIMITS","message":"slow down"}]}`)
	})
	assert.True(t, httpx.IsRetryable(h.SetMarketing(ctx, "k", "1", true)))
}

func TestHubSpotTimeoutIsRetryableAndQuick(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Reading the body lets the server notice the client hanging up.
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	}))
	defer srv.Close()
	h := &HubSpot{BaseURL: srv.URL, Token: hsToken, Timeout: 100 * time.Millisecond}
	start := time.Now()
	err := h.Upsert(ctx, "k", Contact{ExternalID: "1", Email: testEmail})
	assert.Less(t, time.Since(start), time.Second)
	require.Error(t, err)
	assert.True(t, httpx.IsRetryable(err))
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.NotContains(t, err.Error(), testEmail)
}

func TestHubSpotRefusesBadCallsLocally(t *testing.T) {
	s, h := newHubSpot(t)
	noToken := &HubSpot{BaseURL: h.BaseURL}
	for name, err := range map[string]error{
		"empty key":      h.Upsert(ctx, "", Contact{ExternalID: "1"}),
		"empty id":       h.Delete(ctx, "k", ""),
		"empty id mkt":   h.SetMarketing(ctx, "k", "", true),
		"empty id field": h.DeleteFields(ctx, "k", "", []string{FieldEmail}),
		"no token":       noToken.Delete(ctx, "k", "1"),
	} {
		require.Error(t, err, name)
		assert.False(t, httpx.IsRetryable(err), name)
	}
	assert.Empty(t, s.requests())
}
