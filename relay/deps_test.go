package relay

import (
	"testing"

	"github.com/setflow/setflow/internal/depcheck"
)

// The relay (and the workflows it starts) never link the activities' back
// ends: workflows know the activities by name and package reaction's types
// only. A new import that pulls one in fails here.
func TestRelayDoesNotLinkTheActivitiesBackEnds(t *testing.T) {
	depcheck.Forbid(t, []string{"github.com/setflow/setflow/relay", "github.com/setflow/setflow/workflows"}, []string{
		"github.com/setflow/setflow/activities/...",
		"github.com/setflow/setflow/mailer/...",
		"github.com/setflow/setflow/crm/...",
		"github.com/setflow/setflow/kakaoapi/...",
		"github.com/wneessen/go-mail/...",
		"github.com/redis/go-redis/...",
	})
}
