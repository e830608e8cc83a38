package localpg

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Options say how to lay out and start a set of clusters.
type Options struct {
	// N is the number of clusters (shards) to start.
	N int
	// Dir holds one data directory per cluster (Dir/shard0, Dir/shard1...).
	// Empty means a new temporary directory, removed by Stop.
	Dir string
	// Ports, when set, fixes the port of each cluster (len must be N).
	// Otherwise free loopback ports are chosen at start.
	Ports []int
	// Database is created in every cluster when it does not exist yet.
	Database string
	// Settings are extra postgresql.conf lines (name -> value).
	Settings map[string]string
	// Log receives progress lines; nil discards them.
	Log func(format string, args ...any)
	// TLS, when set, turns ssl on with these PEM files, copied into each
	// data directory (owned by the server user, the key 0600 as Postgres
	// requires).
	TLS *TLSFiles
}

// TLSFiles are the server side of TLS: certificate and key, and the CA
// whose client certificates the server verifies (optional).
type TLSFiles struct {
	Cert, Key, CA string
}

// Cluster is one running Postgres server.
type Cluster struct {
	Name    string
	DataDir string
	Port    int
	bin     string
	runAs   *user.User
	// settings are the extra postgresql.conf lines it was started with
	// (a replica needs the primary's).
	settings map[string]string
}

// Set is a group of running clusters.
type Set struct {
	Clusters []*Cluster
	database string
	dir      string
	tempDir  bool
	stopOnce sync.Once
	mu       sync.Mutex // guards Clusters while replicas are added
}

// ErrNoPostgres means no initdb binary was found.
var ErrNoPostgres = errors.New("postgres server binaries (initdb, pg_ctl) not found: install the postgresql package")

