package secevent

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math"
	"strconv"
	"time"
	"unicode/utf8"
)

// Strict JSON decoding.
//
// encoding/json silently keeps the LAST of duplicate object members, while
// other JSON parsers keep the first. A token such as {"iss":"a","iss":"b"}
// could then mean different things to different components (a classic
// confusion attack), so every JSON document taken from a token is first
// walked with checkStrictJSON, which refuses duplicates, invalid UTF-8 (which
// encoding/json would silently replace), trailing data and excessive nesting.
// After that check, decoding into map[string]json.RawMessage is unambiguous.
// Claims are then read by exact member name from the map: decoding into
// structs is avoided because encoding/json matches struct fields
// case-insensitively ("ISS" would fill Iss).

// maxJSONDepth bounds nesting of objects and arrays in token JSON.
const maxJSONDepth = 32

var (
	errDuplicateKey = errors.New("duplicate object member")
	errTooDeep      = errors.New("JSON nesting too deep")
	errInvalidUTF8  = errors.New("invalid UTF-8")
	errTrailingData = errors.New("data after JSON value")
	errNotObject    = errors.New("not a JSON object")
)

// checkStrictJSON reports whether data is exactly one well-formed JSON value
// (RFC 8259) without duplicate object members, in valid UTF-8, with nesting
// depth ≤ maxJSONDepth.
func checkStrictJSON(data []byte) error {
	_, err := scanStrict(data, nil)
	return err
}

// decodeObject strictly decodes a JSON object into its members. Values are
// sub-slices of data (callers copy when they keep them beyond data's life).
func decodeObject(data []byte) (map[string]json.RawMessage, error) {
	m := make(map[string]json.RawMessage, 8)
	top, err := scanStrict(data, m)
	if err != nil {
		return nil, err
	}
	if top != '{' {
		return nil, errNotObject
	}
	return m, nil
}

// scanStrict validates data as one strict JSON value and returns its first
// byte. When members is non-nil and the value is an object, its members are
// stored there (member name decoded, value raw).
//
// It is a small hand-written recursive-descent scanner: the
// encoding/json Token API costs more than the RSA signature check on a
// typical SET, and this runs on every delivery (and, for the header, before
// the signature is checked).
func scanStrict(data []byte, members map[string]json.RawMessage) (byte, error) {
	if !utf8.Valid(data) {
		return 0, errInvalidUTF8
	}
	sc := jsonScanner{data: data}
	sc.ws()
	if sc.pos >= len(sc.data) {
		return 0, io.ErrUnexpectedEOF
	}
	top := sc.data[sc.pos]
	if err := sc.value(0, members); err != nil {
		return 0, err
	}
	sc.ws()
	if sc.pos != len(sc.data) {
		return 0, errTrailingData
	}
	return top, nil
}

type jsonScanner struct {
	data []byte
	pos  int
}

var errSyntax = errors.New("invalid JSON")

func (sc *jsonScanner) ws() {
	for sc.pos < len(sc.data) {
		switch sc.data[sc.pos] {
		case ' ', '\t', '\n', '\r':
			sc.pos++
		default:
			return
		}
	}
}

func (sc *jsonScanner) value(depth int, members map[string]json.RawMessage) error {
	if sc.pos >= len(sc.data) {
		return io.ErrUnexpectedEOF
	}
	switch c := sc.data[sc.pos]; {
	case c == '{':
		if depth >= maxJSONDepth {
			return errTooDeep
		}
		return sc.object(depth+1, members)
	case c == '[':
		if depth >= maxJSONDepth {
			return errTooDeep
		}
		return sc.array(depth + 1)
	case c == '"':
		_, _, err := sc.str()
		return err
	case c == 't':
		return sc.literal("true")
	case c == 'f':
		return sc.literal("false")
	case c == 'n':
		return sc.literal("null")
	case c == '-' || (c >= '0' && c <= '9'):
		return sc.number()
	}
	return errSyntax
}

// smallObject is the member count up to which duplicate detection uses a
// linear scan instead of a map.
const smallObject = 16

