package workflows

import (
	"testing"

	"github.com/setflow/setflow/internal/depcheck"
)

// Workflows know names and types, not adapters: the state machine, the
// guard's verdicts and the audit record come from packages that link no
// database code; their stores live in the packages below them (statedb,
// guarddb, auditdb), which only activities and commands import.
func TestWorkflowsLinkNoStore(t *testing.T) {
	depcheck.Forbid(t, []string{"github.com/setflow/setflow/workflows"}, []string{
		"database/sql", // not database/sql/driver: Temporal's uuid type implements it
		"github.com/jmoiron/sqlx/...",
		"github.com/lib/pq/...",
		"github.com/redis/go-redis/...",
		"github.com/setflow/setflow/audit/auditdb/...",
		"github.com/setflow/setflow/guard/guarddb/...",
		"github.com/setflow/setflow/userstate/statedb/...",
		"github.com/setflow/setflow/inbox/...",
		"github.com/setflow/setflow/sessions/...",
		"github.com/setflow/setflow/profile/...",
	})
}
