package mailer

import (
	"io/fs"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"
)

// 05:03 UTC is 14:03 in Seoul, same day; 20:30 UTC is 05:30 the next day.
var (
	eventTime     = time.Date(2024, 3, 5, 5, 3, 0, 0, time.UTC)
	lateEventTime = time.Date(2024, 3, 5, 20, 30, 0, 0, time.UTC)
)

func testConfig() Config {
	return Config{
		Host:            "127.0.0.1",
		Port:            2525,
		TLS:             TLSNone,
		From:            "Acme Security <security@acme.example>",
		MessageIDDomain: "mail.acme.example",
		ServiceName:     "Acme",
		Timeout:         5 * time.Second,
	}
}

func newMailer(t *testing.T, cfg Config) *Mailer {
	t.Helper()
	m, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return m
}

func notice(kind Kind, locale string) Notice {
	return Notice{
		Kind:           kind,
		To:             "kim.kakao@example.com",
		Name:           "김카카오",
		Locale:         locale,
		EventTime:      eventTime,
		IdempotencyKey: "evt-123/" + string(kind) + "/email",
	}
}

// want lists what each rendering must say, per kind and locale.
var want = map[Kind]map[string]struct {
	subject []string
	body    []string
}{
	NoticeAccountHijacked: {
		"ko": {[]string{"[Acme]", "도용"}, []string{"도용", "모든 세션 종료", "잠시 막아", "accounts.kakao.com", "비밀번호를 새로 설정"}},
		"en": {[]string{"[Acme]", "taken over"}, []string{"taken it over", "all sessions ended", "Locked your Acme account", "accounts.kakao.com", "new Kakao Account password"}},
	},
	NoticeCredentialCompromise: {
		"ko": {[]string{"[Acme]", "노출"}, []string{"노출", "모든 세션 종료", "본인 확인을 다시", "비밀번호를 바로 변경"}},
		"en": {[]string{"[Acme]", "exposed"}, []string{"may have been exposed", "all sessions ended", "sign in with Kakao again", "change your Kakao Account password"}},
	},
	NoticePasswordChanged: {
		"ko": {[]string{"[Acme]", "비밀번호가 변경"}, []string{"비밀번호가 변경", "세션 종료", "무시하셔도 됩니다", "재설정"}},
		"en": {[]string{"[Acme]", "password was changed"}, []string{"password of your Kakao Account was changed", "sessions ended", "you can ignore this email", "reset your password"}},
	},
}

func TestRenderEveryKindAndLocale(t *testing.T) {
	m := newMailer(t, testConfig())
	times := map[string]struct{ want, notWant string }{
		"ko": {"2024년 3월 5일 (화) 14:03 KST", "05:03"},
		"en": {"Tuesday, 5 March 2024, 05:03 UTC", "14:03"},
	}
	for _, k := range Kinds() {
		for _, l := range Locales() {
			t.Run(string(k)+"."+l, func(t *testing.T) {
				n := notice(k, l)
				if l == "en" {
					n.Name = "Kim Kakao"
				}
				msg, err := m.Render(n)
				if err != nil {
					t.Fatal(err)
				}
				if msg.Kind != k || msg.Locale != l {
					t.Errorf("kind/locale = %s/%s", msg.Kind, msg.Locale)
				}
				if strings.ContainsAny(msg.Subject, "\r\n") {
					t.Errorf("subject has a line break: %q", msg.Subject)
				}
				for _, s := range want[k][l].subject {
					if !strings.Contains(msg.Subject, s) {
						t.Errorf("subject %q lacks %q", msg.Subject, s)
					}
				}
				for part, body := range map[string]string{"text": msg.Text, "html": msg.HTML} {
					for _, s := range append(want[k][l].body, n.Name, "Acme", times[l].want) {
						if !strings.Contains(body, s) {
							t.Errorf("%s lacks %q:\n%s", part, s, body)
						}
					}
					if strings.Contains(body, times[l].notWant) {
						t.Errorf("%s shows the time in the wrong zone (%q)", part, times[l].notWant)
					}
					if strings.Contains(body, n.To) {
						t.Errorf("%s contains the recipient address", part)
					}
					if strings.Contains(body, "{{") || strings.Contains(body, "<no value>") {
						t.Errorf("%s has unrendered template text", part)
					}
				}
				if !strings.HasPrefix(msg.HTML, "<!DOCTYPE html>") || !strings.Contains(msg.HTML, `<html lang="`+l+`">`) || !strings.Contains(msg.HTML, "<title>"+htmlEscape(msg.Subject)+"</title>") {
					t.Errorf("html lacks lang or title:\n%s", msg.HTML)
				}
			})
		}
	}
}

func htmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&#34;", "'", "&#39;").Replace(s)
}

func TestRenderTimeZoneCrossesDate(t *testing.T) {
	m := newMailer(t, testConfig())
	n := notice(NoticePasswordChanged, "ko")
	n.EventTime = lateEventTime.In(time.FixedZone("PST", -8*3600)) // input zone must not matter
	msg, err := m.Render(n)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(msg.Text, "2024년 3월 6일 (수) 05:30 KST") {
		t.Errorf("ko text lacks Seoul time:\n%s", msg.Text)
	}
	n.Locale = "en"
	msg, err = m.Render(n)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(msg.Text, "Tuesday, 5 March 2024, 20:30 UTC") {
		t.Errorf("en text lacks UTC time:\n%s", msg.Text)
	}
}

func TestRenderEscapesHostileName(t *testing.T) {
	m := newMailer(t, testConfig())
	for _, l := range Locales() {
		n := notice(NoticeAccountHijacked, l)
		n.Name = `<script>alert("x")</script>` + "\r\nBcc: evil@example.com"
		msg, err := m.Render(n)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(msg.HTML, "<script>") {
			t.Errorf("%s: html contains an unescaped script tag:\n%s", l, msg.HTML)
		}
		if !strings.Contains(msg.HTML, "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;") {
			t.Errorf("%s: html lacks the escaped name:\n%s", l, msg.HTML)
		}
		if strings.Contains(msg.Text, "\r\nBcc:") || strings.Contains(msg.Subject, "script") || strings.Contains(msg.Subject, "Bcc") {
			t.Errorf("%s: name leaked a line break or into the subject", l)
		}
	}
}

func TestRenderWithoutName(t *testing.T) {
	m := newMailer(t, testConfig())
	cases := map[string]string{"ko": "회원님, 안녕하세요.", "en": "Hello,"}
	for l, greeting := range cases {
		n := notice(NoticeCredentialCompromise, l)
		n.Name = "  "
		msg, err := m.Render(n)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(msg.Text, greeting) || !strings.Contains(msg.HTML, "<p>"+greeting) {
			t.Errorf("%s: greeting without name:\n%s\n%s", l, msg.Text, msg.HTML)
		}
	}
}

func TestNormalizeLocale(t *testing.T) {
	for in, want := range map[string]string{
		"": "ko", "ko": "ko", "ko-KR": "ko", "ko_KR": "ko", "EN": "en", "en-US": "en", "en_GB": "en",
		"fr": "ko", "ja-JP": "ko", "english": "ko",
	} {
		if got := NormalizeLocale(in); got != want {
			t.Errorf("NormalizeLocale(%q) = %q, want %q", in, got, want)
		}
	}
	m := newMailer(t, testConfig())
	msg, err := m.Render(notice(NoticePasswordChanged, "de-DE"))
	if err != nil {
		t.Fatal(err)
	}
	if msg.Locale != "ko" || !strings.Contains(msg.Subject, "비밀번호") {
		t.Errorf("unknown locale rendered %s: %q", msg.Locale, msg.Subject)
	}
}