func (sc *jsonScanner) object(depth int, members map[string]json.RawMessage) error {
	sc.pos++ // '{'
	sc.ws()
	if sc.pos < len(sc.data) && sc.data[sc.pos] == '}' {
		sc.pos++
		return nil
	}
	var small [smallObject]string
	n := 0
	var seen map[string]struct{}
	for {
		sc.ws()
		if sc.pos >= len(sc.data) || sc.data[sc.pos] != '"' {
			return errSyntax
		}
		raw, escaped, err := sc.str()
		if err != nil {
			return err
		}
		var key string
		if escaped {
			if err := json.Unmarshal(raw, &key); err != nil {
				return errSyntax
			}
		} else {
			key = string(raw[1 : len(raw)-1])
		}
		if seen == nil {
			for _, k := range small[:n] {
				if k == key {
					return errDuplicateKey
				}
			}
			if n < smallObject {
				small[n] = key
				n++
			} else {
				seen = make(map[string]struct{}, 2*smallObject)
				for _, k := range small[:n] {
					seen[k] = struct{}{}
				}
			}
		}
		if seen != nil {
			if _, dup := seen[key]; dup {
				return errDuplicateKey
			}
			seen[key] = struct{}{}
		}
		sc.ws()
		if sc.pos >= len(sc.data) || sc.data[sc.pos] != ':' {
			return errSyntax
		}
		sc.pos++
		sc.ws()
		start := sc.pos
		if err := sc.value(depth, nil); err != nil {
			return err
		}
		if members != nil {
			members[key] = json.RawMessage(sc.data[start:sc.pos])
		}
		if done, err := sc.next('}'); done || err != nil {
			return err
		}
	}
}

// next reads what follows a member or an element: ',' (more follow) or
// closer (done).
func (sc *jsonScanner) next(closer byte) (done bool, err error) {
	sc.ws()
	if sc.pos >= len(sc.data) {
		return false, io.ErrUnexpectedEOF
	}
	switch sc.data[sc.pos] {
	case ',':
		sc.pos++
		return false, nil
	case closer:
		sc.pos++
		return true, nil
	}
	return false, errSyntax
}

func (sc *jsonScanner) array(depth int) error {
	sc.pos++ // '['
	sc.ws()
	if sc.pos < len(sc.data) && sc.data[sc.pos] == ']' {
		sc.pos++
		return nil
	}
	for {
		sc.ws()
		if err := sc.value(depth, nil); err != nil {
			return err
		}
		if done, err := sc.next(']'); done || err != nil {
			return err
		}
	}
}

// str scans a string token and returns it with its quotes.
func (sc *jsonScanner) str() (raw []byte, escaped bool, err error) {
	start := sc.pos
	sc.pos++ // opening quote
	for sc.pos < len(sc.data) {
		c := sc.data[sc.pos]
		switch {
		case c == '"':
			sc.pos++
			return sc.data[start:sc.pos], escaped, nil
		case c == '\\':
			escaped = true
			sc.pos++
			if sc.pos >= len(sc.data) {
				return nil, false, io.ErrUnexpectedEOF
			}
			switch sc.data[sc.pos] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				sc.pos++
			case 'u':
				if sc.pos+5 > len(sc.data) {
					return nil, false, io.ErrUnexpectedEOF
				}
				for _, h := range sc.data[sc.pos+1 : sc.pos+5] {
					if !isHex(h) {
						return nil, false, errSyntax
					}
				}
				sc.pos += 5
			default:
				return nil, false, errSyntax
			}
		case c < 0x20:
			return nil, false, errSyntax
		default:
			sc.pos++
		}
	}
	return nil, false, io.ErrUnexpectedEOF
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func (sc *jsonScanner) digits() bool {
	start := sc.pos
	for sc.pos < len(sc.data) && isDigit(sc.data[sc.pos]) {
		sc.pos++
	}
	return sc.pos > start
}

// number scans -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (sc *jsonScanner) number() error {
	if sc.data[sc.pos] == '-' {
		sc.pos++
	}
	if sc.pos >= len(sc.data) {
		return io.ErrUnexpectedEOF
	}
	if sc.data[sc.pos] == '0' {
		sc.pos++
	} else if !sc.digits() {
		return errSyntax
	}
	if sc.pos < len(sc.data) && sc.data[sc.pos] == '.' {
		sc.pos++
		if !sc.digits() {
			return errSyntax
		}
	}
	if sc.pos < len(sc.data) && (sc.data[sc.pos] == 'e' || sc.data[sc.pos] == 'E') {
		sc.pos++
		if sc.pos < len(sc.data) && (sc.data[sc.pos] == '+' || sc.data[sc.pos] == '-') {
			sc.pos++
		}
		if !sc.digits() {
			return errSyntax
		}
	}
	return nil
}

