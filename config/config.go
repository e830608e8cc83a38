// Package config reads the one YAML file that configures shardproxy and
// partman: strictly (an unknown key is an error naming its line), then
// validated section by section.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/shardproxy/shardproxy/partman"
	partmongo "github.com/shardproxy/shardproxy/partman/mongo"
	"github.com/shardproxy/shardproxy/proxy"
	"github.com/shardproxy/shardproxy/router"
	"github.com/shardproxy/shardproxy/topology"
)

// File is the whole config file. The proxy and topology keys sit at the top
// level; other tools have their own sections.
type File struct {
	Proxy    proxy.Config  `yaml:",inline"`
	Topology router.Config `yaml:",inline"`
	Log      Log           `yaml:"log"`
	// Mongo is the MongoDB layout `partman mongo` applies; optional.
	Mongo partmongo.Config `yaml:"mongo"`
	// Partman keeps partitioned tables ahead of their data (partman run,
	// or the loop inside shardproxy).
	Partman partman.Config `yaml:"partman"`
	// Metadata, when present, keeps the bucket map versioned in Postgres
	// (package topology; docs/resharding.md).
	Metadata *topology.Config `yaml:"metadata"`
}

// Log configures logging.
type Log struct {
	// Level is debug, info (default), warn or error.
	Level string `yaml:"level"`
	// Format is text (default) or json.
	Format string `yaml:"format"`
	// SlowQuery is the slow-query threshold: statements at least this slow
	// are logged at warn with their fingerprint and normalized text.
	// Default 1s. Reloadable.
	SlowQuery time.Duration `yaml:"slow_query"`
	// MaxPerSecond and Burst rate-limit slow-query and error lines (token
	// bucket); dropped lines are counted in shardproxy_log_lines_dropped_total
	// and in a "dropped" attribute of the next line. Defaults 50 and 100.
	// Reloadable.
	MaxPerSecond float64 `yaml:"max_per_second"`
	Burst        int     `yaml:"burst"`
	// LogLiterals adds the statement as sent, literals included, to slow
	// and failed statement lines (query_literal). Off by default: lines
	// carry the redacted statement only. For debugging. Reloadable.
	LogLiterals bool `yaml:"log_literals"`
}

// SlowLog is the proxy's view of the log section.
func (l Log) SlowLog() proxy.SlowLog {
	return proxy.SlowLog{Threshold: l.SlowQuery, PerSecond: l.MaxPerSecond, Burst: l.Burst, Literals: l.LogLiterals}
}

// Load reads, decodes and validates the file at path.
func Load(path string) (*File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	f, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

// Parse decodes and validates a config document.
func Parse(b []byte) (*File, error) {
	var f File
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("empty config")
		}
		return nil, err
	}
	f.Proxy = f.Proxy.WithDefaults()
	if f.Log.SlowQuery == 0 {
		f.Log.SlowQuery = time.Second
	}
	if f.Log.MaxPerSecond == 0 {
		f.Log.MaxPerSecond = 50
	}
	if f.Log.Burst == 0 {
		f.Log.Burst = 100
	}
	var errs []error
	if err := f.Proxy.Validate(); err != nil {
		errs = append(errs, err)
	}
	topoErr := f.Topology.Validate()
	if topoErr != nil {
		errs = append(errs, topoErr)
	}
	switch {
	case f.Mongo.IsZero():
	case topoErr != nil:
		if err := f.Mongo.Validate(); err != nil {
			errs = append(errs, err)
		}
	default:
		// Resolve validates the section and checks its zones against the
		// topology.
		if _, err := f.Mongo.Resolve(&f.Topology); err != nil {
			errs = append(errs, err)
		}
	}
	if f.Metadata != nil {
		if err := f.Metadata.Validate(); err != nil {
			errs = append(errs, err)
		}
		if f.Topology.Buckets == 0 {
			errs = append(errs, errors.New("metadata: needs buckets (the bucket map is what it versions)"))
		}
	}
	if err := f.Partman.Validate(); err != nil {
		errs = append(errs, err)
	}
	switch f.Log.Level {
	case "", "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log.level %q is not debug, info, warn or error", f.Log.Level))
	}
	if f.Log.SlowQuery < 0 || f.Log.MaxPerSecond < 0 || f.Log.Burst < 0 {
		errs = append(errs, errors.New("log.slow_query, log.max_per_second and log.burst must be positive"))
	}
	switch f.Log.Format {
	case "", "text", "json":
	default:
		errs = append(errs, fmt.Errorf("log.format %q is not text or json", f.Log.Format))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &f, nil
}
