package reactionbench

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/setflow/setflow/audit/auditdb"
	"github.com/setflow/setflow/ingress"
	"github.com/setflow/setflow/internal/pace"
	"github.com/setflow/setflow/simulator"
)

// RevokeEventTypes are the revoking events of the time-to-revoke phase, sent
// in turn: account-disabled for a hijacked account (revoke sessions, lock
// account, security notice) and session-revoked (revoke sessions only).
var RevokeEventTypes = []string{"account-disabled", "session-revoked"}

// RevokeResult is one time-to-revoke phase.
type RevokeResult struct {
	Rate     float64
	Duration time.Duration
	// Sent is how many SETs were sent, Revoked how many of their sessions
	// were revoked (every one, or the phase fails).
	Sent, Revoked int
	// ToRevoke is, per event, the session row's revoked_at minus the time
	// the SET's 202 arrived, sorted.
	ToRevoke []time.Duration
	// Accept is, per event, the time from the POST to its 202, sorted.
	Accept []time.Duration
	// ClockOffset is Postgres's clock minus this process's, ClockError the
	// bound of its error (half the best round trip plus half the drift
	// between the readings before and after the phase).
	ClockOffset, ClockError time.Duration
}

// TimeToRevoke sends revoking SETs (RevokeEventTypes in turn) at a fixed rate
// for d, open loop, for distinct users who each have a session created an hour
// before the event, and measures for each the time from its 202 to the
// committed revocation: the session row's revoked_at, which the sessions
// back end sets to now() in the single-statement transaction that revokes
// it, so it is Postgres's clock at that transaction's start, the commit
// following within the same round trip. The 202 times are taken on this
// process's clock and moved to Postgres's by the offset between the two
// clocks (read with clock_timestamp() before and after the phase). It waits
// for every session to be revoked and every reaction to complete.
func (s *Setflow) TimeToRevoke(ctx context.Context, rate float64, d time.Duration, prefix string) (RevokeResult, error) {
	n := max(1, int(math.Round(rate*d.Seconds())))
	res := RevokeResult{Rate: rate, Duration: d, Sent: n}
	if rate <= 0 || d <= 0 {
		return res, fmt.Errorf("rate %g/s and duration %s must be positive", rate, d)
	}
	users, tokens, err := s.prepareRevokes(ctx, prefix, n)
	if err != nil {
		return res, err
	}
	off0, rtt0, err := s.clockOffset(ctx)
	if err != nil {
		return res, err
	}
	accepted, err := s.sendRevokes(ctx, rate, users, tokens, &res)
	if err != nil {
		return res, err
	}
	if err := s.waitRevoked(ctx, prefix, n); err != nil {
		return res, err
	}
	off1, rtt1, err := s.clockOffset(ctx)
	if err != nil {
		return res, err
	}
	// The phase's reactions finish before anything else runs on the server.
	if err := s.waitAudited(ctx, ingress.SETKey(prefix), n); err != nil {
		return res, err
	}
	res.ClockOffset = (off0 + off1) / 2
	res.ClockError = max(rtt0, rtt1)/2 + (off1-off0).Abs()/2
	if err := s.collectRevoked(ctx, prefix, users, accepted, &res); err != nil {
		return res, err
	}
	if res.Revoked != n {
		return res, fmt.Errorf("%d of %d sessions revoked", res.Revoked, n)
	}
	slices.Sort(res.ToRevoke)
	slices.Sort(res.Accept)
	return res, nil
}

// prepareRevokes signs n revoking SETs (RevokeEventTypes in turn) for
// distinct users prefix-u0…, and gives each user a session created an hour
// before the event.
func (s *Setflow) prepareRevokes(ctx context.Context, prefix string, n int) (users, tokens []string, err error) {
	users = make([]string, n)
	tokens = make([]string, n)
	now := time.Now()
	for i := range n {
		users[i] = fmt.Sprintf("%s-u%d", prefix, i)
		set := simulator.SET{Issuer: benchIssuer, Audience: benchAudience, UserID: users[i],
			EventType: RevokeEventTypes[i%len(RevokeEventTypes)], JTI: fmt.Sprintf("%s%d", prefix, i), IssuedAt: now}
		if set.EventType == "account-disabled" {
			set.Fields = map[string]any{"reason": "hijacking"}
		}
		if tokens[i], err = s.signWithSession(ctx, set); err != nil {
			return nil, nil, err
		}
	}
	return users, tokens, nil
}