func (sc *jsonScanner) literal(lit string) error {
	if len(sc.data)-sc.pos < len(lit) || string(sc.data[sc.pos:sc.pos+len(lit)]) != lit {
		return errSyntax
	}
	sc.pos += len(lit)
	return nil
}

// jsonKind classifies a raw JSON value by its first byte.
type jsonKind int

const (
	kindInvalid jsonKind = iota
	kindNull
	kindBool
	kindNumber
	kindString
	kindArray
	kindObject
)

func kindOf(raw json.RawMessage) jsonKind {
	raw = bytes.TrimLeft(raw, " \t\r\n")
	if len(raw) == 0 {
		return kindInvalid
	}
	switch c := raw[0]; {
	case c == 'n':
		return kindNull
	case c == 't' || c == 'f':
		return kindBool
	case c == '"':
		return kindString
	case c == '[':
		return kindArray
	case c == '{':
		return kindObject
	case c == '-' || (c >= '0' && c <= '9'):
		return kindNumber
	}
	return kindInvalid
}

// rawString decodes a JSON string value; ok is false for any other kind.
func rawString(raw json.RawMessage) (string, bool) {
	if kindOf(raw) != kindString {
		return "", false
	}
	raw = bytes.TrimSpace(raw)
	if n := len(raw); n >= 2 && raw[n-1] == '"' && plainString(raw[1:n-1]) {
		return string(raw[1 : n-1]), true
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false
	}
	return s, true
}

// plainString reports whether b (a string body without quotes) needs no
// unescaping: no quote, backslash or control character, valid UTF-8.
func plainString(b []byte) bool {
	for _, c := range b {
		if c == '"' || c == '\\' || c < 0x20 {
			return false
		}
	}
	return utf8.Valid(b)
}

// rawStringArray decodes a JSON array of strings.
func rawStringArray(raw json.RawMessage) ([]string, bool) {
	if kindOf(raw) != kindArray {
		return nil, false
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, false
	}
	out := make([]string, 0, len(items))
	for _, it := range items {
		s, ok := rawString(it)
		if !ok {
			return nil, false
		}
		out = append(out, s)
	}
	return out, true
}

// rawNumber decodes a finite JSON number.
func rawNumber(raw json.RawMessage) (float64, bool) {
	if kindOf(raw) != kindNumber {
		return 0, false
	}
	f, err := strconv.ParseFloat(string(bytes.TrimSpace(raw)), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, false
	}
	return f, true
}

// maxNumericDate is 9999-12-31T23:59:59Z; larger values are refused so the
// conversion to int64 can never overflow.
const maxNumericDate = 253402300799

// numericDate converts an RFC 7519 NumericDate (seconds, possibly fractional)
// to a time. Negative or absurdly large values are refused.
func numericDate(f float64) (time.Time, bool) {
	if f < 0 || f > maxNumericDate {
		return time.Time{}, false
	}
	sec := math.Floor(f)
	nsec := math.Round((f - sec) * 1e9)
	return time.Unix(int64(sec), int64(nsec)).UTC(), true
}

// rawNumericDate decodes a NumericDate claim value.
func rawNumericDate(raw json.RawMessage) (time.Time, bool) {
	f, ok := rawNumber(raw)
	if !ok {
		return time.Time{}, false
	}
	return numericDate(f)
}

// lenientTimestamp decodes an event timestamp that may be seconds or, as
// some transmitters do, milliseconds (values above 1e12 are milliseconds:
// 1e12 seconds is year 33658). Numeric strings are tolerated. Non-positive
// or unparsable values report ok=false so the caller falls back.
func lenientTimestamp(raw json.RawMessage) (time.Time, bool) {
	var f float64
	switch kindOf(raw) {
	case kindNumber:
		v, ok := rawNumber(raw)
		if !ok {
			return time.Time{}, false
		}
		f = v
	case kindString:
		s, _ := rawString(raw)
		v, err := strconv.ParseFloat(s, 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
			return time.Time{}, false
		}
		f = v
	default:
		return time.Time{}, false
	}
	if f <= 0 {
		return time.Time{}, false
	}
	if f > 1e12 {
		// Milliseconds: split before dividing so 1744770000123 is exactly
		// .123 s and not .122999907 s.
		if f > maxNumericDate*1000 {
			return time.Time{}, false
		}
		ms := math.Round(f)
		sec := math.Floor(ms / 1000)
		return time.Unix(int64(sec), int64(ms-sec*1000)*int64(time.Millisecond)).UTC(), true
	}
	return numericDate(f)
}
