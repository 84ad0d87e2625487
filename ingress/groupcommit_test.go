package ingress_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/setflow/setflow/inbox"
	"github.com/setflow/setflow/ingress"
)

// postAll POSTs the tokens concurrently and returns each one's status (0 for
// a transport error).
func (e *asEnv) postAll(tokens []string) []int {
	status := make([]int, len(tokens))
	var wg sync.WaitGroup
	for i, tok := range tokens {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.ts.URL+ingress.PathAccountStatus, strings.NewReader(tok))
			if err != nil {
				return
			}
			req.Header.Set("Content-Type", ingress.SETContentType)
			resp, err := e.ts.Client().Do(req)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			status[i] = resp.StatusCode
		})
	}
	wg.Wait()
	return status
}

func (e *asEnv) stored(jti string) bool {
	var n int
	require.NoError(e.t, e.db.Get(&n, `SELECT count(*) FROM setflow_inbox WHERE dedupe_key = $1`, ingress.SETKey(jti)))
	return n == 1
}

// Concurrent deliveries share commits; each is answered 202 only once its row
// is committed, and a token delivered twice at once is stored once and
// answered 202 both times.
func TestAccountStatusConcurrentDeliveriesShareCommits(t *testing.T) {
	e := newASEnv(t, nil)
	store := e.srv.Inbox.(*inbox.Postgres)
	var tokens, jtis []string
	for range 40 {
		tok, jti := asValidToken(t)
		tokens = append(tokens, tok, tok)
		jtis = append(jtis, jti)
	}
	for i, s := range e.postAll(tokens) {
		assert.Equal(t, http.StatusAccepted, s, "request %d", i)
	}
	for _, jti := range jtis {
		assert.True(t, e.stored(jti), "an accepted SET has no row")
	}
	assert.Equal(t, len(jtis), e.rows())
	st := store.PutStats()
	assert.EqualValues(t, len(tokens), st.Entries)
	assert.Less(t, st.Batches, int64(len(tokens)), "no commit was shared: %+v", st)
}

// A commit the database refuses answers 503 to exactly the deliveries it
// held and stores none of them; the delivery committed before it and the
// retries after it are accepted.
func TestAccountStatusFailedCommitAnswers503ToItsDeliveries(t *testing.T) {
	var store *inbox.Postgres
	e := newASEnv(t, func(e *asEnv) {
		store = inbox.NewPostgres(e.db)
		store.MaxInFlight = 1 // one commit at a time, so the batch is known
		e.srv.Inbox = store
	})
	gateTok, gateJTI := asValidToken(t)
	var batch, jtis []string
	for range 4 {
		tok, jti := asValidToken(t)
		batch, jtis = append(batch, tok), append(jtis, jti)
	}
	e.db.MustExec(`CREATE FUNCTION reject_poison() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NEW.dedupe_key = '` + ingress.SETKey(jtis[2]) + `' THEN RAISE EXCEPTION 'injected failure'; END IF;
			RETURN NEW;
		END $$`)
	e.db.MustExec(`CREATE TRIGGER reject_poison BEFORE INSERT ON setflow_inbox FOR EACH ROW EXECUTE FUNCTION reject_poison()`)

	// The gate's commit waits for a row lock on its key while the batch queues.
	tx, err := e.db.Beginx()
	require.NoError(t, err)
	defer tx.Rollback() //nolint:errcheck
	_, err = tx.Exec(`INSERT INTO setflow_inbox (dedupe_key, source, raw, envelope) VALUES ($1, 'set', '', '{}')`, ingress.SETKey(gateJTI))
	require.NoError(t, err)
	gate := make(chan int, 1)
	go func() { gate <- e.postAll([]string{gateTok})[0] }()
	waitInsertBlocked(t, e.db)
	answers := make(chan []int, 1)
	go func() { answers <- e.postAll(batch) }()
	for deadline := time.Now().Add(20 * time.Second); store.PutStats().Queued < len(batch); time.Sleep(2 * time.Millisecond) {
		require.True(t, time.Now().Before(deadline), "the batch never queued: %+v", store.PutStats())
	}
	require.NoError(t, tx.Rollback())

	assert.Equal(t, http.StatusAccepted, <-gate, "the commit before the failed one")
	assert.True(t, e.stored(gateJTI))
	for i, s := range <-answers {
		assert.Equal(t, http.StatusServiceUnavailable, s, "delivery %d of the failed commit", i)
		assert.False(t, e.stored(jtis[i]), "delivery %d of the failed commit was stored", i)
	}
	assert.EqualValues(t, 1, store.PutStats().Failed)

	// The retries, without the poisoned one, go through.
	retry := append(append([]string{}, batch[:2]...), batch[3])
	for i, s := range e.postAll(retry) {
		assert.Equal(t, http.StatusAccepted, s, "retry %d", i)
	}
	assert.Equal(t, 4, e.rows())
}

// waitInsertBlocked waits until an inbox insert of this database waits for a
// row lock.
func waitInsertBlocked(t *testing.T, db *sqlx.DB) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		var n int
		require.NoError(t, db.Get(&n, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%INSERT INTO setflow_inbox%'`))
		if n > 0 {
			return
		}
	}
	t.Fatal("no inbox insert was sent to the database")
}
