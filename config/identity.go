package config

import (
	"errors"
	"flag"
	"os"

	"github.com/setflow/setflow/identity"
)

// Identity configures how a Kakao user maps to the service's account ids
// (identity.Mapper): identity (the default: the account id is the Kakao user
// id), a table on the service's Postgres, or an HTTP lookup endpoint.
type Identity struct {
	Mode  string // identity | table | http
	Table identity.TableSchema
	URL   string
	// Token is the lookup endpoint's bearer token (a secret: env only).
	Token string
}

// EnvIdentityToken names the variable holding the lookup endpoint's token.
const EnvIdentityToken = "SETFLOW_IDENTITY_TOKEN"

// Register adds the identity mapping flags.
func (i *Identity) Register(fs *flag.FlagSet) {
	str(fs, &i.Mode, "identity", "SETFLOW_IDENTITY", "identity", "how a Kakao user maps to your account ids: identity, table or http")
	str(fs, &i.Table.Table, "identity-table", "SETFLOW_IDENTITY_TABLE", "social_accounts", "mapping table (optionally schema-qualified) for -identity table")
	str(fs, &i.Table.UserColumn, "identity-user-column", "SETFLOW_IDENTITY_USER_COLUMN", "provider_user_id", "mapping table column holding the Kakao user id")
	str(fs, &i.Table.AccountColumn, "identity-account-column", "SETFLOW_IDENTITY_ACCOUNT_COLUMN", "account_id", "mapping table column holding your account id")
	str(fs, &i.Table.IssuerColumn, "identity-issuer-column", "SETFLOW_IDENTITY_ISSUER_COLUMN", "", "mapping table column holding the issuer (empty: not compared)")
	str(fs, &i.Table.Filter, "identity-filter", "SETFLOW_IDENTITY_FILTER", "", "fixed condition column=value on the mapping table, e.g. provider=kakao")
	URLVar(fs, &i.URL, "identity-url", "SETFLOW_IDENTITY_URL", "", "lookup endpoint `URL` for -identity http; its bearer token comes from env "+EnvIdentityToken)
	i.Token = os.Getenv(EnvIdentityToken)
}

// Validate reports missing or invalid settings by name.
func (i *Identity) Validate() error {
	switch i.Mode {
	case "identity", "":
		return nil
	case "table":
		return i.Table.Validate()
	case "http":
		if i.URL == "" {
			return errors.New("SETFLOW_IDENTITY=http needs SETFLOW_IDENTITY_URL")
		}
		return nil
	}
	return errors.New("SETFLOW_IDENTITY must be identity, table or http")
}
