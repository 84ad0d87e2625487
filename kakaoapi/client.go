// Package kakaoapi is a small client for the Kakao REST APIs that setflow's
// reactions call server to server with the app's admin key: log a user out of
// the app, unlink a user, and read a user's current profile.
//
// Every failure is an *APIError that says whether trying again can help
// (Retryable) and how long the server asked to wait (RetryAfter), an
// httpx.RetryableError, so a caller such as a Temporal activity can turn it
// into a retryable or non-retryable application error (httpx.RetryOf) without
// knowing Kakao's error codes. A user who is no
// longer linked to the app is reported so that errors.Is(err, ErrNotLinked)
// holds: a logout or unlink reaction treats that as done.
//
// The admin key, the user id and profile data (email, nickname, phone number)
// never appear in errors or in the printed or logged form of Client and
// Profile: a transport error's URL is cut to scheme, host and path (the query
// carries target_id), and a server's message has the user id masked. Callers
// that must name the user use a keyed hash of the id.
package kakaoapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/setflow/setflow/internal/httpx"
)

const (
	// DefaultBaseURL is Kakao's REST API host.
	DefaultBaseURL = "https://kapi.kakao.com"
	// DefaultTimeout bounds one call (connect, send, wait, read) when
	// Client.Timeout is zero.
	DefaultTimeout = 5 * time.Second

	// maxBody caps what is read from a response; Kakao's bodies are small and
	// an unbounded read would let a broken proxy exhaust memory.
	maxBody = 1 << 20
)

// Client calls Kakao's REST APIs with the app's admin key. The zero value of
// each optional field selects its default; a Client is safe for concurrent use
// once configured.
type Client struct {
	// BaseURL is the API host, DefaultBaseURL when empty. Tests point it at a
	// local server.
	BaseURL string
	// AdminKey is the app's admin key, sent as "Authorization: KakaoAK <key>".
	AdminKey string
	// HTTP sends the requests; http.DefaultClient's transport when nil.
	HTTP *http.Client
	// Timeout bounds each call, DefaultTimeout when zero. It applies on top of
	// the caller's context, so the tighter of the two wins.
	Timeout time.Duration
}

// Logout ends the user's Kakao session with this app
// (POST /v1/user/logout). A user who is not linked any more yields an error
// matching ErrNotLinked.
func (c *Client) Logout(ctx context.Context, userID string) error {
	return c.targetCall(ctx, "logout", "/v1/user/logout", userID)
}

// Unlink disconnects the user from this app (POST /v1/user/unlink). A user
// who is not linked any more yields an error matching ErrNotLinked.
func (c *Client) Unlink(ctx context.Context, userID string) error {
	return c.targetCall(ctx, "unlink", "/v1/user/unlink", userID)
}

// targetCall posts target_id_type=user_id&target_id=<id> and checks that the
// answer names the same user (Kakao replies {"id": <user id>}).
func (c *Client) targetCall(ctx context.Context, op, path, userID string) error {
	id, err := parseUserID(op, userID)
	if err != nil {
		return err
	}
	form := url.Values{"target_id_type": {"user_id"}, "target_id": {userID}}
	body, err := c.do(ctx, op, http.MethodPost, path, userID, nil, form)
	if err != nil {
		return err
	}
	var resp struct {
		ID *int64 `json:"id"`
	}
	// Kakao documents {"id": ...}; a body without it is still a success, but
	// a different id means the call reached the wrong place or the wrong user.
	if json.Unmarshal(body, &resp) == nil && resp.ID != nil && *resp.ID != id {
		return &APIError{Op: op, Retry: httpx.Retry{Status: http.StatusOK}, Msg: "response names a different user id"}
	}
	return nil
}

// Profile is the part of GET /v2/user/me that setflow uses. Fields the user
// has not consented to are empty. Its String, GoString and LogValue methods
// hide the user id and the personal data, so printing or logging a Profile is
// safe.
type Profile struct {
	ID            int64
	Email         string
	EmailValid    bool // kakao_account.is_email_valid: false once the address expired
	EmailVerified bool // kakao_account.is_email_verified
	Nickname      string
	PhoneNumber   string    // Kakao's format, e.g. "+82 10-1234-5678"
	ConnectedAt   time.Time // zero when Kakao did not send it
	// Raw is the whole response body, for fields this type does not model.
	Raw json.RawMessage
}