func TestMessageIDDeterministic(t *testing.T) {
	m := newMailer(t, testConfig())
	shape := regexp.MustCompile(`^<[0-9a-f]{32}@mail\.acme\.example>$`)
	a1, err := m.Render(notice(NoticePasswordChanged, "ko"))
	if err != nil {
		t.Fatal(err)
	}
	a2, err := m.Render(notice(NoticePasswordChanged, "en")) // same key, other locale
	if err != nil {
		t.Fatal(err)
	}
	other := notice(NoticePasswordChanged, "ko")
	other.IdempotencyKey += "x"
	b, err := m.Render(other)
	if err != nil {
		t.Fatal(err)
	}
	if !shape.MatchString(a1.MessageID) {
		t.Errorf("Message-ID %q has the wrong shape", a1.MessageID)
	}
	if a1.MessageID != a2.MessageID {
		t.Errorf("same key gave %q and %q", a1.MessageID, a2.MessageID)
	}
	if a1.MessageID == b.MessageID {
		t.Errorf("different keys gave the same Message-ID %q", a1.MessageID)
	}
	// Pinned: changing the derivation would break de-duplication of retries
	// across a deploy.
	if got := MessageID("evt-123/password-changed/email", "mail.acme.example"); got != a1.MessageID {
		t.Errorf("MessageID() = %q, Render = %q", got, a1.MessageID)
	}
	if got, want := MessageID("k", "d.example"), "<8254c329a92850f6d539dd376f4816ee@d.example>"; got != want {
		t.Errorf("MessageID(k) = %q, want %q", got, want)
	}

	// The domain defaults to From's.
	cfg := testConfig()
	cfg.MessageIDDomain = ""
	m2 := newMailer(t, cfg)
	c, err := m2.Render(notice(NoticePasswordChanged, "ko"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(c.MessageID, "@acme.example>") {
		t.Errorf("default domain: %q", c.MessageID)
	}
}

func TestRenderRejectsBadNotices(t *testing.T) {
	m := newMailer(t, testConfig())
	cases := map[string]func(*Notice){
		"unknown kind":         func(n *Notice) { n.Kind = "account-purged" },
		"empty key":            func(n *Notice) { n.IdempotencyKey = "" },
		"zero time":            func(n *Notice) { n.EventTime = time.Time{} },
		"empty recipient":      func(n *Notice) { n.To = "" },
		"not an address":       func(n *Notice) { n.To = "kim.kakao-at-example.com" },
		"display name":         func(n *Notice) { n.To = "Kim <kim.kakao@example.com>" },
		"header injection":     func(n *Notice) { n.To = "kim.kakao@example.com\r\nBcc: x@example.com" },
		"two recipients":       func(n *Notice) { n.To = "kim.kakao@example.com, lee@example.com" },
		"trailing whitespace":  func(n *Notice) { n.To = "kim.kakao@example.com " },
		"angle-bracketed addr": func(n *Notice) { n.To = "<kim.kakao@example.com>" },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			n := notice(NoticeAccountHijacked, "ko")
			mutate(&n)
			_, err := m.Render(n)
			if err == nil {
				t.Fatal("no error")
			}
			if !IsPermanent(err) {
				t.Errorf("not permanent: %v", err)
			}
			assertNoPII(t, err, n, "")
		})
	}
}

// The embedded set is exactly subject, text and html per kind and locale, so a
// stray or misnamed file is caught.
func TestTemplateFilesComplete(t *testing.T) {
	var got, wantFiles []string
	err := fs.WalkDir(templateFS, "templates", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			got = append(got, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	wantFiles = append(wantFiles, "templates/layout.html")
	for _, k := range Kinds() {
		for _, l := range Locales() {
			for _, ext := range []string{"subject", "txt", "html"} {
				wantFiles = append(wantFiles, "templates/"+string(k)+"."+l+"."+ext)
			}
		}
	}
	sort.Strings(got)
	sort.Strings(wantFiles)
	if strings.Join(got, "\n") != strings.Join(wantFiles, "\n") {
		t.Errorf("template files:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(wantFiles, "\n"))
	}
}

// assertNoPII checks the error and everything it wraps.
func assertNoPII(t *testing.T, err error, n Notice, password string) {
	t.Helper()
	secrets := []string{n.To, n.Name}
	if i := strings.IndexByte(n.To, '@'); i > 0 {
		secrets = append(secrets, n.To[:i])
	}
	if password != "" {
		secrets = append(secrets, password)
	}
	for e := err; e != nil; {
		for _, s := range secrets {
			if strings.TrimSpace(s) != "" && strings.Contains(strings.ToLower(e.Error()), strings.ToLower(strings.TrimSpace(s))) {
				t.Errorf("error text contains %q: %s", s, e.Error())
			}
		}
		u, ok := e.(interface{ Unwrap() error })
		if !ok {
			break
		}
		e = u.Unwrap()
	}
}
