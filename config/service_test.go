package config

import (
	"github.com/setflow/setflow/identity"
	"testing"

	"github.com/setflow/setflow/serviceusers"
)

func TestIntegrationSettingsValidate(t *testing.T) {
	bad := []interface{ Validate() error }{
		&Identity{Mode: "ldap"},
		&Identity{Mode: "http"},
		&Identity{Mode: "table", Table: identityTable("x;y")},
		&Admin{Listen: ":1", Issuer: "iss"},
		&Admin{Listen: ":1", Issuer: "iss", Tokens: []string{"t"}, TLSCert: "c"},
		&Admin{Listen: ":1", Issuer: "iss", TLSClientCA: "ca"},
		&ServiceHook{URL: "https://example.test/hook"},
		&ServiceUsers{serviceusers.Schema{Table: "users", IDColumn: "i d", LockedColumn: "locked"}},
	}
	for _, v := range bad {
		if err := v.Validate(); err == nil {
			t.Errorf("%+v accepted", v)
		}
	}
	good := []interface{ Validate() error }{
		&Identity{Mode: "identity"},
		&Identity{Mode: "http", URL: "https://example.test/lookup"},
		&Identity{Mode: "table", Table: identityTable("shop.social_accounts")},
		&Admin{},
		&Admin{Listen: ":1", Issuer: "iss", Tokens: []string{"t"}},
		&ServiceHook{},
		&ServiceUsers{serviceusers.Schema{Table: "users", IDColumn: "id"}}, // no column: off
	}
	for _, v := range good {
		if err := v.Validate(); err != nil {
			t.Errorf("%+v: %v", v, err)
		}
	}
}

func identityTable(name string) (s identity.TableSchema) {
	s.Table, s.UserColumn, s.AccountColumn, s.Filter = name, "provider_user_id", "account_id", "provider=kakao"
	return s
}
