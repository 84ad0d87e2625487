package config

import (
	"errors"
	"flag"

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

func (i *Identity) settings() []Setting {
	return []Setting{
		{Env: "SETFLOW_IDENTITY", Flag: "identity", Default: "identity", Usage: "worker, dev: how a Kakao user maps to your account ids: identity, table or http", ptr: &i.Mode},
		{Env: "SETFLOW_IDENTITY_TABLE", Flag: "identity-table", Default: "social_accounts", Usage: "worker: mapping table (optionally schema-qualified) for -identity table", ptr: &i.Table.Table},
		{Env: "SETFLOW_IDENTITY_USER_COLUMN", Flag: "identity-user-column", Default: "provider_user_id", Usage: "worker: mapping table column holding the Kakao user id", ptr: &i.Table.UserColumn},
		{Env: "SETFLOW_IDENTITY_ACCOUNT_COLUMN", Flag: "identity-account-column", Default: "account_id", Usage: "worker: mapping table column holding your account id", ptr: &i.Table.AccountColumn},
		{Env: "SETFLOW_IDENTITY_ISSUER_COLUMN", Flag: "identity-issuer-column", Usage: "worker: mapping table column holding the issuer (empty: not compared)", ptr: &i.Table.IssuerColumn},
		{Env: "SETFLOW_IDENTITY_FILTER", Flag: "identity-filter", Usage: "worker: fixed condition column=value on the mapping table, e.g. provider=kakao", ptr: &i.Table.Filter},
		{Env: "SETFLOW_IDENTITY_URL", Flag: "identity-url", URL: true,
			Usage: "worker: lookup endpoint `URL` for -identity http; its bearer token comes from env " + EnvIdentityToken, ptr: &i.URL},
		{Env: EnvIdentityToken, Secret: true, Usage: "worker: the lookup endpoint's bearer token", ptr: &i.Token},
	}
}

// Register adds the identity mapping flags.
func (i *Identity) Register(fs *flag.FlagSet) { register(fs, i.settings()) }

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
