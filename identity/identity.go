// Package identity maps a Kakao user (issuer, user id) to the service's own
// account ids, for the steps that touch the service's data (sessions, the
// user table, purges) and for the status API's lookup by account id.
//
// A Kakao user may have no account (never signed up, or already deleted) —
// the steps audit `no_account` then, which is not an error — or several
// (a service that allows linking one Kakao login to more than one account):
// every one is handled.
package identity

import (
	"context"
	"errors"
)

// User is a Kakao user as the mapping knows it. Issuer is empty when the
// mapping does not record issuers (one issuer per service).
type User struct {
	Issuer string `json:"issuer,omitempty"`
	UserID string `json:"user_id"`
}

// Mapper looks up the service's accounts of a Kakao user, and back.
type Mapper interface {
	// Accounts returns the account ids of the Kakao user, sorted; none is
	// not an error.
	Accounts(ctx context.Context, issuer, kakaoUserID string) ([]string, error)
	// Users returns the Kakao users linked to an account, sorted; none is
	// not an error.
	Users(ctx context.Context, accountID string) ([]User, error)
}

// ErrRejected is wrapped by a lookup that cannot succeed on retry (the
// endpoint refused the request, the table does not exist); other errors are
// transient.
var ErrRejected = errors.New("identity: lookup rejected")

// Identity is the default mapping: the service's account id is the Kakao user
// id itself.
type Identity struct{}

// Accounts returns the user id.
func (Identity) Accounts(_ context.Context, _, kakaoUserID string) ([]string, error) {
	if kakaoUserID == "" {
		return nil, nil
	}
	return []string{kakaoUserID}, nil
}

// Users returns the account id as a Kakao user id of any issuer.
func (Identity) Users(_ context.Context, accountID string) ([]User, error) {
	if accountID == "" {
		return nil, nil
	}
	return []User{{UserID: accountID}}, nil
}
