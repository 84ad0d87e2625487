package event

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// Normalisation for storage.
//
// An envelope is stored as PostgreSQL jsonb, and its key in a text column.
// Both refuse some values that are valid JSON or valid Go strings, and a
// refused write would be answered 503 on every delivery of the same event
// (a nickname with a NUL in a validly signed SET, say). Storable rewrites
// exactly those values and leaves everything else as it is; the delivery's
// bytes stay byte-exact in the inbox's raw column, so nothing is lost.
//
//   - U+0000 (a NUL byte in a Go string, "\u0000" in JSON text) and a lone
//     UTF-16 surrogate escape ("\ud800" without its pair) become U+FFFD;
//     so does a byte that is not valid UTF-8.
//   - A number jsonb's numeric cannot hold (more than 131072 digits before
//     the decimal point, more than 16383 after it, or an exponent beyond
//     ±10^9) becomes a JSON string holding the number's text.
//   - An array or object nested deeper than MaxStoredDepth inside a payload
//     becomes a JSON string holding its (normalised) JSON text: PostgreSQL
//     parses jsonb recursively and fails with "stack depth limit exceeded"
//     somewhere above ten thousand levels with the default max_stack_depth,
//     and below a thousand with its smallest.
//   - A payload that is not JSON at all (no route produces one) becomes a
//     JSON string holding its text.

// MaxStoredDepth is the deepest nesting of arrays and objects kept as such in
// a stored payload; deeper values are stored as JSON text (see Storable).
const MaxStoredDepth = 256

// Limits of PostgreSQL's numeric type, which jsonb uses for every number.
const (
	pgMaxLeadExponent = 131071 // 10^131071 is the largest power of ten that fits
	pgMaxScale        = 16383  // digits after the decimal point
	pgMaxExponent     = 1_000_000_000
)

// Storable returns the envelope as PostgreSQL can store it: every string
// through StorableText, the key through StorableKey and every payload
// through StorableJSON. It is idempotent, and an envelope that needs none of
// it is returned equal to e.
func (e Envelope) Storable() Envelope {
	out := e
	out.Key = StorableKey(e.Key)
	out.Source = Source(StorableText(string(e.Source)))
	out.Subject = e.Subject.storable()
	out.TxnID = StorableText(e.TxnID)
	if e.Events != nil {
		out.Events = make([]Event, len(e.Events))
		for i, ev := range e.Events {
			ev.Type = StorableText(ev.Type)
			ev.Name = StorableText(ev.Name)
			ev.Category = StorableText(ev.Category)
			ev.Subject = ev.Subject.storable()
			ev.Payload = StorableJSON(ev.Payload)
			out.Events[i] = ev
		}
	}
	return out
}

func (s Subject) storable() Subject {
	return Subject{Issuer: StorableText(s.Issuer), UserID: StorableText(s.UserID), Format: StorableText(s.Format)}
}

