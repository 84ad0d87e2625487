package sessions

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/setflow/setflow/crm"
)

// HTTPCallback asks the service's own endpoint to end sessions, for services
// whose sessions live where setflow cannot reach them. The request is signed
// like setflow's CRM webhook (X-Setflow-Signature: v1=HMAC-SHA256 over
// "<timestamp>.<body>") and carries an Idempotency-Key.
type HTTPCallback struct {
	URL    string
	Secret []byte
	Client *http.Client
	now    func() time.Time
}

// callbackRequest is the JSON body sent to the service.
type callbackRequest struct {
	Action        string    `json:"action"`
	UserID        string    `json:"user_id"`
	CreatedBefore time.Time `json:"created_before"`
}

// callbackResponse is what the service may answer.
type callbackResponse struct {
	Revoked int64 `json:"revoked"`
}

// ErrCallbackRejected is wrapped for 4xx answers other than 429: retrying the
// same request cannot succeed.
var ErrCallbackRejected = errors.New("sessions: callback rejected the request")

// Revoke posts {"action":"revoke_sessions","user_id","created_before"}. The key
// is derived from the user and time, so retries carry the same key.
func (h *HTTPCallback) Revoke(ctx context.Context, userID string, createdBefore time.Time) (int64, error) {
	body, err := json.Marshal(callbackRequest{Action: "revoke_sessions", UserID: userID, CreatedBefore: createdBefore.UTC()})
	if err != nil {
		return 0, err
	}
	sum := sha256.Sum256(body)
	key := hex.EncodeToString(sum[:16])
	now := time.Now
	if h.now != nil {
		now = h.now
	}
	ts := now().Unix()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.URL, bytes.NewReader(body))
	if err != nil {
		return 0, fmt.Errorf("sessions: callback URL: %w", h.redact(err, userID))
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", key)
	req.Header.Set("X-Setflow-Timestamp", strconv.FormatInt(ts, 10))
	req.Header.Set("X-Setflow-Signature", crm.Sign(h.Secret, ts, body))
	c := h.Client
	if c == nil {
		c = &http.Client{Timeout: 10 * time.Second}
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, fmt.Errorf("sessions: callback: %w", h.redact(err, userID))
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	switch {
	case resp.StatusCode/100 == 2:
		var out callbackResponse
		_ = json.Unmarshal(data, &out) // the count is informational
		return out.Revoked, nil
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return 0, fmt.Errorf("sessions: callback answered %d", resp.StatusCode)
	default:
		return 0, fmt.Errorf("%w: status %d", ErrCallbackRejected, resp.StatusCode)
	}
}

// redact keeps a transport error's cause but not what it may quote: net/http's
// *url.Error repeats the URL, which may carry a token in its path, query or
// user info, so only its scheme and host are shown; and the user id and the
// secret are masked wherever the rest of the text (a transport that echoes
// the request) still names them.
func (h *HTTPCallback) redact(err error, userID string) error {
	if ue, ok := err.(*url.Error); ok {
		shown := "[redacted]"
		if u, perr := url.Parse(ue.URL); perr == nil && u.Host != "" {
			shown = u.Scheme + "://" + u.Host
		}
		err = &url.Error{Op: ue.Op, URL: shown, Err: ue.Err}
	}
	text := err.Error()
	masked := text
	for _, v := range []string{userID, string(h.Secret)} {
		if len(v) >= 2 {
			masked = strings.ReplaceAll(masked, v, "[redacted]")
		}
	}
	if masked == text {
		return err
	}
	return &redacted{msg: masked, err: err}
}

// redacted is an error whose text was masked; it unwraps to the original, so
// errors.Is and errors.As still see the cause.
type redacted struct {
	msg string
	err error
}

func (e *redacted) Error() string { return e.msg }
func (e *redacted) Unwrap() error { return e.err }
