// Package delivery holds the food-delivery example: the schema created on
// every shard, an example config, and the sample data the demo loads.
package delivery

import _ "embed"

// Schema is the DDL of the example, idempotent (IF NOT EXISTS).
//
//go:embed schema.sql
var Schema string

// ExampleConfig is the example config file for 4 local shards.
//
//go:embed example.yaml
var ExampleConfig []byte

// AppRole creates the example's unprivileged application role app
// (password app) with rights on the schema's tables; run it as a
// superuser on every shard. Idempotent.
//
//go:embed app_role.sql
var AppRole string
