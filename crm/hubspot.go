package crm

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/setflow/setflow/internal/httpx"
)

// HubSpot defaults.
const (
	DefaultHubSpotBaseURL = "https://api.hubapi.com"
	DefaultIDProperty     = "kakao_user_id"
	// DefaultMarketingProperty is a custom boolean contact property (create it
	// in HubSpot) that records Kakao Talk Channel marketing consent.
	DefaultMarketingProperty = "kakao_marketing_consent"
	DefaultTimeout           = 10 * time.Second

	// hubspotLockedDelay is how long HubSpot documents a 423 lock to last;
	// used when a 423 names no Retry-After.
	hubspotLockedDelay = 2 * time.Second
	maxBody            = 1 << 20
)

// HubSpot syncs contacts through HubSpot's CRM v3 contacts API, keyed by a
// unique custom contact property that holds the Kakao user id (IDProperty).
//
//   - Upsert: POST /crm/v3/objects/contacts/batch/upsert with one input
//     {id, idProperty, objectWriteTraceId: idempotency key, properties}.
//     Empty Contact fields are left out so a partial profile never blanks
//     what the CRM has.
//   - Delete: POST /crm/v3/objects/contacts/gdpr-delete {objectId, idProperty};
//     404 means already gone and is a success.
//   - SetMarketing: the same upsert with MarketingProperty = "true"/"false".
//     HubSpot's communication-preferences API is keyed by email address and
//     covers email subscriptions, while this consent is the Kakao Talk
//     Channel's and is known by user id, so it is kept in a boolean contact
//     property that HubSpot workflows and lists can use. An opt-out for an
//     unknown contact creates it with the flag off, which records the opt-out.
//   - DeleteFields: PATCH /crm/v3/objects/contacts/{id}?idProperty=... with
//     the properties set to "" (HubSpot clears a property given an empty
//     string); 404 means nothing to blank and is a success.
//
// HubSpot takes no idempotency header; every call above sets a value rather
// than adding to one, so repeating it is harmless. The key travels as the
// objectWriteTraceId of upserts, for tracing.
type HubSpot struct {
	BaseURL string // DefaultHubSpotBaseURL when empty
	Token   string // private app token or OAuth access token (Bearer)
	// IDProperty is the unique contact property holding ExternalID,
	// DefaultIDProperty when empty.
	IDProperty string
	// Property names for the typed Contact fields; defaults "email",
	// "firstname" (HubSpot has no nickname property) and "phone".
	EmailProperty, NicknameProperty, PhoneProperty string
	// MarketingProperty is the boolean property SetMarketing writes,
	// DefaultMarketingProperty when empty.
	MarketingProperty string
	HTTP              *http.Client  // http.DefaultClient when nil
	Timeout           time.Duration // per call, DefaultTimeout when zero
}

var _ Client = (*HubSpot)(nil)

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func (h *HubSpot) idProp() string { return or(h.IDProperty, DefaultIDProperty) }

// property maps a DeleteFields name to a HubSpot property name.
func (h *HubSpot) property(field string) string {
	switch field {
	case FieldEmail:
		return or(h.EmailProperty, "email")
	case FieldNickname:
		return or(h.NicknameProperty, "firstname")
	case FieldPhone:
		return or(h.PhoneProperty, "phone")
	}
	return field
}

type upsertInput struct {
	ID                 string            `json:"id"`
	IDProperty         string            `json:"idProperty"`
	ObjectWriteTraceID string            `json:"objectWriteTraceId,omitempty"`
	Properties         map[string]string `json:"properties"`
}

