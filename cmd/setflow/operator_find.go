package main

import (
	"context"
	"fmt"
	"time"

	"github.com/setflow/setflow/audit"
	"github.com/setflow/setflow/audit/auditdb"
	"github.com/setflow/setflow/config"
	"github.com/setflow/setflow/event"
	"github.com/setflow/setflow/inbox"
)

// auditUser prints everything that happened to one user. The audit trail
// knows users only by keyed subject hash, and the hash covers the issuer:
// without -issuer it tries the issuer of the `setflow dev` running on this
// machine, then Kakao's, and says which one matched — or, when none did,
// which it tried.
func auditUser(ctx context.Context, log *auditdb.Store, userID, issuer string, limit int) error {
	m, err := findSubject(ctx, log, userID, issuer, limit)
	if err != nil {
		return err
	}
	if m.issuer == "" {
		fmt.Printf("no audit rows for user %s (issuers tried: %v).\n", userID, m.tried)
		fmt.Println("The trail keys users by issuer and SETFLOW_AUDIT_KEY: pass -issuer (or SETFLOW_ISSUER) and the worker's SETFLOW_AUDIT_KEY.")
		return nil
	}
	fmt.Printf("issuer %s, subject hash %s: %d rows\n", m.issuer, m.hash, len(m.recs))
	fmt.Printf("temporal ui: %s\n\n", uiQueryLink(subjectQuery(m.hash)))
	return printAuditWithKeys(m.recs)
}

// subjectMatch is the issuer under which a user id has audit rows.
type subjectMatch struct {
	issuer, hash string
	recs         []audit.Record
	tried        []string
}

func findSubject(ctx context.Context, log *auditdb.Store, userID, issuer string, limit int) (subjectMatch, error) {
	hasher := audit.SubjectHasher{Key: config.AuditKeyFromEnv().OrDev()}
	candidates := []string{issuer}
	if issuer == "" {
		candidates = nil
		if s, ok := loadDevState(); ok && s.Issuer != "" {
			candidates = append(candidates, s.Issuer)
		}
		candidates = append(candidates, config.KakaoIssuer)
	}
	var m subjectMatch
	for _, iss := range candidates {
		hash := hasher.Hash(iss, userID)
		recs, err := log.ForSubject(ctx, hash, limit)
		if err != nil {
			return m, err
		}
		if len(recs) > 0 {
			m.issuer, m.hash, m.recs = iss, hash, recs
			return m, nil
		}
		m.tried = append(m.tried, iss)
	}
	return m, nil
}

// listFilter selects inbox entries for `setflow events list`.
type listFilter struct {
	status, eventType, source string
	since, until              time.Duration
	limit                     int
}

// listEvents lists the entries the filter selects, newest first.
func listEvents(ctx context.Context, store inbox.Store, f listFilter) ([]inbox.Entry, error) {
	sel := inbox.Filter{Status: inbox.Status(f.status), Source: event.Source(f.source), Event: f.eventType, Limit: f.limit}
	now := time.Now()
	if f.since > 0 {
		sel.From = now.Add(-f.since)
	}
	if f.until > 0 {
		sel.Until = now.Add(-f.until)
	}
	return store.List(ctx, sel)
}
