package userstate

// Subject names one user: the keyed hash that names its stream, and the
// issuer and user id that the service's tables and the CRM know it by.
type Subject struct {
	Hash   string `json:"hash"`
	Issuer string `json:"issuer"`
	UserID string `json:"user_id"`
}
