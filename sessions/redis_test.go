package sessions

import (
	"context"
	"fmt"
	"os"
	"strings"
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
// revoked and purged completely, in batches.
func TestRedisRevokeAndPurgeManySessions(t *testing.T) {
	const count = 20000
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

	// Sessions 0..17999 are at or before the cut-off; 18000..19999 are newer.
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
