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

// authorize answers 401 unless the request carries a configured admin key in
// exactly one Authorization header: with two, which one counts would be a
// guess, so neither does.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request, route string) bool {
	auth := r.Header.Values("Authorization")
	if len(auth) == 1 && s.Kakao.authorized(auth[0]) {
		return true
	}
	desc := "Authorization must be KakaoAK with the app's admin key"
	switch {
	case len(s.Kakao.AdminKeys) == 0:
		desc = "no admin key is configured for this webhook"
	case len(auth) > 1:
		desc = "Authorization must be given once"
	}
	s.fail(w, r, route, &reqError{status: http.StatusUnauthorized, code: secevent.CodeAuthenticationFailed, desc: desc})
	return false
}

// singleHeader returns a header that may be given at most once; a repeated
// one is refused rather than one of its values silently taken.
func singleHeader(r *http.Request, name string) (string, *reqError) {
	vs := r.Header.Values(name)
	if len(vs) > 1 {
		return "", badRequest("the %s header must be given once", name)
	}
	if len(vs) == 0 {
		return "", nil
	}
	return vs[0], nil
}

// encodings a route accepts.
type encodings uint8

const (
	encQuery encodings = 1 << iota // GET query string (or a POST without a body)
	encForm                        // POST application/x-www-form-urlencoded
	encJSON                        // POST application/json
)

// params are a delivery's top-level members: string or repeated from a query
// or form, any JSON value (numbers as json.Number) from a JSON body.
type params map[string]any

// repeated holds the values of a query or form key given more than once.
type repeated []any

// readParams reads the delivery's members from exactly one place: the query
// string of a GET (which must have no body), else the POST body in one of the
// accepted encodings (the query string when the body is empty). raw is what
// gets stored as the inbox entry's raw bytes: that body or query string.
// fields are the members the route defines: on a POST with a body, a query
// string naming one of them, or a member the body has, is refused as two
// sources for one member; any other query member (say, one configured into
// the callback URL) is ignored.
func (s *Server) readParams(w http.ResponseWriter, r *http.Request, accept encodings, fields ...string) (params, []byte, *reqError) {
	body, rerr := s.readBody(w, r)
	if rerr != nil {
		return nil, nil, rerr
	}
	if r.Method == http.MethodGet {
		if len(body) > 0 {
			return nil, nil, badRequest("a GET request carries its members in the query string and must not have a body")
		}
		p, err := queryParams(r.URL.RawQuery)
		return p, []byte(r.URL.RawQuery), err
	}
	if len(bytes.TrimSpace(body)) == 0 {
		if accept&encQuery != 0 && r.URL.RawQuery != "" {
			p, err := queryParams(r.URL.RawQuery)
			return p, []byte(r.URL.RawQuery), err
		}
		return nil, nil, badRequest("the request body is empty")
	}
	ct, rerr := singleHeader(r, "Content-Type")
	if rerr != nil {
		return nil, nil, rerr
	}
	mt, _, _ := mime.ParseMediaType(ct)
	var p params
	switch {
	case mt == "application/x-www-form-urlencoded" && accept&encForm != 0:
		p, rerr = queryParams(string(body))
	case (mt == "application/json" || strings.HasSuffix(mt, "+json")) && accept&encJSON != 0:
		p, rerr = jsonParams(body)
	default:
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
	if rerr != nil {
		return nil, nil, rerr
	}
	if r.URL.RawQuery != "" {
		q, rerr := queryParams(r.URL.RawQuery)
		if rerr != nil {
			return nil, nil, rerr
		}
		for k := range q {
			if _, inBody := p[k]; inBody || slices.Contains(fields, k) {
				return nil, nil, badRequest("%s is given in the query string of a POST with a body", safeName(k))
			}
		}
	}
	return p, body, nil
}

// readBody reads the whole body (at most MaxBody bytes). A Content-Encoding
// other than identity is refused: the body would not be what it claims to be.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, *reqError) {
	for _, ce := range r.Header.Values("Content-Encoding") {
		if ce = strings.TrimSpace(ce); ce != "" && !strings.EqualFold(ce, "identity") {
			return nil, &reqError{status: http.StatusUnsupportedMediaType, code: secevent.CodeInvalidRequest,
				desc: "Content-Encoding is not supported"}
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.maxBody()))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, &reqError{status: http.StatusRequestEntityTooLarge, code: secevent.CodeInvalidRequest,
				desc: "the request body is too large"}
		}
		return nil, badRequest("the request body could not be read")
	}
	return body, nil
}