// UsableEmail returns the email only when Kakao marks it valid and verified,
// the condition Kakao's documentation sets for sending mail to it.
func (p Profile) UsableEmail() string {
	if p.EmailValid && p.EmailVerified {
		return p.Email
	}
	return ""
}

// String reports which fields are present without their values.
func (p Profile) String() string {
	id := "0"
	if p.ID != 0 {
		id = "[redacted]"
	}
	return fmt.Sprintf("kakaoapi.Profile{ID: %s, Email: %s, Nickname: %s, PhoneNumber: %s}",
		id, mask(p.Email), mask(p.Nickname), mask(p.PhoneNumber))
}

// GoString keeps %#v from printing personal data.
func (p Profile) GoString() string { return p.String() }

// LogValue keeps slog handlers (including JSON ones) from logging personal data.
func (p Profile) LogValue() slog.Value {
	return slog.GroupValue(slog.Bool("has_id", p.ID != 0),
		slog.Bool("has_email", p.Email != ""),
		slog.Bool("has_nickname", p.Nickname != ""),
		slog.Bool("has_phone_number", p.PhoneNumber != ""))
}

func mask(s string) string {
	if s == "" {
		return `""`
	}
	return "[redacted]"
}

// Profile reads the user's current profile
// (GET /v2/user/me?target_id_type=user_id&target_id=<id>). A user who is not
// linked yields an error matching ErrNotLinked.
func (c *Client) Profile(ctx context.Context, userID string) (*Profile, error) {
	const op = "profile"
	id, err := parseUserID(op, userID)
	if err != nil {
		return nil, err
	}
	q := url.Values{"target_id_type": {"user_id"}, "target_id": {userID}}
	body, err := c.do(ctx, op, http.MethodGet, "/v2/user/me", userID, q, nil)
	if err != nil {
		return nil, err
	}
	var me struct {
		ID           int64      `json:"id"`
		ConnectedAt  *time.Time `json:"connected_at"`
		KakaoAccount struct {
			Email           string `json:"email"`
			IsEmailValid    bool   `json:"is_email_valid"`
			IsEmailVerified bool   `json:"is_email_verified"`
			PhoneNumber     string `json:"phone_number"`
			Profile         struct {
				Nickname string `json:"nickname"`
			} `json:"profile"`
		} `json:"kakao_account"`
	}
	// The decode error is not wrapped: its text can quote the body.
	if err := json.Unmarshal(body, &me); err != nil {
		return nil, &APIError{Op: op, Retry: httpx.Retry{Status: http.StatusOK}, Msg: "response is not the documented JSON"}
	}
	if me.ID != id {
		return nil, &APIError{Op: op, Retry: httpx.Retry{Status: http.StatusOK}, Msg: "response names a different or no user id"}
	}
	p := &Profile{
		ID:            me.ID,
		Email:         me.KakaoAccount.Email,
		EmailValid:    me.KakaoAccount.IsEmailValid,
		EmailVerified: me.KakaoAccount.IsEmailVerified,
		Nickname:      me.KakaoAccount.Profile.Nickname,
		PhoneNumber:   me.KakaoAccount.PhoneNumber,
		Raw:           json.RawMessage(body),
	}
	if me.ConnectedAt != nil {
		p.ConnectedAt = *me.ConnectedAt
	}
	return p, nil
}

// parseUserID checks the id locally: Kakao's user ids are positive 64-bit
// numbers, and a malformed one can never succeed, so it is not worth a call.
// The value is not echoed because a caller bug could pass something personal.
func parseUserID(op, userID string) (int64, error) {
	id, err := strconv.ParseInt(userID, 10, 64)
	if err != nil || id <= 0 || strconv.FormatInt(id, 10) != userID {
		return 0, &APIError{Op: op, Msg: "user id is not a Kakao user id (a positive decimal number)"}
	}
	return id, nil
}