// StorableText replaces NUL characters and bytes that are not valid UTF-8
// with U+FFFD; s is returned as it is when it has neither.
func StorableText(s string) string {
	if utf8.ValidString(s) && !strings.ContainsRune(s, 0) {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

// StorableKey returns a dedupe key a text column can hold. A key that is
// valid UTF-8 without NUL is returned as it is. Any other key is passed
// through StorableText and suffixed with "~" and a hash of its exact bytes,
// so that two keys differing only where StorableText replaced something stay
// two keys, and the same key always maps to the same stored key.
func StorableKey(k string) string {
	if utf8.ValidString(k) && !strings.ContainsRune(k, 0) {
		return k
	}
	sum := sha256.Sum256([]byte(k))
	return StorableText(k) + "~" + hex.EncodeToString(sum[:8])
}

// StorableJSON returns raw as jsonb can hold it (see Storable). Bytes that
// need no change are copied as they are; an empty raw stays empty.
func StorableJSON(raw json.RawMessage) json.RawMessage {
	if len(raw) == 0 {
		return raw
	}
	n := normaliser{in: raw}
	n.ws()
	if err := n.value(0); err != nil || (n.ws() && n.pos != len(n.in)) {
		return jsonString(nil, string(raw))
	}
	if !n.changed {
		return raw
	}
	return n.out
}

// errSyntax stops the normaliser on input that is not JSON.
type errSyntax struct{}

func (errSyntax) Error() string { return "event: not JSON" }

// normaliser copies JSON from in to out, rewriting what jsonb would refuse.
type normaliser struct {
	in      []byte
	pos     int
	out     []byte
	changed bool
}

// ws copies whitespace and reports true (so it can sit in a condition).
func (n *normaliser) ws() bool {
	start := n.pos
	for n.pos < len(n.in) {
		switch n.in[n.pos] {
		case ' ', '\t', '\n', '\r':
			n.pos++
			continue
		}
		break
	}
	n.out = append(n.out, n.in[start:n.pos]...)
	return true
}

func (n *normaliser) value(depth int) error {
	if n.pos >= len(n.in) {
		return errSyntax{}
	}
	switch c := n.in[n.pos]; {
	case c == '{' || c == '[':
		if depth >= MaxStoredDepth {
			return n.deep()
		}
		if c == '{' {
			return n.object(depth + 1)
		}
		return n.array(depth + 1)
	case c == '"':
		return n.str()
	case c == 't':
		return n.literal("true")
	case c == 'f':
		return n.literal("false")
	case c == 'n':
		return n.literal("null")
	case c == '-' || (c >= '0' && c <= '9'):
		return n.number()
	}
	return errSyntax{}
}

func (n *normaliser) object(depth int) error {
	n.out = append(n.out, '{')
	n.pos++
	n.ws()
	if n.pos < len(n.in) && n.in[n.pos] == '}' {
		n.out = append(n.out, '}')
		n.pos++
		return nil
	}
	for {
		n.ws()
		if n.pos >= len(n.in) || n.in[n.pos] != '"' {
			return errSyntax{}
		}
		if err := n.str(); err != nil {
			return err
		}
		n.ws()
		if n.pos >= len(n.in) || n.in[n.pos] != ':' {
			return errSyntax{}
		}
		n.out = append(n.out, ':')
		n.pos++
		n.ws()
		if err := n.value(depth); err != nil {
			return err
		}
		if done, err := n.after('}'); done || err != nil {
			return err
		}
	}
}

// after reads what follows a member or element: a comma (more to come) or
// the container's close, which ends it.
func (n *normaliser) after(close byte) (done bool, err error) {
	n.ws()
	if n.pos >= len(n.in) {
		return false, errSyntax{}
	}
	switch n.in[n.pos] {
	case ',':
		n.out = append(n.out, ',')
		n.pos++
		return false, nil
	case close:
		n.out = append(n.out, close)
		n.pos++
		return true, nil
	}
	return false, errSyntax{}
}

func (n *normaliser) array(depth int) error {
	n.out = append(n.out, '[')
	n.pos++
	n.ws()
	if n.pos < len(n.in) && n.in[n.pos] == ']' {
		n.out = append(n.out, ']')
		n.pos++
		return nil
	}
	for {
		n.ws()
		if err := n.value(depth); err != nil {
			return err
		}
		if done, err := n.after(']'); done || err != nil {
			return err
		}
	}
}

// deep stores the array or object at n.pos, nested too deeply, as a JSON
// string of its normalised text. The scan is iterative: the nesting may be as
// deep as the body is long.
func (n *normaliser) deep() error {
	start, level := n.pos, 0
	for n.pos < len(n.in) {
		switch n.in[n.pos] {
		case '"':
			// Strings are skipped by the tokeniser so brackets inside them
			// do not count; their text is normalised below.
			sub := normaliser{in: n.in, pos: n.pos}
			if err := sub.str(); err != nil {
				return err
			}
			n.pos = sub.pos
			continue
		case '[', '{':
			level++
		case ']', '}':
			level--
		}
		n.pos++
		if level == 0 {
			break
		}
	}
	if level != 0 {
		return errSyntax{}
	}
	// The text is checked to be JSON (without the depth limit) before it is
	// kept as a string, so that the string is the value's JSON text.
	text := n.in[start:n.pos]
	if !json.Valid(text) {
		return errSyntax{}
	}
	inner := normaliser{in: text}
	inner.flat()
	n.out = jsonString(n.out, string(inner.out))
	n.changed = true
	return nil
}

// flat copies n.in to n.out with every string and number normalised, at any
// depth, without recursion (n.in is known to be JSON).
func (n *normaliser) flat() {
	for n.pos < len(n.in) {
		switch c := n.in[n.pos]; {
		case c == '"':
			_ = n.str()
		case c == '-' || (c >= '0' && c <= '9'):
			_ = n.number()
		default:
			n.out = append(n.out, c)
			n.pos++
		}
	}
}

func (n *normaliser) literal(lit string) error {
	if !bytes.HasPrefix(n.in[n.pos:], []byte(lit)) {
		return errSyntax{}
	}
	n.out = append(n.out, lit...)
	n.pos += len(lit)
	return nil
}

// str copies the string token at n.pos, or re-encodes it with U+FFFD in
// place of NUL, lone surrogates and invalid UTF-8.
func (n *normaliser) str() error {
	start := n.pos
	n.pos++ // opening quote
	bad := false
	for {
		if n.pos >= len(n.in) {
			return errSyntax{}
		}
		c := n.in[n.pos]
		switch {
		case c == '"':
			n.pos++
			if !bad {
				n.out = append(n.out, n.in[start:n.pos]...)
				return nil
			}
			s, ok := decodeString(n.in[start+1 : n.pos-1])
			if !ok {
				return errSyntax{}
			}
			n.out = jsonString(n.out, s)
			n.changed = true
			return nil
		case c == '\\':
			if n.pos+1 >= len(n.in) {
				return errSyntax{}
			}
			switch n.in[n.pos+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				n.pos += 2
				continue
			case 'u':
			default:
				return errSyntax{}
			}
			r, ok := hex4(n.in, n.pos+2)
			if !ok {
				return errSyntax{}
			}
			n.pos += 6
			switch {
			case r == 0:
				bad = true
			case utf16.IsSurrogate(r):
				r2, ok := rune(-1), false
				if n.pos+1 < len(n.in) && n.in[n.pos] == '\\' && n.in[n.pos+1] == 'u' {
					r2, ok = hex4(n.in, n.pos+2)
				}
				if r >= 0xDC00 || !ok || r2 < 0xDC00 || r2 > 0xDFFF {
					bad = true // a low surrogate first, or a high one alone
					continue
				}
				n.pos += 6
			}
		case c < 0x20:
			return errSyntax{}
		case c < utf8.RuneSelf:
			n.pos++
		default:
			r, size := utf8.DecodeRune(n.in[n.pos:])
			if r == utf8.RuneError && size == 1 {
				bad = true
			}
			n.pos += size
		}
	}
}

func hex4(b []byte, at int) (rune, bool) {
	if at+4 > len(b) {
		return 0, false
	}
	var r rune
	for _, c := range b[at : at+4] {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			r |= rune(c - 'A' + 10)
		default:
			return 0, false
		}
	}
	return r, true
}

// decodeString decodes the body of a JSON string (without its quotes),
// replacing NUL, lone surrogates and invalid UTF-8 with U+FFFD.
func decodeString(b []byte) (string, bool) {
	var sb strings.Builder
	for i := 0; i < len(b); {
		c := b[i]
		if c != '\\' {
			r, size := utf8.DecodeRune(b[i:])
			if r == 0 {
				r = utf8.RuneError
			}
			sb.WriteRune(r)
			i += size
			continue
		}
		if i+1 >= len(b) {
			return "", false
		}
		switch b[i+1] {
		case '"', '\\', '/':
			sb.WriteByte(b[i+1])
		case 'b':
			sb.WriteByte('\b')
		case 'f':
			sb.WriteByte('\f')
		case 'n':
			sb.WriteByte('\n')
		case 'r':
			sb.WriteByte('\r')
		case 't':
			sb.WriteByte('\t')
		case 'u':
			r, ok := hex4(b, i+2)
			if !ok {
				return "", false
			}
			i += 6
			if utf16.IsSurrogate(r) {
				if r < 0xDC00 && i+1 < len(b) && b[i] == '\\' && b[i+1] == 'u' {
					if r2, ok := hex4(b, i+2); ok && r2 >= 0xDC00 && r2 <= 0xDFFF {
						sb.WriteRune(utf16.DecodeRune(r, r2))
						i += 6
						continue
					}
				}
				r = utf8.RuneError
			}
			if r == 0 {
				r = utf8.RuneError
			}
			sb.WriteRune(r)
			continue
		default:
			return "", false
		}
		i += 2
	}
	return sb.String(), true
}

// jsonString appends s as a JSON string: quotes, backslashes and control
// characters escaped, NUL and invalid UTF-8 as U+FFFD, nothing else escaped.
func jsonString(dst []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	dst = append(dst, '"')
	for _, r := range s { // invalid UTF-8 yields U+FFFD
		switch {
		case r == 0:
			dst = utf8.AppendRune(dst, utf8.RuneError)
		case r == '"' || r == '\\':
			dst = append(dst, '\\', byte(r))
		case r == '\n':
			dst = append(dst, '\\', 'n')
		case r == '\r':
			dst = append(dst, '\\', 'r')
		case r == '\t':
			dst = append(dst, '\\', 't')
		case r < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[r>>4], hexDigits[r&0xF])
		default:
			dst = utf8.AppendRune(dst, r)
		}
	}
	return append(dst, '"')
}

