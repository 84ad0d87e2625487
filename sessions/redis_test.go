package sessions

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/setflow/setflow/internal/testenv"
)

func redisClient(t *testing.T) redis.UniversalClient {
	addr := os.Getenv("SETFLOW_TEST_REDIS_ADDR")
	if addr == "" {
		addr = "127.0.0.1:6379"
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		testenv.Unavailable(t, "redis at %s: %v", addr, err)
	}
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

func TestRedisRevokeIsTimeAwareAndIdempotent(t *testing.T) {
	rdb := redisClient(t)
	ctx := context.Background()
	// A unique namespace per run: the Redis server is shared.
	ns := fmt.Sprintf("test-%d", time.Now().UnixNano())
	l := RedisLayout{UserIndex: ns + ":idx:{user_id}", SessionKey: ns + ":s:{session_id}:data"}
	r, err := NewRedis(rdb, l)
	if err != nil {
		t.Fatal(err)
	}
	event := time.Now()
	for id, created := range map[string]time.Time{"old1": event.Add(-time.Hour), "old2": event.Add(-time.Minute), "new": event.Add(time.Minute)} {
		if err := AddRedisSession(ctx, rdb, l, "u1", id, created, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	if err := AddRedisSession(ctx, rdb, l, "u2", "other", event.Add(-time.Hour), time.Hour); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		keys, _ := rdb.Keys(ctx, ns+":*").Result()
		if len(keys) > 0 {
			rdb.Del(ctx, keys...)
		}
	})
	n, err := r.Revoke(ctx, "u1", event)
	if err != nil || n != 2 {
		t.Fatalf("revoked %d %v, want 2", n, err)
	}
	for id, want := range map[string]int64{"old1": 0, "old2": 0, "new": 1, "other": 1} {
		if got := rdb.Exists(ctx, ns+":s:"+id+":data").Val(); got != want {
			t.Errorf("session %s exists=%d want %d", id, got, want)
		}
	}
	if n, _ := r.Revoke(ctx, "u1", event); n != 0 {
		t.Fatalf("second revoke ended %d sessions, want 0", n)
	}
}

func TestRedisLayoutValidation(t *testing.T) {
	if _, err := NewRedis(nil, RedisLayout{UserIndex: "idx", SessionKey: "s:{session_id}"}); err == nil {
		t.Fatal("pattern without {user_id} accepted")
	}
	if _, err := NewRedis(nil, RedisLayout{UserIndex: "i:{user_id}", SessionKey: "s"}); err == nil {
		t.Fatal("pattern without {session_id} accepted")
	}
}

// redisLayout returns a layout in a namespace of its own (the Redis server is
// shared) and deletes the namespace's keys after the test.
func redisLayout(t *testing.T, rdb redis.UniversalClient) (RedisLayout, string) {
	ns := fmt.Sprintf("test-%d", time.Now().UnixNano())
	t.Cleanup(func() {
		ctx := context.Background()
		keys, _ := rdb.Keys(ctx, ns+":*").Result()
		for len(keys) > 0 {
			k := keys[:min(len(keys), 1000)]
			keys = keys[len(k):]
			rdb.Del(ctx, k...)
		}
	})
	return RedisLayout{UserIndex: ns + ":idx:{user_id}", SessionKey: ns + ":s:{session_id}:data"}, ns
}

func TestRedisPurgeKeepsSessionsCreatedAfterCutoff(t *testing.T) {
	rdb := redisClient(t)
	ctx := context.Background()
	l, ns := redisLayout(t, rdb)
	r, err := NewRedis(rdb, l)
	if err != nil {
		t.Fatal(err)
	}
	cutoff := time.Now()
	for id, created := range map[string]time.Time{"old": cutoff.Add(-time.Hour), "at": cutoff, "new": cutoff.Add(time.Minute)} {
		if err := AddRedisSession(ctx, rdb, l, "u1", id, created, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	if err := AddRedisSession(ctx, rdb, l, "u2", "other", cutoff.Add(-time.Hour), time.Hour); err != nil {
		t.Fatal(err)
	}
	n, err := r.Purge(ctx, "u1", cutoff)
	if err != nil || n != 2 {
		t.Fatalf("purged %d %v, want 2", n, err)
	}
	for id, want := range map[string]int64{"old": 0, "at": 0, "new": 1, "other": 1} {
		if got := rdb.Exists(ctx, ns+":s:"+id+":data").Val(); got != want {
			t.Errorf("session %s exists=%d want %d", id, got, want)
		}
	}
	// The index keeps the newer session, so the service still finds it.
	if ids := rdb.ZRange(ctx, ns+":idx:u1", 0, -1).Val(); len(ids) != 1 || ids[0] != "new" {
		t.Fatalf("index after purge %v, want [new]", ids)
	}
	if n, err := r.Purge(ctx, "u1", cutoff); err != nil || n != 0 {
		t.Fatalf("second purge %d %v, want 0", n, err)
	}
	// With nothing newer left, the index goes with its last member.
	if n, err := r.Purge(ctx, "u1", cutoff.Add(time.Hour)); err != nil || n != 1 {
		t.Fatalf("purge of the rest %d %v, want 1", n, err)
	}
	if got := rdb.Exists(ctx, ns+":idx:u1").Val(); got != 0 {
		t.Fatalf("empty index still exists")
	}
}

// addManyRedisSessions adds count sessions "<user>-<i>" created at base + i ms.
func addManyRedisSessions(t *testing.T, rdb redis.UniversalClient, l RedisLayout, user string, base time.Time, count int) {
	ctx := context.Background()
	for start := 0; start < count; start += 2000 {
		_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i := start; i < min(start+2000, count); i++ {
				id := fmt.Sprintf("%s-%d", user, i)
				p.Set(ctx, strings.Replace(l.SessionKey, "{session_id}", id, 1), user, time.Hour)
				p.ZAdd(ctx, strings.Replace(l.UserIndex, "{user_id}", user, 1),
					redis.Z{Score: float64(base.Add(time.Duration(i) * time.Millisecond).UnixMilli()), Member: id})
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// A user with far more sessions than one Lua unpack can take (about 8000) is
// revoked and purged completely, in chunks.
func TestRedisRevokeAndPurgeManySessions(t *testing.T) {
	const count = 50000
	rdb := redisClient(t)
	ctx := context.Background()
	l, ns := redisLayout(t, rdb)
	r, err := NewRedis(rdb, l)
	if err != nil {
		t.Fatal(err)
	}
	base := time.UnixMilli(time.Now().Add(-time.Hour).UnixMilli())
	addManyRedisSessions(t, rdb, l, "rev", base, count)
	addManyRedisSessions(t, rdb, l, "pur", base, count)
	sessionKeys := func(user string) int {
		return len(rdb.Keys(ctx, ns+":s:"+user+"-*").Val())
	}

	n, err := r.Revoke(ctx, "rev", base.Add(count*time.Millisecond))
	if err != nil || n != count {
		t.Fatalf("revoked %d %v, want %d", n, err, count)
	}
	if got := sessionKeys("rev"); got != 0 {
		t.Fatalf("%d session keys left after revoke, want 0", got)
	}
	if got := rdb.Exists(ctx, ns+":idx:rev").Val(); got != 0 {
		t.Fatal("index left after revoking every session")
	}

	// Sessions 0..47999 are at or before the cut-off; 48000..49999 are newer.
	const kept = 2000
	cutoff := base.Add((count - kept - 1) * time.Millisecond)
	n, err = r.Purge(ctx, "pur", cutoff)
	if err != nil || n != count-kept {
		t.Fatalf("purged %d %v, want %d", n, err, count-kept)
	}
	if got := sessionKeys("pur"); got != kept {
		t.Fatalf("%d session keys left after purge, want %d", got, kept)
	}
	if got := rdb.ZCard(ctx, ns+":idx:pur").Val(); got != kept {
		t.Fatalf("index has %d members after purge, want %d", got, kept)
	}
	if got := rdb.ZCount(ctx, ns+":idx:pur", "-inf", fmt.Sprint(cutoff.UnixMilli())).Val(); got != 0 {
		t.Fatalf("index still has %d members at or before the cut-off", got)
	}
	if n, err := r.Purge(ctx, "pur", cutoff); err != nil || n != 0 {
		t.Fatalf("second purge %d %v, want 0", n, err)
	}
}

// chunkHook watches the script calls of a Redis client: it records each
// chunk's size and can interrupt a run after a number of chunks, either by
// cancelling the caller's context once a chunk's answer arrived, or by
// losing the answer of a chunk that Redis did run (the client gave up while
// the script ran).
type chunkHook struct {
	mu     sync.Mutex
	sizes  []int64
	cancel context.CancelFunc // nil: only record
	after  int                // interrupt once this many chunks were answered
	lose   bool               // lose the answer of chunk number after
}

func (h *chunkHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *chunkHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (h *chunkHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if name := cmd.Name(); err != nil || (name != "evalsha" && name != "eval") {
			return err
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		n, _ := cmd.(*redis.Cmd).Int64()
		h.sizes = append(h.sizes, n)
		if h.cancel == nil || len(h.sizes) != h.after {
			return nil
		}
		h.cancel()
		h.cancel = nil
		if h.lose {
			cmd.SetErr(context.Canceled)
			return context.Canceled
		}
		return nil
	}
}

func (h *chunkHook) reset(cancel context.CancelFunc, after int, lose bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.sizes, h.cancel, h.after, h.lose = nil, cancel, after, lose
}

func (h *chunkHook) chunks() []int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]int64(nil), h.sizes...)
}

// A revocation or purge of 50,000 sessions that is interrupted half-way —
// its context cancelled after the first chunk, or the answer of its second
// chunk lost — leaves a consistent state (every session key left is in the
// index and the reverse), and running it again completes it. No round trip
// deletes more than one chunk, and the counts never add up to more than the
// sessions there were.
func TestRedisInterruptedRevokeAndPurgeComplete(t *testing.T) {
	const count, kept = 50000, 1500
	base := redisClient(t)
	addr := base.(*redis.Client).Options().Addr
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { rdb.Close() })
	hook := &chunkHook{}
	rdb.AddHook(hook)
	l, ns := redisLayout(t, base)
	r, err := NewRedis(rdb, l)
	if err != nil {
		t.Fatal(err)
	}
	start := time.UnixMilli(time.Now().Add(-time.Hour).UnixMilli())

	type op func(ctx context.Context, user string, cutoff time.Time) (int64, error)
	for _, tc := range []struct {
		name string
		op   op
		keep int // sessions created after the cut-off
		lose bool
	}{
		{"revoke cancelled after the first chunk", r.Revoke, 0, false},
		{"purge cancelled after the first chunk", r.Purge, kept, false},
		{"revoke whose second answer is lost", r.Revoke, 0, true},
		{"purge whose second answer is lost", r.Purge, kept, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			user := fmt.Sprintf("u%d", time.Now().UnixNano())
			addManyRedisSessions(t, base, l, user, start, count)
			index := ns + ":idx:" + user
			cutoff := start.Add(time.Duration(count-tc.keep-1) * time.Millisecond)
			due := int64(count - tc.keep)
			left := func() (keys, members int64) {
				n := int64(len(base.Keys(context.Background(), ns+":s:"+user+"-*").Val()))
				return n, base.ZCard(context.Background(), index).Val()
			}

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			after := 1
			if tc.lose {
				after = 2
			}
			hook.reset(cancel, after, tc.lose)
			n1, err := tc.op(ctx, user, cutoff)
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("interrupted run: %d, %v; want context.Canceled", n1, err)
			}
			if want := int64(redisChunk); n1 != want {
				t.Fatalf("interrupted run reported %d, want %d (the chunks whose answer arrived)", n1, want)
			}
			deleted := int64(after * redisChunk)
			keys, members := left()
			if keys != members || keys != count-deleted {
				t.Fatalf("after the interruption: %d session keys, %d index members; want both %d", keys, members, count-deleted)
			}

			hook.reset(nil, 0, false)
			n2, err := tc.op(context.Background(), user, cutoff)
			if err != nil {
				t.Fatalf("second run: %v", err)
			}
			if n2 != due-deleted || n1+n2 > due {
				t.Fatalf("runs reported %d + %d of %d due (%d deleted before the retry)", n1, n2, due, deleted)
			}
			for i, n := range hook.chunks() {
				if n > redisChunk {
					t.Fatalf("chunk %d deleted %d sessions in one round trip, more than %d", i, n, redisChunk)
				}
			}
			if got := len(hook.chunks()); got != int(due-deleted)/redisChunk+1 {
				t.Fatalf("second run took %d round trips for %d sessions", got, due-deleted)
			}
			keys, members = left()
			if keys != int64(tc.keep) || members != int64(tc.keep) {
				t.Fatalf("after the second run: %d session keys, %d index members; want %d", keys, members, tc.keep)
			}
			if got := base.ZCount(context.Background(), index, "-inf", fmt.Sprint(cutoff.UnixMilli())).Val(); got != 0 {
				t.Fatalf("index still has %d members at or before the cut-off", got)
			}
			if tc.keep == 0 && base.Exists(context.Background(), index).Val() != 0 {
				t.Fatal("index left after every session went")
			}
			if n3, err := tc.op(context.Background(), user, cutoff); err != nil || n3 != 0 {
				t.Fatalf("third run: %d %v, want 0", n3, err)
			}
		})
	}
}
