package config

import (
	"errors"
	"flag"
	"slices"
)

// Worker is everything the worker's activities and back ends are built from
// (worker.NewActivities): `setflow worker`, `setflow dev`, the benches and
// the integration tests all go through it.
type Worker struct {
	AuditKey     AuditKey
	Sessions     Sessions
	Reactions    Reactions
	Kakao        KakaoAPI
	Identity     Identity
	ServiceUsers ServiceUsers
	ServiceHook  ServiceHook
	// TestUsers are the Kakao user ids whose events run in shadow
	// (SETFLOW_TEST_USERS).
	TestUsers TestUsers
}

func (w *Worker) settings() []Setting {
	return slices.Concat(w.AuditKey.settings(), w.Sessions.settings(), w.Reactions.settings(), w.Kakao.settings(), w.Identity.settings(),
		w.ServiceUsers.settings(), w.ServiceHook.settings(), w.TestUsers.settings())
}

// Register adds the worker's back-end flags.
func (w *Worker) Register(fs *flag.FlagSet) { register(fs, w.settings()) }

// Validate reports every missing or contradictory back-end setting by name.
func (w *Worker) Validate() error {
	return errors.Join(w.Reactions.Validate(), w.Identity.Validate(), w.ServiceUsers.Validate(),
		w.ServiceHook.Validate(), w.TestUsers.Validate())
}

// DefaultWorker is the worker's configuration with every default and no
// environment: Postgres sessions, identity mapping, no CRM, email, Kakao API
// or service hook. Tests and benches start from it and set what they need.
func DefaultWorker() Worker {
	var w Worker
	setDefaults(w.settings())
	return w
}