// number copies the number token at n.pos, or stores it as a JSON string of
// its text when PostgreSQL's numeric cannot hold it.
func (n *normaliser) number() error {
	start := n.pos
	if n.in[n.pos] == '-' {
		n.pos++
	}
	intStart := n.pos
	if n.pos < len(n.in) && n.in[n.pos] == '0' {
		n.pos++
	} else if !n.digits() {
		return errSyntax{}
	}
	intDigits := n.in[intStart:n.pos]
	var frac []byte
	if n.pos < len(n.in) && n.in[n.pos] == '.' {
		n.pos++
		fs := n.pos
		if !n.digits() {
			return errSyntax{}
		}
		frac = n.in[fs:n.pos]
	}
	var exp []byte
	expNeg := false
	if n.pos < len(n.in) && (n.in[n.pos] == 'e' || n.in[n.pos] == 'E') {
		n.pos++
		if n.pos < len(n.in) && (n.in[n.pos] == '+' || n.in[n.pos] == '-') {
			expNeg = n.in[n.pos] == '-'
			n.pos++
		}
		es := n.pos
		if !n.digits() {
			return errSyntax{}
		}
		exp = n.in[es:n.pos]
	}
	text := n.in[start:n.pos]
	if numericHolds(intDigits, frac, exp, expNeg) {
		n.out = append(n.out, text...)
		return nil
	}
	n.out = jsonString(n.out, string(text))
	n.changed = true
	return nil
}

