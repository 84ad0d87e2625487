package config

import (
	"flag"
	"time"
)

// EnvAuditCheckpointInterval is how often the relay writes an audit checkpoint.
const EnvAuditCheckpointInterval = "SETFLOW_AUDIT_CHECKPOINT_INTERVAL"

// DefaultAuditCheckpointInterval bounds how long an audit row is protected
// by its chain alone: rows cut off the end of a chain before the next
// checkpoint leave no trace.
const DefaultAuditCheckpointInterval = time.Minute

// Audit configures the audit trail's checkpoints.
type Audit struct {
	CheckpointInterval time.Duration
}

func (a *Audit) settings() []Setting {
	return []Setting{
		{Env: EnvAuditCheckpointInterval, Flag: "audit-checkpoint-interval", Default: DefaultAuditCheckpointInterval.String(),
			Usage: "relay, dev: write an audit checkpoint (a Merkle root over every chain's head, logged as ID:HASH to publish) this often; 0 writes none (then run setflow audit checkpoint from cron)", ptr: &a.CheckpointInterval},
	}
}

// Register adds -audit-checkpoint-interval (relay, dev).
func (a *Audit) Register(fs *flag.FlagSet) { register(fs, a.settings()) }