// Upsert creates or updates the contact whose IDProperty is c.ExternalID.
// Typed fields win over Properties of the same name; the id property itself
// is never written from Properties.
func (h *HubSpot) Upsert(ctx context.Context, idempotencyKey string, c Contact) error {
	const op = "upsert"
	if err := h.check(op, idempotencyKey, c.ExternalID); err != nil {
		return err
	}
	props := make(map[string]string, len(c.Properties)+3)
	for k, v := range c.Properties {
		props[k] = v
	}
	for field, v := range map[string]string{FieldEmail: c.Email, FieldNickname: c.Nickname, FieldPhone: c.Phone} {
		if v != "" {
			props[h.property(field)] = v
		}
	}
	delete(props, h.idProp())
	pii := []string{c.ExternalID, c.Email, c.Nickname, c.Phone}
	for _, v := range c.Properties {
		pii = append(pii, v)
	}
	return h.upsert(ctx, op, idempotencyKey, c.ExternalID, props, pii)
}

// SetMarketing writes MarketingProperty, creating the contact if needed.
func (h *HubSpot) SetMarketing(ctx context.Context, idempotencyKey, externalID string, subscribed bool) error {
	const op = "marketing"
	if err := h.check(op, idempotencyKey, externalID); err != nil {
		return err
	}
	v := "false"
	if subscribed {
		v = "true"
	}
	props := map[string]string{or(h.MarketingProperty, DefaultMarketingProperty): v}
	return h.upsert(ctx, op, idempotencyKey, externalID, props, []string{externalID})
}

func (h *HubSpot) upsert(ctx context.Context, op, key, externalID string, props map[string]string, pii []string) error {
	payload := map[string][]upsertInput{"inputs": {{
		ID: externalID, IDProperty: h.idProp(), ObjectWriteTraceID: key, Properties: props,
	}}}
	body, err := h.call(ctx, op, http.MethodPost, "/crm/v3/objects/contacts/batch/upsert", nil, payload, false, pii)
	if err != nil {
		return err
	}
	// A batch answers 200 or 207; with 207 (or errors listed) our one input
	// may have failed even though the request as a whole succeeded.
	var res struct {
		NumErrors int            `json:"numErrors"`
		Errors    []hubspotError `json:"errors"`
	}
	if json.Unmarshal(body, &res) == nil && (res.NumErrors > 0 || len(res.Errors) > 0) {
		var he hubspotError
		if len(res.Errors) > 0 {
			he = res.Errors[0]
		}
		e := &Error{Adapter: adapterHubSpot, Op: op, Reason: he.reason(pii),
			Retry: httpx.Retry{Status: http.StatusMultiStatus, CanRetry: he.Category == "RATE_LIMITS"}}
		if e.Reason == "" {
			e.Reason = "batch reported an error for the contact"
		}
		return e
	}
	return nil
}

// Delete permanently deletes the contact (GDPR delete).
func (h *HubSpot) Delete(ctx context.Context, idempotencyKey, externalID string) error {
	const op = "delete"
	if err := h.check(op, idempotencyKey, externalID); err != nil {
		return err
	}
	payload := map[string]string{"objectId": externalID, "idProperty": h.idProp()}
	_, err := h.call(ctx, op, http.MethodPost, "/crm/v3/objects/contacts/gdpr-delete", nil, payload, true, []string{externalID})
	return err
}

// DeleteFields blanks the named fields on an existing contact.
func (h *HubSpot) DeleteFields(ctx context.Context, idempotencyKey, externalID string, fields []string) error {
	const op = "delete_fields"
	if err := h.check(op, idempotencyKey, externalID); err != nil {
		return err
	}
	props := map[string]string{}
	for _, f := range fields {
		// Blanking the key would orphan the contact from its Kakao user.
		if p := h.property(f); p != "" && p != h.idProp() {
			props[p] = ""
		}
	}
	if len(props) == 0 {
		return nil
	}
	path := "/crm/v3/objects/contacts/" + url.PathEscape(externalID)
	q := url.Values{"idProperty": {h.idProp()}}
	_, err := h.call(ctx, op, http.MethodPatch, path, q, map[string]any{"properties": props}, true, []string{externalID})
	return err
}

