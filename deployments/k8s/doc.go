// Package k8s holds setflow's Kubernetes manifests (a kustomize base and
// the dev and prod overlays) and no Go code: its test renders every overlay
// and checks each object offline — strictly against the Kubernetes API
// types, every pod template against the Pod Security Standard "restricted"
// profile, and setflow's own rules (probes, the schema wait, metrics on,
// pinned images, NetworkPolicies, alerts with a runbook). No cluster, no
// network: `go test ./deployments/k8s/`.
package k8s
