package mailer

import (
	"bytes"
	"embed"
	"fmt"
	htmltemplate "html/template"
	"strings"
	texttemplate "text/template"
	"time"
)

// templateFS holds <kind>.<locale>.subject, .txt and .html for every kind and
// locale; New fails if one is missing or does not render.
//
//go:embed templates/*
var templateFS embed.FS

// Message is a rendered notice, as it will be sent.
type Message struct {
	Kind      Kind
	Locale    string
	Subject   string
	Text      string
	HTML      string
	MessageID string // header value with angle brackets, e.g. <0a1b…@example.com>
}

// templateData is what templates see; keep it free of the recipient address.
type templateData struct {
	ServiceName string
	Name        string // may be empty
	EventTime   string // formatted for the locale
	Subject     string // html only, for <title>
	Locale      string // html only, for <html lang>
}

type templateSet struct {
	subject *texttemplate.Template
	text    *texttemplate.Template
	html    *htmltemplate.Template
}

type templateKey struct {
	kind   Kind
	locale string
}

func loadTemplates() (map[templateKey]templateSet, error) {
	set := make(map[templateKey]templateSet)
	for _, k := range Kinds() {
		for _, l := range Locales() {
			base := "templates/" + string(k) + "." + l
			subj, err := parseText(base + ".subject")
			if err != nil {
				return nil, err
			}
			text, err := parseText(base + ".txt")
			if err != nil {
				return nil, err
			}
			// Each notice's HTML is its "content" inside the shared layout.
			html, err := htmltemplate.New(base+".html").Option("missingkey=error").
				ParseFS(templateFS, "templates/layout.html", base+".html")
			if err != nil {
				return nil, fmt.Errorf("mailer templates: %w", err)
			}
			set[templateKey{k, l}] = templateSet{subject: subj, text: text, html: html}
		}
	}
	return set, nil
}

func parseText(name string) (*texttemplate.Template, error) {
	src, err := templateFS.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("mailer templates: %w", err)
	}
	t, err := texttemplate.New(name).Option("missingkey=error").Parse(string(src))
	if err != nil {
		return nil, fmt.Errorf("mailer templates: %w", err)
	}
	return t, nil
}

// Render validates the notice and renders its subject, bodies and Message-ID
// without sending anything (tests, previews, and Send itself).
func (m *Mailer) Render(n Notice) (*Message, error) {
	if err := n.validate(); err != nil {
		return nil, err
	}
	return m.render(n.Kind, NormalizeLocale(n.Locale), cleanName(n.Name), n.EventTime, n.IdempotencyKey)
}

func (m *Mailer) render(kind Kind, locale, name string, at time.Time, key string) (*Message, error) {
	ts, ok := m.templates[templateKey{kind, locale}]
	if !ok {
		return nil, permanent("render", "no templates for %s.%s", kind, locale)
	}
	data := templateData{
		ServiceName: m.cfg.ServiceName,
		Name:        name,
		EventTime:   formatEventTime(at, locale),
		Locale:      locale,
	}
	var subj, text, html bytes.Buffer
	// Template errors are bugs or bad data, not transient: a retry renders
	// the same thing. Their text names the template, not the data.
	if err := ts.subject.Execute(&subj, data); err != nil {
		return nil, permanent("render", "%s.%s subject: %v", kind, locale, err)
	}
	subject := strings.Join(strings.Fields(subj.String()), " ") // one header line
	data.Subject = subject
	if err := ts.text.Execute(&text, data); err != nil {
		return nil, permanent("render", "%s.%s text: %v", kind, locale, err)
	}
	if err := ts.html.ExecuteTemplate(&html, "layout.html", data); err != nil {
		return nil, permanent("render", "%s.%s html: %v", kind, locale, err)
	}
	return &Message{
		Kind:      kind,
		Locale:    locale,
		Subject:   subject,
		Text:      text.String(),
		HTML:      html.String(),
		MessageID: MessageID(key, m.cfg.MessageIDDomain),
	}, nil
}

// checkTemplates renders every kind and locale once so that a broken
// template stops start-up instead of a security notice.
func (m *Mailer) checkTemplates() error {
	at := time.Date(2024, 3, 5, 5, 3, 0, 0, time.UTC)
	for _, k := range Kinds() {
		for _, l := range Locales() {
			for _, name := range []string{"", "Sample"} {
				if _, err := m.render(k, l, name, at, "check"); err != nil {
					return err
				}
			}
		}
	}
	return nil
}