// do sends one request about userID and returns the body of a 2xx answer, or
// an *APIError whose text names neither the user nor the admin key.
func (c *Client) do(ctx context.Context, op, method, path, userID string, query, form url.Values) ([]byte, error) {
	if c.AdminKey == "" {
		return nil, &APIError{Op: op, Msg: "no admin key configured"}
	}
	base := strings.TrimRight(c.BaseURL, "/")
	if base == "" {
		base = DefaultBaseURL
	}
	u := base + path
	if query != nil {
		u += "?" + query.Encode()
	}
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		// The parse error quotes the URL, query and all.
		return nil, &APIError{Op: op, Msg: "invalid base URL", Err: scrub(redactURLError(err), userID, c.AdminKey)}
	}
	req.Header.Set("Authorization", "KakaoAK "+c.AdminKey)
	req.Header.Set("Accept", "application/json")
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded;charset=utf-8")
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, transportError(op, 0, err, userID, c.AdminKey)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return nil, transportError(op, resp.StatusCode, err, userID, c.AdminKey)
	}
	// 301/302/303 turn a POST into a bodiless GET: that answer is not about
	// our request, and a 2xx must not count as success.
	if resp.Request != nil && resp.Request.Method != method {
		return nil, &APIError{Op: op, Retry: httpx.Retry{Status: resp.StatusCode}, Msg: "redirected to a " + resp.Request.Method + "; check the base URL"}
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return data, nil
	}
	e := classify(op, resp.StatusCode, resp.Header, data, c.AdminKey, time.Now())
	e.Msg = maskUserID(e.Msg, userID)
	return nil, e
}

// transportError wraps a failure to get a complete answer. Those are worth
// retrying (timeouts, resets, refused connections), except when the caller
// cancelled: then nobody is waiting for the result. The *url.Error that
// net/http returns quotes the request URL, whose query names the user
// (target_id): the URL is cut to scheme, host and path, and whatever else in
// the text names the user (a transport that repeats the URL) is masked.
func transportError(op string, status int, err error, userID, adminKey string) *APIError {
	return &APIError{
		Op:    op,
		Msg:   "request failed",
		Retry: httpx.Retry{Status: status, CanRetry: !errors.Is(err, context.Canceled)},
		Err:   scrub(redactURLError(err), userID, adminKey),
	}
}

// redactURLError returns err with the URL of a *url.Error (as net/http
// returns them) reduced to scheme, host and path: no user info, query or
// fragment. Other errors are returned as they are.
func redactURLError(err error) error {
	ue, ok := err.(*url.Error)
	if !ok {
		return err
	}
	return &url.Error{Op: ue.Op, URL: redactURL(ue.URL), Err: ue.Err}
}

func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		// What cannot be taken apart is not shown at all.
		return "[redacted]"
	}
	u.User, u.RawQuery, u.ForceQuery, u.Fragment, u.RawFragment = nil, "", false, "", ""
	return u.String()
}

// scrubbed is an error whose text had the user id or admin key masked; it
// unwraps to the original, so errors.Is and errors.As still see the cause.
type scrubbed struct {
	msg string
	err error
}

func (e *scrubbed) Error() string { return e.msg }
func (e *scrubbed) Unwrap() error { return e.err }

// scrub masks the user id and the admin key in err's text, if they appear.
func scrub(err error, userID, adminKey string) error {
	if err == nil {
		return nil
	}
	text := err.Error()
	masked := maskUserID(text, userID)
	if adminKey != "" {
		masked = strings.ReplaceAll(masked, adminKey, "[redacted]")
	}
	if masked == text {
		return err
	}
	return &scrubbed{msg: masked, err: err}
}

// maskUserID replaces the user id where it stands as a number of its own (not
// inside a longer run of digits), so that a short id does not shred the rest.
func maskUserID(s, userID string) string {
	if userID == "" || !strings.Contains(s, userID) {
		return s
	}
	var b strings.Builder
	for {
		i := strings.Index(s, userID)
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		end := i + len(userID)
		if (i > 0 && isDigit(s[i-1])) || (end < len(s) && isDigit(s[end])) {
			b.WriteString(s[:end])
		} else {
			b.WriteString(s[:i])
			b.WriteString("[user id]")
		}
		s = s[end:]
	}
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// String hides the admin key.
func (c Client) String() string {
	return fmt.Sprintf("kakaoapi.Client{BaseURL: %q, AdminKey: %s, Timeout: %s}", c.BaseURL, mask(c.AdminKey), c.Timeout)
}

// GoString keeps %#v from printing the admin key.
func (c Client) GoString() string { return c.String() }

// LogValue keeps slog handlers from logging the admin key.
func (c Client) LogValue() slog.Value {
	return slog.GroupValue(slog.String("base_url", c.BaseURL), slog.Bool("has_admin_key", c.AdminKey != ""))
}