// queryParams reads a query string or form body. Names and values must be
// UTF-8 once decoded (Kakao sends UTF-8; anything else would be stored
// garbled). A NUL is kept here and stored as U+FFFD (see Server.store);
// the fields that name things refuse it (checkName).
func queryParams(q string) (params, *reqError) {
	vals, err := url.ParseQuery(q)
	if err != nil {
		return nil, badRequest("the form or query string is malformed")
	}
	p := make(params, len(vals))
	for k, vs := range vals {
		if !utf8.ValidString(k) {
			return nil, badRequest("a parameter name is not UTF-8")
		}
		for _, v := range vs {
			if !utf8.ValidString(v) {
				return nil, badRequest("parameter %s is not UTF-8", safeName(k))
			}
		}
		if len(vs) == 1 {
			p[k] = vs[0]
			continue
		}
		list := make(repeated, len(vs))
		for i, v := range vs {
			list[i] = v
		}
		p[k] = list
	}
	return p, nil
}

var errDuplicateMember = errors.New("duplicate member")

// jsonParams reads a JSON body: one object, UTF-8 (RFC 8259), without a
// member name given twice in any object (encoding/json would silently keep
// the last one, other parsers the first). Any nesting and any number are
// accepted; what PostgreSQL cannot hold is normalised when stored, and so
// are NUL and lone surrogates.
func jsonParams(body []byte) (params, *reqError) {
	if !utf8.Valid(body) {
		return nil, badRequest("the body is not UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	v, err := jsonValue(dec)
	if errors.Is(err, errDuplicateMember) {
		return nil, badRequest("the body has a member name twice in one object")
	}
	if err != nil {
		return nil, badRequest("the body is not valid JSON")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, badRequest("the body holds more than one JSON value")
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, badRequest("the body must be a JSON object")
	}
	return params(obj), nil
}

// jsonValue decodes the next value token by token, refusing duplicate member
// names. Unlike Decoder.Decode it has no nesting limit: the body size bounds it.
func jsonValue(dec *json.Decoder) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return tok, nil // string, json.Number, bool or nil
	}
	switch d {
	case '{':
		m := map[string]any{}
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return nil, err
			}
			k, ok := kt.(string)
			if !ok {
				return nil, errors.New("member name is not a string")
			}
			if _, dup := m[k]; dup {
				return nil, errDuplicateMember
			}
			if m[k], err = jsonValue(dec); err != nil {
				return nil, err
			}
		}
		_, err := dec.Token() // '}'
		return m, err
	case '[':
		list := []any{}
		for dec.More() {
			v, err := jsonValue(dec)
			if err != nil {
				return nil, err
			}
			list = append(list, v)
		}
		_, err := dec.Token() // ']'
		return list, err
	}
	return nil, errors.New("unexpected delimiter")
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
	case repeated:
		return "", false, badRequest("%s must be given once", name)
	default:
		return "", false, badRequest("%s must be a string or a number", name)
	}
}

// raw returns every member except skip, re-encoded as JSON (what PostgreSQL's
// jsonb would refuse is normalised when the envelope is stored).
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

// maxNameLength bounds the fields that name things: ids, channel ids, the
// resource id.
const maxNameLength = 200

// resourceID reads X-Kakao-Resource-ID; it becomes part of the dedupe key and
// the workflow id, so it must be given once, as short printable text.
func resourceID(r *http.Request) (string, *reqError) {
	id, rerr := singleHeader(r, ResourceIDHeader)
	if rerr != nil {
		return "", rerr
	}
	id = strings.TrimSpace(id)
	if id == "" {
		return "", badRequest("the %s header is required", ResourceIDHeader)
	}
	if !printableName(id) {
		return "", badRequest("the %s header must be printable text of at most %d bytes", ResourceIDHeader, maxNameLength)
	}
	return id, nil
}

// printableName reports whether v is UTF-8 printable text (no control
// character, NUL included) of at most maxNameLength bytes.
func printableName(v string) bool {
	return len(v) <= maxNameLength && utf8.ValidString(v) &&
		!strings.ContainsFunc(v, func(c rune) bool { return !unicode.IsPrint(c) })
}

// checkName refuses a value of a field that names something (a user id, a
// channel id) unless it is printable text of at most maxNameLength bytes: it
// becomes a subject, a key or a table column, where a NUL, a control
// character or 100 KiB has no place. Its value is never quoted.
func checkName(field, v string) *reqError {
	if v == "" || printableName(v) {
		return nil
	}
	return badRequest("%s must be printable text of at most %d bytes", field, maxNameLength)
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
