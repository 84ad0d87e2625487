// Package integration holds setflow's end-to-end tests: the real ingress,
// relay and worker in-process, against the machine's PostgreSQL and a Temporal
// dev server built from source. Unit tests live beside the code they test.
package integration
