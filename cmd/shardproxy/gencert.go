package main

import (
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/shardproxy/shardproxy/certs"
)

// genCert writes a new CA and a server certificate signed by it into a
// folder: enough for tls: in the config (and for shards' ssl=on), with
// clients verifying against ca.crt.
func genCert(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("gen-cert", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "certs", "folder to write ca.crt, ca.key, server.crt and server.key into")
	hosts := fs.String("hosts", "localhost,127.0.0.1", "comma-separated DNS names and IP addresses the server certificate is for")
	days := fs.Int("days", 365, "validity in days")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var list []string
	for _, h := range strings.Split(*hosts, ",") {
		if h = strings.TrimSpace(h); h != "" {
			list = append(list, h)
		}
	}
	if len(list) == 0 || *days <= 0 {
		fmt.Fprintln(stderr, "gen-cert: -hosts needs at least one host and -days must be positive")
		return 2
	}
	f, err := certs.Generate(*dir, list, time.Duration(*days)*24*time.Hour)
	if err != nil {
		fmt.Fprintln(stderr, "gen-cert:", err)
		return 1
	}
	fmt.Fprintf(stdout, `wrote %s, %s (keep it safe), %s and %s for %s

In the config:
  tls: {cert: %s, key: %s, mode: require}
Clients verify the proxy with:
  psql "host=%s dbname=... sslmode=verify-full sslrootcert=%s"
`, f.CA, f.CAKey, f.Cert, f.Key, strings.Join(list, ", "), f.Cert, f.Key, list[0], f.CA)
	return 0
}
