package ingress

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/setflow/setflow/secevent"
)

// Paths of the admin-key authenticated webhooks, as registered in the Kakao console.
const (
	PathUnlink      = "/webhooks/kakao/unlink"
	PathTalkShare   = "/webhooks/kakao/talk-share"
	PathTalkChannel = "/webhooks/kakao/talk-channel"
)

// ResourceIDHeader carries the unique id of one Talk webhook delivery.
const ResourceIDHeader = "X-Kakao-Resource-ID"

// DefaultKakaoIssuer names the issuer of user subjects of the admin-key
// webhooks unless Kakao.Issuer says otherwise. It equals the issuer of Kakao's
// SETs, so an unlink webhook and a user-unlinked SET name the same subject.
const DefaultKakaoIssuer = "https://kauth.kakao.com"

// DefaultUnlinkWindow is how long repeated unlink webhooks for the same
// (app, user, referrer type) count as one delivery: long enough for a sender's
// retries, short enough that a real unlink after a re-link is a new delivery.
const DefaultUnlinkWindow = time.Minute

// Kakao configures the three admin-key authenticated webhooks (unlink, Talk
// Share, Talk Channel).
type Kakao struct {
	// AdminKeys are the accepted admin keys: more than one during a rotation.
	// With none configured every delivery is refused with 401.
	AdminKeys []string
	// AppID is the Kakao app id the unlink webhook's app_id must equal.
	AppID string
	// Issuer is the issuer of the subjects built from these webhooks
	// (default DefaultKakaoIssuer); set it to the SET issuer.
	Issuer string
	// UnlinkWindow is the unlink webhook's dedupe window (default DefaultUnlinkWindow).
	UnlinkWindow time.Duration
	// KeyHash keys the unlink webhook's dedupe key (HMAC-SHA256): the audit
	// key, the same one that keys the subject hashes. It is required: a plain
	// hash of a numeric user id is reversed by enumeration, and the key is
	// also the reaction's workflow id. Without it the unlink route answers 503.
	KeyHash []byte
}

// ErrNoKeyHash is returned when the unlink dedupe key is asked for without
// Kakao.KeyHash.
var ErrNoKeyHash = errors.New("ingress: Kakao.KeyHash (the audit key) is not set; the unlink dedupe key must be keyed")

// Validate reports a configuration the admin-key webhooks cannot run with;
// call it at start-up.
func (k *Kakao) Validate() error {
	if len(k.KeyHash) == 0 {
		return ErrNoKeyHash
	}
	if k.UnlinkWindow < 0 {
		return errors.New("ingress: Kakao.UnlinkWindow must not be negative")
	}
	return nil
}

func (k *Kakao) issuer() string {
	if k.Issuer != "" {
		return k.Issuer
	}
	return DefaultKakaoIssuer
}

func (k *Kakao) unlinkWindow() time.Duration {
	if k.UnlinkWindow > 0 {
		return k.UnlinkWindow
	}
	return DefaultUnlinkWindow
}

// authorized reports whether an Authorization header carries one of the admin
// keys as "KakaoAK <key>". Both sides are hashed first so that the comparison
// takes the same time whatever the key's length or content, and every
// configured key is compared, so the time does not tell which one matched.
func (k *Kakao) authorized(header string) bool {
	scheme, key, ok := strings.Cut(strings.TrimSpace(header), " ")
	key = strings.TrimSpace(key)
	if !ok || !strings.EqualFold(scheme, "KakaoAK") || key == "" {
		return false
	}
	got := sha256.Sum256([]byte(key))
	match := 0
	for _, want := range k.AdminKeys {
		if want == "" {
			continue
		}
		w := sha256.Sum256([]byte(want))
		match |= subtle.ConstantTimeCompare(got[:], w[:])
	}
	return match == 1
}

// reqError is a refused request: its status and an error body that never
// quotes the request's values (they may be personal data or secrets).
type reqError struct {
	status int
	code   secevent.Code
	desc   string
}

func badRequest(format string, args ...any) *reqError {
	return &reqError{status: http.StatusBadRequest, code: secevent.CodeInvalidRequest, desc: fmt.Sprintf(format, args...)}
}

// fail answers a refused request and logs why, with the route and the peer
// address only: never headers, never values.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, route string, e *reqError) {
	s.log().Info("webhook rejected", "route", route, "status", e.status, "description", e.desc, "remote", r.RemoteAddr)
	if e.status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", "KakaoAK")
	}
	writeError(w, e.status, e.code, e.desc)
}

// allowMethod answers 405 with Allow unless the request uses one of methods.
func (s *Server) allowMethod(w http.ResponseWriter, r *http.Request, route string, methods ...string) bool {
	if slices.Contains(methods, r.Method) {
		return true
	}
	w.Header().Set("Allow", strings.Join(methods, ", "))
	s.fail(w, r, route, &reqError{status: http.StatusMethodNotAllowed, code: secevent.CodeInvalidRequest,
		desc: "method must be " + strings.Join(methods, " or ")})
	return false
}

// authorize answers 401 unless the request carries a configured admin key.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request, route string) bool {
	if s.Kakao.authorized(r.Header.Get("Authorization")) {
		return true
	}
	desc := "Authorization must be KakaoAK with the app's admin key"
	if len(s.Kakao.AdminKeys) == 0 {
		desc = "no admin key is configured for this webhook"
	}
	s.fail(w, r, route, &reqError{status: http.StatusUnauthorized, code: secevent.CodeAuthenticationFailed, desc: desc})
	return false
}