// BinDir finds the directory holding initdb and pg_ctl: $PG_BINDIR, then
// PATH, then the newest /usr/lib/postgresql/*/bin.
func BinDir() (string, error) {
	if d := os.Getenv("PG_BINDIR"); d != "" {
		return d, nil
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", ErrNoPostgres
}

// tool finds a Postgres program: in binDir, else beside the real initdb
// (binDir may hold links to a few programs only), else in PATH.
func tool(binDir, name string) string {
	path := filepath.Join(binDir, name)
	if _, err := os.Stat(path); err == nil {
		return path
	}
	if real, err := filepath.EvalSymlinks(filepath.Join(binDir, "initdb")); err == nil {
		if p := filepath.Join(filepath.Dir(real), name); p != path {
			if _, err := os.Stat(p); err == nil {
				return p
			}
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, d := range dirs {
		if p := filepath.Join(d, name); fileExists(p) {
			return p
		}
	}
	return path
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func versionOf(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

// Start initialises (when needed) and starts opts.N clusters in parallel and
// waits until each accepts connections. On error, whatever started is stopped.
func Start(ctx context.Context, opts Options) (*Set, error) {
	if opts.N <= 0 {
		return nil, fmt.Errorf("localpg: N must be positive")
	}
	if opts.Ports != nil && len(opts.Ports) != opts.N {
		return nil, fmt.Errorf("localpg: %d ports for %d clusters", len(opts.Ports), opts.N)
	}
	bin, err := BinDir()
	if err != nil {
		return nil, err
	}
	runAs, err := serverUser()
	if err != nil {
		return nil, err
	}
	s := &Set{database: opts.Database}
	if opts.Dir == "" {
		d, err := os.MkdirTemp("", "localpg-")
		if err != nil {
			return nil, err
		}
		s.dir, s.tempDir = d, true
	} else {
		// Absolute: the Postgres tools run in another working directory.
		d, err := filepath.Abs(opts.Dir)
		if err != nil {
			return nil, err
		}
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
		s.dir = d
	}
	if err := makeTraversable(s.dir); err != nil {
		return nil, err
	}
	for i := 0; i < opts.N; i++ {
		s.Clusters = append(s.Clusters, &Cluster{
			Name:    fmt.Sprintf("shard%d", i),
			DataDir: filepath.Join(s.dir, fmt.Sprintf("shard%d", i)),
			bin:     bin,
			runAs:   runAs,
		})
	}
	errs := make([]error, opts.N)
	var wg sync.WaitGroup
	for i, c := range s.Clusters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			port := 0
			if opts.Ports != nil {
				port = opts.Ports[i]
			}
			errs[i] = c.start(ctx, port, opts)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// DSN returns a libpq URL for the cluster's database as the superuser.
func (c *Cluster) DSN(database string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.Port, database)
}

// Dir is the directory holding the clusters' data directories.
func (s *Set) Dir() string { return s.dir }

// DSNs returns one URL per cluster for the set's database.
func (s *Set) DSNs() []string {
	out := make([]string, len(s.Clusters))
	for i, c := range s.Clusters {
		out[i] = c.DSN(s.database)
	}
	return out
}

// Stop stops every cluster (fast shutdown) and removes a temporary
// directory. It is safe to call more than once and from a signal handler.
func (s *Set) Stop() {
	s.stopOnce.Do(func() {
		var wg sync.WaitGroup
		s.mu.Lock()
		clusters := append([]*Cluster(nil), s.Clusters...)
		s.mu.Unlock()
		for _, c := range clusters {
			wg.Add(1)
			go func() { defer wg.Done(); _ = c.Stop() }()
		}
		wg.Wait()
		if s.tempDir {
			os.RemoveAll(s.dir)
		}
	})
}

// Stop stops this cluster; it can be started again with Restart.
func (c *Cluster) Stop() error {
	if _, err := os.Stat(filepath.Join(c.DataDir, "postmaster.pid")); err != nil {
		return nil
	}
	_, err := c.run(context.Background(), "pg_ctl", "-D", c.DataDir, "-m", "fast", "-w", "-t", "60", "stop")
	return err
}

// Restart starts a stopped cluster again on the same port.
func (c *Cluster) Restart(ctx context.Context) error {
	_, err := c.run(ctx, "pg_ctl", "-D", c.DataDir, "-l", filepath.Join(c.DataDir, "server.log"), "-w", "-t", "60", "start")
	return err
}

func (c *Cluster) start(ctx context.Context, port int, opts Options) error {
	c.settings = opts.Settings
	fresh := false
	if _, err := os.Stat(filepath.Join(c.DataDir, "PG_VERSION")); err != nil {
		if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
			return err
		}
		if err := c.chown(c.DataDir); err != nil {
			return err
		}
		if out, err := c.run(ctx, "initdb", "-D", c.DataDir, "-U", "postgres", "-A", "trust",
			"-E", "UTF8", "--locale=C", "--no-sync"); err != nil {
			return fmt.Errorf("initdb %s: %w\n%s", c.Name, err, out)
		}
		fresh = true
	}
	// A previous run killed without cleanup may have left a server running.
	if _, err := c.run(ctx, "pg_ctl", "-D", c.DataDir, "status"); err == nil {
		c.run(ctx, "pg_ctl", "-D", c.DataDir, "-m", "immediate", "-w", "stop")
	}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		p := port
		if p == 0 {
			var err error
			if p, err = FreePort(); err != nil {
				return err
			}
		}
		settings, err := c.tlsSettings(opts)
		if err != nil {
			return err
		}
		if err := c.writeConf(p, fresh, settings); err != nil {
			return err
		}
		c.Port = p
		if err := c.Restart(ctx); err != nil {
			log, _ := os.ReadFile(filepath.Join(c.DataDir, "server.log"))
			lastErr = fmt.Errorf("start %s on port %d: %w\n%s", c.Name, p, err, tail(log, 2000))
			if port != 0 {
				break
			}
			continue
		}
		lastErr = nil
		break
	}
	if lastErr != nil {
		return lastErr
	}
	if opts.Database != "" {
		return c.ensureDatabase(ctx, opts.Database)
	}
	return nil
}

// writeConf rewrites the included localpg.conf: port and test-friendly
// settings (no fsync, TCP on loopback only, no Unix socket).
func (c *Cluster) writeConf(port int, fresh bool, extra map[string]string) error {
	conf := filepath.Join(c.DataDir, "postgresql.conf")
	if fresh {
		f, err := os.OpenFile(conf, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		_, err = f.WriteString("\ninclude_if_exists = 'localpg.conf'\n")
		f.Close()
		if err != nil {
			return err
		}
	}
	lines := map[string]string{
		"port":                      strconv.Itoa(port),
		"listen_addresses":          "'127.0.0.1'",
		"unix_socket_directories":   "''",
		"fsync":                     "off",
		"synchronous_commit":        "off",
		"full_page_writes":          "off",
		"max_connections":           "200",
		"max_prepared_transactions": "100",
		"shared_buffers":            "64MB",
		"log_min_messages":          "warning",
		"timezone":                  "'UTC'",
	}
	for k, v := range extra {
		lines[k] = v
	}
	keys := make([]string, 0, len(lines))
	for k := range lines {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b bytes.Buffer
	for _, k := range keys {
		fmt.Fprintf(&b, "%s = %s\n", k, lines[k])
	}
	path := filepath.Join(c.DataDir, "localpg.conf")
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		return err
	}
	return c.chown(path)
}

// CreateDatabase creates database db in the cluster unless it exists
// (e.g. a coordinator database beside a shard's).
func (c *Cluster) CreateDatabase(ctx context.Context, db string) error {
	return c.ensureDatabase(ctx, db)
}

// tlsSettings copies opts.TLS's files into the data directory and returns
// opts.Settings with ssl on.
func (c *Cluster) tlsSettings(opts Options) (map[string]string, error) {
	if opts.TLS == nil {
		return opts.Settings, nil
	}
	out := map[string]string{"ssl": "on", "ssl_cert_file": "'server.crt'", "ssl_key_file": "'server.key'"}
	files := map[string]string{"server.crt": opts.TLS.Cert, "server.key": opts.TLS.Key}
	if opts.TLS.CA != "" {
		out["ssl_ca_file"] = "'root.crt'"
		files["root.crt"] = opts.TLS.CA
	}
	for name, src := range files {
		b, err := os.ReadFile(src)
		if err != nil {
			return nil, err
		}
		dst := filepath.Join(c.DataDir, name)
		if err := os.WriteFile(dst, b, 0o600); err != nil {
			return nil, err
		}
		if err := c.chown(dst); err != nil {
			return nil, err
		}
	}
	for k, v := range opts.Settings {
		out[k] = v
	}
	return out, nil
}

func (c *Cluster) ensureDatabase(ctx context.Context, db string) error {
	psql := filepath.Join(c.bin, "psql")
	if _, err := os.Stat(psql); err != nil {
		psql = "psql"
	}
	q := fmt.Sprintf("SELECT 1 FROM pg_database WHERE datname = '%s'", strings.ReplaceAll(db, "'", "''"))
	out, err := exec.CommandContext(ctx, psql, "-XAtq", "-h", "127.0.0.1", "-p", strconv.Itoa(c.Port),
		"-U", "postgres", "-d", "postgres", "-c", q).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: check database: %w\n%s", c.Name, err, out)
	}
	if strings.TrimSpace(string(out)) == "1" {
		return nil
	}
	ident := `"` + strings.ReplaceAll(db, `"`, `""`) + `"`
	out, err = exec.CommandContext(ctx, psql, "-XAtq", "-h", "127.0.0.1", "-p", strconv.Itoa(c.Port),
		"-U", "postgres", "-d", "postgres", "-c", "CREATE DATABASE "+ident).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: create database: %w\n%s", c.Name, err, out)
	}
	return nil
}

// run executes a Postgres binary from the bin dir, as the server user when
// we are root.
func (c *Cluster) run(ctx context.Context, name string, args ...string) ([]byte, error) {
	path := tool(c.bin, name)
	var cmd *exec.Cmd
	if c.runAs != nil {
		cmd = exec.CommandContext(ctx, "runuser", append([]string{"-u", c.runAs.Username, "--", path}, args...)...)
	} else {
		cmd = exec.CommandContext(ctx, path, args...)
	}
	cmd.Dir = os.TempDir()
	// pg_ctl start leaves the postmaster running with our stdout; give it
	// nothing so that the caller's pipes close.
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	return out.Bytes(), err
}

func (c *Cluster) chown(path string) error {
	if c.runAs == nil {
		return nil
	}
	uid, _ := strconv.Atoi(c.runAs.Uid)
	gid, _ := strconv.Atoi(c.runAs.Gid)
	return os.Chown(path, uid, gid)
}

// serverUser is the OS user to run Postgres as: nil (ourselves) unless we
// are root, then "postgres".
func serverUser() (*user.User, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root needs a 'postgres' OS user to run the servers: %w", err)
	}
	return u, nil
}

// makeTraversable lets the server user reach dir through its parents
// (os.MkdirTemp creates 0700 directories).
func makeTraversable(dir string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	for d := abs; d != "/" && d != "."; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o001 == 0 {
			if err := os.Chmod(d, fi.Mode().Perm()|0o011); err != nil {
				return err
			}
		}
	}
	return nil
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// StopOnSignal stops the set when the process receives SIGINT or SIGTERM,
// then exits with status 130, so an interrupted test run or demo leaves no
// servers behind.
func (s *Set) StopOnSignal() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ch
		s.Stop()
		os.Exit(130)
	}()
}

