package config

import (
	"slices"
	"strings"
)

// Settings lists every setting of setflow once, in the order of the README's
// configuration table, which config's tests generate from it and check.
func Settings() []Setting {
	var (
		db   Database
		lg   Log
		key  AuditKey
		kp   KeyPolicy
		in   Ingress
		kk   Kakao
		sd   Shutdown
		svc  Service
		trc  Tracing
		rel  Relay
		aud  Audit
		tmp  Temporal
		cod  Codec
		wrk  Worker
		adm  Admin
		op   Operator
		dev  Dev
		bnch Bench
	)
	all := slices.Concat(db.settings(), lg.settings(), key.settings(), kp.settings(),
		in.settings(), kk.settings(), sd.delaySettings(), sd.timeoutSettings(),
		tmp.settings(), cod.settings(), rel.settings(), aud.settings(),
		wrk.settings(), sd.workerSettings(), adm.settings("", KakaoIssuer),
		svc.metricsSettings(""), svc.healthSettings(), trc.settings(),
		op.settings(), dev.keySettings(), dev.sendSettings(), bnch.settings())
	var out []Setting
	seen := map[string]bool{}
	for _, s := range all {
		if !seen[s.Env] {
			seen[s.Env] = true
			out = append(out, s)
		}
	}
	return out
}

// MarkdownTable is the README's configuration table: one row per setting.
func MarkdownTable() string {
	var b strings.Builder
	b.WriteString("| variable | flag | default | meaning |\n|---|---|---|---|\n")
	for _, s := range Settings() {
		b.WriteString("| `" + s.Env + "`")
		if s.Secret {
			b.WriteString(" *(secret)*")
		}
		b.WriteString(" | ")
		if s.Flag == "" {
			b.WriteString("— (environment only)")
		} else {
			b.WriteString("`-" + s.Flag + "`")
		}
		b.WriteString(" | ")
		if s.Default == "" {
			b.WriteString("—")
		} else {
			b.WriteString("`" + s.Default + "`")
		}
		b.WriteString(" | " + strings.NewReplacer("`", "", "|", `\|`).Replace(s.Usage) + " |\n")
	}
	return b.String()
}