// encodings a route accepts.
type encodings uint8

const (
	encQuery encodings = 1 << iota // GET query string (or a POST without a body)
	encForm                        // POST application/x-www-form-urlencoded
	encJSON                        // POST application/json
)

// params are a delivery's top-level members: string or []any from a query or
// form, any JSON value (numbers as json.Number) from a JSON body.
type params map[string]any

// readParams reads the delivery's members in one of the accepted encodings.
// raw is what gets stored as the inbox entry's raw bytes: the body, or the
// query string of a GET.
func (s *Server) readParams(w http.ResponseWriter, r *http.Request, accept encodings) (params, []byte, *reqError) {
	if r.Method == http.MethodGet {
		p, err := queryParams(r.URL.RawQuery)
		return p, []byte(r.URL.RawQuery), err
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.maxBody()))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, nil, &reqError{status: http.StatusRequestEntityTooLarge, code: secevent.CodeInvalidRequest,
				desc: "the request body is too large"}
		}
		return nil, nil, badRequest("the request body could not be read")
	}
	if len(bytes.TrimSpace(body)) == 0 {
		if accept&encQuery != 0 && r.URL.RawQuery != "" {
			p, err := queryParams(r.URL.RawQuery)
			return p, []byte(r.URL.RawQuery), err
		}
		return nil, nil, badRequest("the request body is empty")
	}
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch {
	case mt == "application/x-www-form-urlencoded" && accept&encForm != 0:
		p, err := queryParams(string(body))
		return p, body, err
	case (mt == "application/json" || strings.HasSuffix(mt, "+json")) && accept&encJSON != 0:
		p, err := jsonParams(body)
		return p, body, err
	}
	var types []string
	if accept&encForm != 0 {
		types = append(types, "application/x-www-form-urlencoded")
	}
	if accept&encJSON != 0 {
		types = append(types, "application/json")
	}
	return nil, nil, &reqError{status: http.StatusUnsupportedMediaType, code: secevent.CodeInvalidRequest,
		desc: "Content-Type must be " + strings.Join(types, " or ")}
}

func queryParams(q string) (params, *reqError) {
	vals, err := url.ParseQuery(q)
	if err != nil {
		return nil, badRequest("the form or query string is malformed")
	}
	p := make(params, len(vals))
	for k, vs := range vals {
		if strings.ContainsRune(k, 0) {
			return nil, badRequest("a parameter name contains a NUL character")
		}
		for _, v := range vs {
			if strings.ContainsRune(v, 0) {
				return nil, badRequest("parameter %s contains a NUL character", safeName(k))
			}
		}
		if len(vs) == 1 {
			p[k] = vs[0]
			continue
		}
		list := make([]any, len(vs))
		for i, v := range vs {
			list[i] = v
		}
		p[k] = list
	}
	return p, nil
}

func jsonParams(body []byte) (params, *reqError) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, badRequest("the body is not valid JSON")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, badRequest("the body holds more than one JSON value")
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, badRequest("the body must be a JSON object")
	}
	// PostgreSQL's jsonb refuses U+0000: refuse it here as bad input rather
	// than fail the inbox write with a 503.
	if hasNUL(obj) {
		return nil, badRequest("the body contains a NUL character")
	}
	return params(obj), nil
}

func hasNUL(v any) bool {
	switch v := v.(type) {
	case string:
		return strings.ContainsRune(v, 0)
	case []any:
		return slices.ContainsFunc(v, hasNUL)
	case map[string]any:
		for k, e := range v {
			if strings.ContainsRune(k, 0) || hasNUL(e) {
				return true
			}
		}
	}
	return false
}

// str returns a scalar member as a string; JSON numbers keep their text.
// Missing, null and empty values report ok=false.
func (p params) str(name string) (string, bool, *reqError) {
	switch v := p[name].(type) {
	case nil:
		return "", false, nil
	case string:
		v = strings.TrimSpace(v)
		return v, v != "", nil
	case json.Number:
		return v.String(), true, nil
	case []any:
		return "", false, badRequest("%s must be given once", name)
	default:
		return "", false, badRequest("%s must be a string or a number", name)
	}
}

// raw returns every member except skip, re-encoded as JSON. Re-encoding
// normalises what PostgreSQL's jsonb would refuse (e.g. lone surrogates).
func (p params) raw(skip ...string) map[string]json.RawMessage {
	out := make(map[string]json.RawMessage, len(p))
	for k, v := range p {
		if slices.Contains(skip, k) {
			continue
		}
		b, err := json.Marshal(v)
		if err != nil { // cannot happen for decoded values
			continue
		}
		out[k] = b
	}
	return out
}

// resourceID reads X-Kakao-Resource-ID; it becomes part of the dedupe key and
// the workflow id, so it must be short printable text.
func resourceID(r *http.Request) (string, *reqError) {
	id := strings.TrimSpace(r.Header.Get(ResourceIDHeader))
	if id == "" {
		return "", badRequest("the %s header is required", ResourceIDHeader)
	}
	if len(id) > 200 || !utf8.ValidString(id) || strings.ContainsFunc(id, func(c rune) bool { return !unicode.IsPrint(c) }) {
		return "", badRequest("the %s header must be printable text of at most 200 bytes", ResourceIDHeader)
	}
	return id, nil
}

// safeName keeps a parameter name printable and short for an error message.
func safeName(k string) string {
	if len(k) > 40 {
		k = k[:40]
	}
	return strings.Map(func(c rune) rune {
		if unicode.IsPrint(c) {
			return c
		}
		return '?'
	}, k)
}
