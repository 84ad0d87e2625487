// Package pgurl edits PostgreSQL connection URLs.
package pgurl

import "strings"

// WithDatabase returns url (postgres://user@host:port/db?params) naming
// database name instead, keeping the parameters.
func WithDatabase(url, name string) string {
	q := ""
	if i := strings.IndexByte(url, '?'); i >= 0 {
		url, q = url[:i], url[i:]
	}
	i := strings.LastIndexByte(url, '/')
	if i < len("postgres://") {
		return url + "/" + name + q
	}
	return url[:i+1] + name + q
}