func (h *HubSpot) check(op, key, externalID string) error {
	switch {
	case h.Token == "":
		return invalid(adapterHubSpot, op, "no token configured")
	case key == "":
		return invalid(adapterHubSpot, op, "empty idempotency key")
	case externalID == "":
		return invalid(adapterHubSpot, op, "empty external id")
	}
	return nil
}

// call sends one JSON request and returns the body of a 2xx answer. With
// notFoundOK a 404 is a success (the contact is already gone). pii are the
// values sent (the contact's id and data) that no error text may quote.
func (h *HubSpot) call(ctx context.Context, op, method, path string, q url.Values, payload any, notFoundOK bool, pii []string) ([]byte, error) {
	buf, err := json.Marshal(payload)
	if err != nil {
		return nil, invalid(adapterHubSpot, op, "cannot encode request")
	}
	u := strings.TrimRight(or(h.BaseURL, DefaultHubSpotBaseURL), "/") + path
	if q != nil {
		u += "?" + q.Encode()
	}
	ctx, cancel := context.WithTimeout(ctx, timeoutOr(h.Timeout, DefaultTimeout))
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(buf))
	if err != nil {
		// Without the parse error's URL: its path can name the contact.
		return nil, &Error{Adapter: adapterHubSpot, Op: op, Reason: "invalid base URL", Err: scrub(withoutURL(err), append(pii, h.Token))}
	}
	req.Header.Set("Authorization", "Bearer "+h.Token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := httpClient(h.HTTP).Do(req)
	if err != nil {
		return nil, transportError(adapterHubSpot, op, err, append(pii, h.Token)...)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		e := transportError(adapterHubSpot, op, err, append(pii, h.Token)...)
		e.Status = resp.StatusCode
		return nil, e
	}
	if redirectedAway(resp, method) {
		return nil, &Error{Adapter: adapterHubSpot, Op: op, Retry: httpx.Retry{Status: resp.StatusCode},
			Reason: "API redirected the " + method + " to a " + resp.Request.Method + "; check the base URL"}
	}
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return body, nil
	case resp.StatusCode == http.StatusNotFound && notFoundOK:
		return nil, nil
	}
	var he hubspotError
	_ = json.Unmarshal(body, &he)
	e := classify(adapterHubSpot, op, resp.StatusCode, resp.Header, he.reason(append(pii, h.Token)), time.Now())
	if e.Status == http.StatusLocked && e.Delay == 0 {
		e.Delay = hubspotLockedDelay
	}
	return nil, e
}

// hubspotError is HubSpot's documented error body; every field is optional.
type hubspotError struct {
	Category      string `json:"category"`
	Message       string `json:"message"`
	CorrelationID string `json:"correlationId"`
}

var correlationRE = regexp.MustCompile(`^[A-Za-z0-9-]{1,64}$`)

// reason renders category and message without personal data; HubSpot's
// validation messages quote the offending values.
func (he hubspotError) reason(pii []string) string {
	var parts []string
	if he.Category != "" {
		parts = append(parts, sanitize(he.Category, pii...)+":")
	}
	if he.Message != "" {
		parts = append(parts, sanitize(he.Message, pii...))
	}
	if correlationRE.MatchString(he.CorrelationID) {
		parts = append(parts, "(correlationId "+he.CorrelationID+")")
	}
	return strings.TrimSuffix(strings.Join(parts, " "), ":")
}

func httpClient(c *http.Client) *http.Client {
	if c == nil {
		return http.DefaultClient
	}
	return c
}

// String hides the token.
func (h HubSpot) String() string {
	return fmt.Sprintf("crm.HubSpot{BaseURL: %q, Token: %s, IDProperty: %q}", h.BaseURL, mask(h.Token), h.IDProperty)
}

// GoString keeps %#v from printing the token.
func (h HubSpot) GoString() string { return h.String() }

// LogValue keeps slog handlers from logging the token.
func (h HubSpot) LogValue() slog.Value {
	return slog.GroupValue(slog.String("base_url", h.BaseURL), slog.Bool("has_token", h.Token != ""))
}
