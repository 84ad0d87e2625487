package sessions

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisLayout says where a service keeps sessions in Redis: an index per user
// (a sorted set of session ids scored by creation time in Unix milliseconds)
// and one key per session that the service checks on each request.
type RedisLayout struct {
	// UserIndex contains {user_id}, e.g. "sessions:user:{user_id}".
	UserIndex string
	// SessionKey contains {session_id}, e.g. "session:{session_id}".
	SessionKey string
}

// DefaultRedisLayout is used when nothing is configured.
func DefaultRedisLayout() RedisLayout {
	return RedisLayout{UserIndex: "setflow:user-sessions:{user_id}", SessionKey: "setflow:session:{session_id}"}
}

// Validate checks that each pattern names its placeholder exactly once.
func (l RedisLayout) Validate() error {
	if strings.Count(l.UserIndex, "{user_id}") != 1 {
		return fmt.Errorf("sessions: redis user index pattern %q must contain {user_id} once", l.UserIndex)
	}
	if strings.Count(l.SessionKey, "{session_id}") != 1 {
		return fmt.Errorf("sessions: redis session key pattern %q must contain {session_id} once", l.SessionKey)
	}
	return nil
}

// redisChunk bounds the work of one round trip: one script call deletes at
// most this many sessions. Lua's unpack fails above about 8000 values, and a
// short script keeps Redis responsive (a script blocks every other client)
// while a user with any number of sessions is worked through.
const redisChunk = 1000

// deleteChunkScript deletes, in one atomic step, the session keys of up to
// ARGV[4] sessions in the user's index created at or before the cut-off
// (ARGV[1], Unix milliseconds), removes them from the index and returns how
// many it removed. Because the keys and their index entries go together, a
// run that stops between chunks leaves a consistent state, and the next run
// carries on with what is left. Redis drops the index key with its last
// member, so an index that still holds newer sessions stays.
var deleteChunkScript = redis.NewScript(`
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[4]))
if #ids == 0 then
  return 0
end
local keys = {}
for i, id in ipairs(ids) do
  keys[i] = ARGV[2] .. id .. ARGV[3]
end
redis.call('DEL', unpack(keys))
redis.call('ZREM', KEYS[1], unpack(ids))
return #ids
`)

// Redis revokes sessions kept in Redis.
type Redis struct {
	rdb    redis.UniversalClient
	layout RedisLayout
}

// NewRedis validates the layout.
func NewRedis(rdb redis.UniversalClient, l RedisLayout) (*Redis, error) {
	if err := l.Validate(); err != nil {
		return nil, err
	}
	return &Redis{rdb: rdb, layout: l}, nil
}

// Revoke ends the user's sessions created at or before createdBefore by
// deleting their keys.
func (r *Redis) Revoke(ctx context.Context, userID string, createdBefore time.Time) (int64, error) {
	n, err := r.deleteUpTo(ctx, userID, createdBefore)
	if err != nil {
		return n, fmt.Errorf("sessions: redis revoke: %w", err)
	}
	return n, nil
}

// deleteUpTo runs deleteChunkScript until a chunk comes back short, so the
// number of sessions is unbounded while each round trip is bounded. Each
// chunk is atomic, the whole is not: on an error (a cancelled context is
// checked between chunks), the count of the chunks whose answer arrived is
// returned, and a later call carries on where this one stopped. The counts of
// an interrupted call and its retry add up to at most the sessions deleted
// (a chunk whose answer was lost is counted by neither), never more.
func (r *Redis) deleteUpTo(ctx context.Context, userID string, cutoff time.Time) (int64, error) {
	if userID == "" {
		return 0, errors.New("empty user id")
	}
	index := strings.Replace(r.layout.UserIndex, "{user_id}", userID, 1)
	prefix, suffix, _ := strings.Cut(r.layout.SessionKey, "{session_id}")
	var total int64
	for {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		n, err := deleteChunkScript.Run(ctx, r.rdb, []string{index}, cutoff.UnixMilli(), prefix, suffix, redisChunk).Int64()
		if err != nil {
			return total, err
		}
		total += n
		if n < redisChunk {
			return total, nil
		}
	}
}

// AddRedisSession records a session the way the layout expects; services use
// their own code for this, it is here for tests and the dev tools.
func AddRedisSession(ctx context.Context, rdb redis.UniversalClient, l RedisLayout, userID, sessionID string, created time.Time, ttl time.Duration) error {
	key := strings.Replace(l.SessionKey, "{session_id}", sessionID, 1)
	index := strings.Replace(l.UserIndex, "{user_id}", userID, 1)
	_, err := rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, key, userID, ttl)
		p.ZAdd(ctx, index, redis.Z{Score: float64(created.UnixMilli()), Member: sessionID})
		return nil
	})
	return err
}

// Purge deletes the user's sessions created at or before createdAtOrBefore
// and removes them from the index; newer sessions and their index entries stay.
// In Redis, revoking a session already deletes it, so this is Revoke under
// another name.
func (r *Redis) Purge(ctx context.Context, userID string, createdAtOrBefore time.Time) (int64, error) {
	n, err := r.deleteUpTo(ctx, userID, createdAtOrBefore)
	if err != nil {
		return n, fmt.Errorf("sessions: redis purge: %w", err)
	}
	return n, nil
}
