// Package certs makes a certificate authority and certificates signed by
// it, with crypto/x509: what `shardproxy gen-cert` writes, and what the
// tests use for TLS on both sides of the proxy. Keys are ECDSA P-256,
// signatures ECDSA with SHA-256.
package certs
