// Package validate checks the deployment examples in deploy/kubernetes and
// deploy/compose without a cluster or a Docker daemon: its tests decode every
// manifest strictly into its typed object (an unknown or misspelt field is an
// error), follow the references between the objects (ConfigMap, Secret and
// Service names, ports, volumes, probes, the spool directory), and load each
// Sluice config with the main module's config package, in the environment
// its container would give it, as `sluice check` would.
//
// It is a module of its own so that the Kubernetes, kustomize and Compose
// libraries stay out of Sluice's go.mod; `make test` runs it. It has no API:
// everything is in its tests.
package validate
