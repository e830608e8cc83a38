// Package deploy holds the files the compose cluster (compose.yaml at the
// repository root) mounts: the shardproxy/partman config, HAProxy,
// Prometheus, Grafana provisioning and the MongoDB setup scripts. It has no
// Go code; its tests check that compose.yaml and these files agree, since
// no Docker engine runs where the project is built.
package deploy
