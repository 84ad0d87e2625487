package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/jmoiron/sqlx"

	"github.com/setflow/setflow/audit"
	"github.com/setflow/setflow/audit/auditdb"
	"github.com/setflow/setflow/config"
)

const auditUsage = "usage: setflow audit verify [-user ID | -subject HASH] [-expect ID:HASH] [-from ID:HASH] | " +
	"setflow audit checkpoint | setflow audit show <event-key> | setflow audit user [-issuer I] <user-id>"

// runAudit implements `setflow audit verify` (every chain, or one user's
// chain and its checkpoint proof), `audit checkpoint` (seal the chain heads
// now and print the checkpoint to publish), `audit show <event-key>` and
// `audit user <user-id>` (everything that happened to one user, found by the
// keyed subject hash, so it needs the worker's SETFLOW_AUDIT_KEY).
func runAudit(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errors.New(auditUsage)
	}
	sub, rest := args[0], args[1:]
	c := newCommon("audit " + sub)
	o := registerAuditFlags(c)
	if err := config.Parse(c.fs, rest); err != nil {
		return err
	}
	if config.IsSet(c.fs, "issuer") {
		o.issuer = c.ing.Issuer
	}
	if _, err := c.log.Logger(); err != nil {
		return err
	}
	db, err := openDB(ctx, c.db.URL)
	if err != nil {
		return err
	}
	defer db.Close()
	pg := auditdb.NewStore(db)
	switch sub {
	case "verify":
		return auditVerify(ctx, pg, o, c.key)
	case "checkpoint":
		return auditCheckpoint(ctx, pg)
	case "show":
		if c.fs.NArg() != 1 {
			return errors.New("usage: setflow audit show <event-key>")
		}
		recs, err := pg.ForEvent(ctx, c.fs.Arg(0))
		if err != nil {
			return err
		}
		return printAudit(recs)
	case "user":
		if c.fs.NArg() != 1 {
			return errors.New(auditUsage)
		}
		return auditUser(ctx, pg, c.fs.Arg(0), o.issuer, o.limit)
	}
	return fmt.Errorf("unknown audit command %q (verify, checkpoint, show, user)", sub)
}

// auditOptions are the flags of `setflow audit`.
type auditOptions struct {
	// issuer is -issuer when given, else empty: each sub-command has its
	// own fallback.
	issuer                      string
	limit                       int
	from, expect, user, subject string
}

func registerAuditFlags(c *common) *auditOptions {
	o := &auditOptions{}
	// -issuer (SETFLOW_ISSUER) is the ingress's setting: the issuer of the
	// user id. Left unset, user tries the running `setflow dev`'s, then
	// Kakao's; verify -user takes Kakao's.
	c.ing.RegisterIssuer(c.fs)
	c.tmp.Register(c.fs)
	registerUILinks(c.fs, &c.tmp)
	c.fs.IntVar(&o.limit, "limit", 200, "at most this many rows")
	c.fs.StringVar(&o.from, "from", "", "verify: a checkpoint ID:HASH whose sealed rows were archived; each chain is checked from the head it sealed")
	c.fs.StringVar(&o.expect, "expect", "", "verify: require this published checkpoint ID:HASH (detects rows and chains cut off, and rewritten checkpoints)")
	c.fs.StringVar(&o.user, "user", "", "verify: only this user's chain (by user id and -issuer; needs SETFLOW_AUDIT_KEY) and its checkpoint proof")
	c.fs.StringVar(&o.subject, "subject", "", "verify: only the chain of this subject hash (as audit rows show it; needs no key) and its checkpoint proof")
	return o
}

// auditVerify is `setflow audit verify`: every chain, or with -user or
// -subject one chain and its checkpoint proof.
func auditVerify(ctx context.Context, pg *auditdb.Store, o *auditOptions, key config.AuditKey) error {
	var opts audit.VerifyOptions
	var err error
	if opts.From, err = audit.ParseAnchor(o.from); err != nil {
		return err
	}
	if opts.Expect, err = audit.ParseAnchor(o.expect); err != nil {
		return err
	}
	if o.user != "" && o.subject != "" {
		return errors.New("give -user or -subject, not both")
	}
	subject := o.subject
	if o.user != "" {
		iss := o.issuer
		if iss == "" {
			iss = config.KakaoIssuer
		}
		subject = audit.SubjectHasher{Key: key.OrDev()}.Hash(iss, o.user)
	}
	if subject != "" {
		if opts.From != nil {
			return errors.New("-from checks every chain; it does not combine with -user or -subject")
		}
		return verifyChain(ctx, pg, subject, opts)
	}
	res, err := pg.VerifyWith(ctx, opts)
	if err != nil {
		return err
	}
	fmt.Printf("audit intact: %d rows in %d chains, %d written since the latest checkpoint\n", res.Rows, res.Chains, res.Unsealed)
	if res.Checkpoint == nil {
		fmt.Println("no checkpoint yet: run setflow audit checkpoint (or a relay) to seal the chains")
		return nil
	}
	fmt.Printf("latest checkpoint (publish it; check later with -expect): %s\n", res.Checkpoint.Anchor())
	return nil
}

// auditCheckpoint is `setflow audit checkpoint`: seal the chain heads now.
func auditCheckpoint(ctx context.Context, pg *auditdb.Store) error {
	cp, written, err := pg.Checkpoint(ctx)
	if err != nil {
		return err
	}
	state := "written"
	if !written {
		state = "unchanged (no chain moved since)"
	}
	fmt.Printf("checkpoint %s: %d chains, root %s\npublish it; check later with setflow audit verify -expect %s\n",
		state, cp.Chains, cp.Root, cp.Anchor())
	return nil
}

// verifyChain checks one user's chain and prints its checkpoint proof.
func verifyChain(ctx context.Context, pg *auditdb.Store, subject string, opts audit.VerifyOptions) error {
	res, err := pg.VerifyChain(ctx, audit.UserChain(subject), opts)
	if err != nil {
		return err
	}
	if res.Head == nil && res.Sealed == nil {
		fmt.Printf("chain %s has no rows\n", res.Chain)
		return nil
	}
	fmt.Printf("chain %s intact: %d rows\n", res.Chain, res.Rows)
	switch {
	case res.Checkpoint == nil:
		fmt.Println("no checkpoint yet: the chain is not sealed")
	case res.Sealed == nil:
		fmt.Printf("not sealed by checkpoint %s yet (written after it)\n", res.Checkpoint.Anchor())
	default:
		fmt.Printf("sealed at row %d by checkpoint %s (root %s)\ninclusion proof: leaf %d of %d, path %s\n",
			res.Sealed.Seq, res.Checkpoint.Anchor(), res.Checkpoint.Root, res.Proof.Index, res.Proof.Size, strings.Join(res.Proof.Path, ","))
	}
	return nil
}

// sealAudit writes the first audit checkpoint right after the migrations:
// it verifies the rows written before per-user chains (migration 00009) and
// seals them. A broken old chain fails the upgrade loudly.
func sealAudit(ctx context.Context, log *slog.Logger, db *sqlx.DB) error {
	cp, written, err := auditdb.NewStore(db).Seal(ctx)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if written {
		log.Info("audit sealed under its first checkpoint (publish it)", "checkpoint", cp.Anchor().String(), "chains", cp.Chains)
	}
	return nil
}