func (n *normaliser) digits() bool {
	start := n.pos
	for n.pos < len(n.in) && n.in[n.pos] >= '0' && n.in[n.pos] <= '9' {
		n.pos++
	}
	return n.pos > start
}

// numericHolds reports whether PostgreSQL's numeric can hold the number
// with these integer digits, fraction digits and exponent digits.
func numericHolds(intDigits, frac, exp []byte, expNeg bool) bool {
	exp = bytes.TrimLeft(exp, "0")
	if len(exp) > 10 {
		return false
	}
	e := int64(0)
	for _, c := range exp {
		e = e*10 + int64(c-'0')
	}
	if e > pgMaxExponent {
		return false
	}
	if expNeg {
		e = -e
	}
	// Digits after the decimal point, as PostgreSQL counts them (trailing
	// zeros included).
	if int64(len(frac))-e > pgMaxScale {
		return false
	}
	// Decimal exponent of the most significant non-zero digit.
	var lead int64
	if i := bytes.IndexFunc(intDigits, func(r rune) bool { return r != '0' }); i >= 0 {
		lead = int64(len(intDigits)-1-i) + e
	} else if j := bytes.IndexFunc(frac, func(r rune) bool { return r != '0' }); j >= 0 {
		lead = -int64(j+1) + e
	} else {
		return true // zero
	}
	return lead <= pgMaxLeadExponent
}
