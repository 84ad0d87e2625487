package sessions

import (
	"context"
	"fmt"
	"os"
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
