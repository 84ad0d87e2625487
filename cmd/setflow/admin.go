package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/setflow/setflow/audit"
	"github.com/setflow/setflow/config"
	"github.com/setflow/setflow/statusapi"
	"github.com/setflow/setflow/userstate/statedb"
	"github.com/setflow/setflow/worker"
)

// startAdmin serves the status API on the admin port until ctx ends; it
// returns once the port is bound, so a taken port fails the command at once.
func startAdmin(ctx context.Context, log *slog.Logger, db *sqlx.DB, adm config.Admin, ids config.Identity, key config.AuditKey) error {
	if adm.Listen == "" {
		return nil
	}
	if err := adm.Validate(); err != nil {
		return err
	}
	tlsCfg, err := adm.TLSConfig()
	if err != nil {
		return err
	}
	mapper, err := worker.NewIdentity(db, ids)
	if err != nil {
		return err
	}
	states, err := statedb.NewReader(ctx, db)
	if err != nil {
		return err
	}
	api := &statusapi.Server{States: states, Subjects: audit.SubjectHasher{Key: key.Bytes(log)},
		Accounts: mapper, Issuer: adm.Issuer, Tokens: adm.Tokens}
	srv := &http.Server{Handler: api.Handler(), TLSConfig: tlsCfg, ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		// Refused handshakes (mTLS) are routine: debug, not stderr.
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	l, err := net.Listen("tcp", adm.Listen)
	if err != nil {
		return fmt.Errorf("admin port: %w", err)
	}
	go func() {
		var err error
		if tlsCfg != nil {
			err = srv.ServeTLS(l, "", "")
		} else {
			err = srv.Serve(l)
		}
		if !errors.Is(err, http.ErrServerClosed) {
			log.Error("admin port stopped", "error", err)
		}
	}()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Info("status API listening", "addr", l.Addr().String(), "tls", tlsCfg != nil, "mtls", adm.TLSClientCA != "", "tokens", len(adm.Tokens))
	return nil
}
