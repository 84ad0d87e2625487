package identity

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"time"
)

// HTTPLookup asks the service's own endpoint, for services whose mapping
// setflow cannot read:
//
//	GET <URL>?issuer=<iss>&kakao_user_id=<id>  → {"account_ids": ["42", ...]}
//	GET <URL>?account_id=<id>                  → {"kakao_users": [{"issuer": "...", "user_id": "..."}]}
//
// with "Authorization: Bearer <Token>" when a token is set. 404 means none;
// 408, 429 and 5xx are retried; any other status is permanent.
type HTTPLookup struct {
	URL    string
	Token  string
	Client *http.Client
}

type lookupAnswer struct {
	AccountIDs []string `json:"account_ids"`
	KakaoUsers []User   `json:"kakao_users"`
}

// Accounts asks the endpoint for the user's accounts.
func (h *HTTPLookup) Accounts(ctx context.Context, issuer, kakaoUserID string) ([]string, error) {
	a, err := h.get(ctx, url.Values{"issuer": {issuer}, "kakao_user_id": {kakaoUserID}})
	if err != nil {
		return nil, err
	}
	sort.Strings(a.AccountIDs)
	return a.AccountIDs, nil
}

// Users asks the endpoint for the account's Kakao users.
func (h *HTTPLookup) Users(ctx context.Context, accountID string) ([]User, error) {
	a, err := h.get(ctx, url.Values{"account_id": {accountID}})
	if err != nil {
		return nil, err
	}
	sort.Slice(a.KakaoUsers, func(i, j int) bool {
		x, y := a.KakaoUsers[i], a.KakaoUsers[j]
		return x.Issuer < y.Issuer || x.Issuer == y.Issuer && x.UserID < y.UserID
	})
	return a.KakaoUsers, nil
}

func (h *HTTPLookup) get(ctx context.Context, q url.Values) (lookupAnswer, error) {
	var out lookupAnswer
	u, err := url.Parse(h.URL)
	if err != nil {
		return out, fmt.Errorf("%w: invalid URL", ErrRejected)
	}
	all := u.Query()
	for k, v := range q {
		all[k] = v
	}
	u.RawQuery = all.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return out, fmt.Errorf("%w: invalid URL", ErrRejected)
	}
	req.Header.Set("Accept", "application/json")
	if h.Token != "" {
		req.Header.Set("Authorization", "Bearer "+h.Token)
	}
	c := h.Client
	if c == nil {
		c = &http.Client{Timeout: 10 * time.Second}
	}
	resp, err := c.Do(req)
	if err != nil {
		// The transport error quotes the URL with the user id: not shown.
		return out, fmt.Errorf("identity: lookup endpoint unreachable (%s)", transportReason(err))
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return out, nil
	case resp.StatusCode/100 == 2:
		if err := json.Unmarshal(body, &out); err != nil {
			return out, fmt.Errorf("%w: the answer is not the documented JSON", ErrRejected)
		}
		return out, nil
	case resp.StatusCode == http.StatusRequestTimeout || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return out, fmt.Errorf("identity: lookup endpoint answered %d", resp.StatusCode)
	}
	return out, fmt.Errorf("%w: lookup endpoint answered %d", ErrRejected, resp.StatusCode)
}

// transportReason names the kind of a transport failure without the URL.
func transportReason(err error) string {
	if ue, ok := err.(*url.Error); ok {
		if ue.Timeout() {
			return "timeout"
		}
		return ue.Op + " failed"
	}
	return "transport error"
}