// InCI reports whether CI=true: integration tests must then fail, never skip,
// when Postgres cannot start.
func InCI() bool { return os.Getenv("CI") == "true" }

// StartReplica starts a streaming replica of primary (pg_basebackup -R,
// hot standby) on a free loopback port, in the set's directory, and adds
// it to the set so that Stop stops it too. The primary must be running.
func (s *Set) StartReplica(ctx context.Context, primary *Cluster, name string) (*Cluster, error) {
	c := &Cluster{Name: name, DataDir: filepath.Join(s.dir, name), bin: primary.bin, runAs: primary.runAs}
	if _, err := os.Stat(filepath.Join(c.DataDir, "PG_VERSION")); err != nil {
		// A fresh copy: pg_basebackup wants an empty or missing directory.
		if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
			return nil, err
		}
		if err := c.chown(c.DataDir); err != nil {
			return nil, err
		}
		if out, err := c.run(ctx, "pg_basebackup", "-h", "127.0.0.1", "-p", strconv.Itoa(primary.Port), "-U", "postgres",
			"-D", c.DataDir, "-R", "-X", "stream", "--no-sync", "-c", "fast"); err != nil {
			return nil, fmt.Errorf("pg_basebackup %s from %s: %w\n%s", name, primary.Name, err, out)
		}
	}
	// The primary's settings (a replica needs max_connections and the
	// like at least as high), on a port of its own, hot standby.
	settings := map[string]string{"hot_standby": "on"}
	for k, v := range primary.settings {
		settings[k] = v
	}
	if err := c.start(ctx, 0, Options{Settings: settings}); err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.Clusters = append(s.Clusters, c)
	s.mu.Unlock()
	return c, nil
}