// sendRevokes posts tokens at rate, open loop: each SET leaves at its
// scheduled time, whatever the answers to the earlier ones. It returns when
// each 202 arrived (this process's clock) and sets res.Accept.
func (s *Setflow) sendRevokes(ctx context.Context, rate float64, users, tokens []string, res *RevokeResult) ([]time.Time, error) {
	n := len(tokens)
	accepted := make([]time.Time, n)
	res.Accept = make([]time.Duration, n)
	var mu sync.Mutex
	var sendErr error
	pace.OpenLoop(ctx, n, rate, func(i int, _ time.Time) {
		sent := time.Now()
		status, body, err := simulator.Post(ctx, s.http, s.url, tokens[i])
		got := time.Now()
		if err == nil && status != http.StatusAccepted {
			err = fmt.Errorf("ingress answered %d %s", status, body)
		}
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			if sendErr == nil {
				sendErr = fmt.Errorf("%s: %w", users[i], err)
			}
			return
		}
		accepted[i], res.Accept[i] = got, got.Sub(sent)
	})
	if sendErr != nil {
		return nil, sendErr
	}
	return accepted, ctx.Err()
}

// collectRevoked reads the users' revoked sessions and sets res.ToRevoke
// (each revoked_at minus its 202 moved to Postgres's clock by
// res.ClockOffset) and res.Revoked.
func (s *Setflow) collectRevoked(ctx context.Context, prefix string, users []string, accepted []time.Time, res *RevokeResult) error {
	var rows []struct {
		UserID    string    `db:"user_id"`
		RevokedAt time.Time `db:"revoked_at"`
	}
	if err := s.db.SelectContext(ctx, &rows, `SELECT user_id, revoked_at FROM sessions
		WHERE starts_with(user_id, $1) AND revoked_at IS NOT NULL`, prefix+"-u"); err != nil {
		return err
	}
	index := make(map[string]int, len(users))
	for i, u := range users {
		index[u] = i
	}
	for _, r := range rows {
		i, ok := index[r.UserID]
		if !ok {
			continue
		}
		// The 202's time on Postgres's clock.
		at := accepted[i].Round(0).Add(res.ClockOffset)
		res.ToRevoke = append(res.ToRevoke, r.RevokedAt.Sub(at))
		res.Revoked++
	}
	return nil
}

// clockOffset reads Postgres's clock_timestamp() a few times and returns
// Postgres's clock minus this process's at the reading with the shortest
// round trip, and that round trip.
func (s *Setflow) clockOffset(ctx context.Context) (offset, rtt time.Duration, err error) {
	rtt = -1
	for range 7 {
		var db time.Time
		t0 := time.Now()
		if err := s.db.GetContext(ctx, &db, `SELECT clock_timestamp()`); err != nil {
			return 0, 0, fmt.Errorf("read Postgres's clock: %w", err)
		}
		t1 := time.Now()
		if r := t1.Sub(t0); rtt < 0 || r < rtt {
			mid := t0.Round(0).Add(r / 2)
			offset, rtt = db.Sub(mid), r
		}
	}
	return offset, rtt, nil
}

// waitRevoked polls the sessions of the phase's users (prefix-u…) until n
// are revoked; it fails as soon as a step failed (see waitAudited).
func (s *Setflow) waitRevoked(ctx context.Context, prefix string, n int) error {
	lastDone, lastProgress := -1, time.Now()
	for {
		var revoked int
		if err := s.db.GetContext(ctx, &revoked, `SELECT count(*) FROM sessions
			WHERE starts_with(user_id, $1) AND revoked_at IS NOT NULL`, prefix+"-u"); err != nil {
			return fmt.Errorf("count revoked sessions: %w", err)
		}
		if revoked >= n {
			return nil
		}
		if revoked != lastDone {
			lastDone, lastProgress = revoked, time.Now()
		} else if time.Since(lastProgress) > 10*time.Second {
			lastProgress = time.Now()
			pr, err := auditdb.NewStore(s.db).ProgressOf(ctx, ingress.SETKey(prefix))
			if err != nil {
				return err
			}
			if pr.Failed > 0 {
				return fmt.Errorf("%d step(s) of the phase failed (see setflow_audit)", pr.Failed)
			}
			if Diagnostics != nil {
				fmt.Fprintf(Diagnostics, "reactionbench: no session revoked for 10 s (%d of %d)\n", revoked, n)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d of %d sessions revoked: %w", revoked, n, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Percentile is the nearest-rank q-quantile of sorted durations.
func Percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// ReportRevoke prints the time-to-revoke phase in Report's style.
func ReportRevoke(w io.Writer, r RevokeResult) {
	lat := func(d []time.Duration) string {
		if len(d) == 0 {
			return "no events"
		}
		return fmt.Sprintf("p50 %7.1f ms  p99 %7.1f ms  max %7.1f ms", ms(Percentile(d, 0.50)), ms(Percentile(d, 0.99)), ms(d[len(d)-1]))
	}
	fmt.Fprintf(w, "  %-34s %s   (%d of %d sessions revoked)\n", "202 → committed revocation", lat(r.ToRevoke), r.Revoked, r.Sent)
	fmt.Fprintf(w, "  %-34s %s\n", "POST → 202", lat(r.Accept))
	fmt.Fprintf(w, "  %-34s Postgres − this process %+.3f ms (± %.3f ms)\n", "clock offset", ms(r.ClockOffset), ms(r.ClockError))
}
