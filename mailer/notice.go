package mailer

import (
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"net/mail"
	"path"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"
)

// Kind names a security notice. The kinds are policy's (policy.Notices,
// which send_notice accepts); the mailer has a template for each, named by
// the kind, and its tests check that the two agree.
type Kind string

// Kinds lists the notice kinds the mailer has templates for.
func Kinds() []Kind { return slices.Clone(templateKinds()) }

var templateKinds = sync.OnceValue(func() []Kind {
	files, _ := fs.Glob(templateFS, "templates/*."+DefaultLocale+".subject")
	kinds := make([]Kind, 0, len(files))
	for _, f := range files {
		kinds = append(kinds, Kind(strings.TrimSuffix(path.Base(f), "."+DefaultLocale+".subject")))
	}
	return kinds
})

// Valid reports whether k is one of Kinds.
func (k Kind) Valid() bool {
	for _, known := range Kinds() {
		if k == known {
			return true
		}
	}
	return false
}

// Locales with templates. Kakao's users are mostly Korean, so Korean is the
// default for an empty or unknown locale.
const (
	LocaleKorean  = "ko"
	LocaleEnglish = "en"
	DefaultLocale = LocaleKorean
)

// Locales lists the locales that have templates.
func Locales() []string { return []string{LocaleKorean, LocaleEnglish} }

// NormalizeLocale maps a locale tag ("en-US", "ko_KR", "EN") to a supported
// locale, falling back to DefaultLocale.
func NormalizeLocale(tag string) string {
	tag = strings.ToLower(strings.TrimSpace(tag))
	if i := strings.IndexAny(tag, "-_"); i >= 0 {
		tag = tag[:i]
	}
	for _, l := range Locales() {
		if tag == l {
			return l
		}
	}
	return DefaultLocale
}

// Notice is one security notice to one user.
type Notice struct {
	Kind Kind
	To   string // bare address, e.g. "user@example.com"
	Name string // optional; greets the user by name
	// Locale is "ko" or "en" (region subtags accepted); anything else is "ko".
	Locale    string
	EventTime time.Time // when the event happened (toe / event_timestamp / iat)
	// IdempotencyKey identifies this notice for this event (event key + step);
	// the Message-ID is derived from it.
	IdempotencyKey string
}

// validate returns a permanent error: resending the same notice cannot fix it.
// Messages name the field, never its value (address and name are PII).
func (n Notice) validate() error {
	switch {
	case !n.Kind.Valid():
		return permanent("notice", "unknown notice kind %q", string(n.Kind))
	case n.IdempotencyKey == "":
		return permanent("notice", "idempotency key is empty")
	case n.EventTime.IsZero():
		return permanent("notice", "event time is missing")
	}
	if err := validRecipient(n.To); err != nil {
		return err
	}
	return nil
}

func validRecipient(to string) error {
	if to == "" {
		return permanent("notice", "recipient address is empty")
	}
	a, err := mail.ParseAddress(to)
	// Only a bare addr-spec: a display name or group here would change what
	// goes into the To header and the envelope.
	if err != nil || a.Address != to || !strings.Contains(to, "@") {
		return permanent("notice", "recipient address is invalid")
	}
	return nil
}

// MessageID returns the Message-ID header value (with angle brackets) for an
// idempotency key: the same key always gives the same ID, so every retry of a
// send carries it.
func MessageID(idempotencyKey, domain string) string {
	sum := sha256.Sum256([]byte(idempotencyKey))
	return "<" + hex.EncodeToString(sum[:])[:32] + "@" + domain + ">"
}

// cleanName keeps a display name to one short line of printable text; it is
// untrusted input from the identity provider.
func cleanName(name string) string {
	name = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' {
			return ' '
		}
		return r
	}, name)
	name = strings.Join(strings.Fields(name), " ")
	if r := []rune(name); len(r) > 64 {
		name = string(r[:64]) + "…"
	}
	return name
}

// seoul is Asia/Seoul. Korea has kept UTC+9 without daylight saving since
// 1988, so a fixed zone is exact and needs no tzdata on the host.
var seoul = time.FixedZone("KST", 9*60*60)

var koWeekdays = [...]string{"일", "월", "화", "수", "목", "금", "토"}

// formatEventTime renders the event time for the locale: Korean readers get
// Seoul time, English readers UTC.
func formatEventTime(t time.Time, locale string) string {
	if locale == LocaleKorean {
		t = t.In(seoul)
		return t.Format("2006년 1월 2일 (") + koWeekdays[t.Weekday()] + t.Format(") 15:04 KST")
	}
	return t.UTC().Format("Monday, 2 January 2006, 15:04 UTC")
}