// Promote makes a replica a primary (pg_ctl promote, waiting for it).
func (c *Cluster) Promote(ctx context.Context) error {
	if out, err := c.run(ctx, "pg_ctl", "-D", c.DataDir, "-w", "-t", "60", "promote"); err != nil {
		return fmt.Errorf("promote %s: %w\n%s", c.Name, err, out)
	}
	return nil
}

// Kill stops the cluster at once (immediate shutdown, as a crash would).
func (c *Cluster) Kill() error {
	_, err := c.run(context.Background(), "pg_ctl", "-D", c.DataDir, "-m", "immediate", "-w", "stop")
	return err
}

// Follow restarts the cluster as a streaming replica of primary (a former
// primary rejoining after a failover, as an HA tool would do it): it stops
// it, writes standby.signal and primary_conninfo, and starts it again on
// its port. The cluster must not have diverged from primary (a clean stop
// before primary was promoted).
func (c *Cluster) Follow(ctx context.Context, primary *Cluster) error {
	if err := c.Stop(); err != nil {
		return err
	}
	settings := map[string]string{"hot_standby": "on",
		"primary_conninfo": fmt.Sprintf("'host=127.0.0.1 port=%d user=postgres'", primary.Port)}
	for k, v := range c.settings {
		settings[k] = v
	}
	if err := c.writeConf(c.Port, false, settings); err != nil {
		return err
	}
	signal := filepath.Join(c.DataDir, "standby.signal")
	if err := os.WriteFile(signal, nil, 0o600); err != nil {
		return err
	}
	if err := c.chown(signal); err != nil {
		return err
	}
	if out, err := c.run(ctx, "pg_ctl", "-D", c.DataDir, "-l", filepath.Join(c.DataDir, "server.log"), "-w", "-t", "60", "start"); err != nil {
		return fmt.Errorf("start %s as a replica of %s: %w\n%s", c.Name, primary.Name, err, out)
	}
	return nil
}
