package deploy_test

import (
	"bufio"
	"encoding/json"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/shardproxy/shardproxy/config"
)

const root = ".."

type service struct {
	Image       string            `yaml:"image"`
	Build       any               `yaml:"build"`
	Command     []string          `yaml:"command"`
	Entrypoint  []string          `yaml:"entrypoint"`
	Volumes     []string          `yaml:"volumes"`
	Ports       []string          `yaml:"ports"`
	Expose      []string          `yaml:"expose"`
	Environment map[string]string `yaml:"environment"`
	DependsOn   yaml.Node         `yaml:"depends_on"`
}

type composeFile struct {
	Services map[string]service `yaml:"services"`
}

func loadCompose(t *testing.T) composeFile {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// mount is one bind mount: a host path in the repository and where it
// appears in the container.
type mount struct{ host, container string }

func mounts(t *testing.T, s service) []mount {
	t.Helper()
	var out []mount
	for _, v := range s.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) < 2 || !strings.HasPrefix(parts[0], "./") {
			t.Errorf("volume %q is not a bind mount of a repository path", v)
			continue
		}
		out = append(out, mount{host: filepath.Join(root, parts[0]), container: parts[1]})
	}
	return out
}

// hostPath maps a container path to the repository file mounted there.
func hostPath(s service, ms []mount, p string) (string, bool) {
	for _, m := range ms {
		if p == m.container {
			return m.host, true
		}
		if rest, ok := strings.CutPrefix(p, m.container+"/"); ok {
			return filepath.Join(m.host, rest), true
		}
	}
	return "", false
}

func flagValue(args []string, name string) string {
	for i, a := range args {
		if a == name && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

func port(t *testing.T, hostport string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(hostport)
	if err != nil {
		t.Fatalf("%q: %v", hostport, err)
	}
	return p
}

func TestServicesExist(t *testing.T) {
	c := loadCompose(t)
	want := []string{"pg0", "pg1", "pg2", "proxy1", "proxy2", "haproxy", "partman", "prometheus", "grafana",
		"mongo-cfg", "mongo-shard1", "mongo-shard2", "mongo-init", "mongos", "mongo-addshards", "partman-mongo"}
	for _, name := range want {
		if _, ok := c.Services[name]; !ok {
			t.Errorf("service %s is missing", name)
		}
	}
	for name, s := range c.Services {
		if s.Image == "" {
			t.Errorf("service %s has no image", name)
		}
		if s.Build != nil {
			if s.Build != "." {
				t.Errorf("service %s builds %v, want the repository root", name, s.Build)
			}
			if _, err := os.Stat(filepath.Join(root, "Dockerfile")); err != nil {
				t.Error(err)
			}
		}
	}
}

// Every bind mount exists, and every absolute path a command names under
// a mount is a file of the repository.
func TestMountedFilesExist(t *testing.T) {
	c := loadCompose(t)
	for name, s := range c.Services {
		ms := mounts(t, s)
		for _, m := range ms {
			if _, err := os.Stat(m.host); err != nil {
				t.Errorf("service %s mounts %s: %v", name, m.host, err)
			}
		}
		var words []string
		for _, a := range append(append([]string{}, s.Entrypoint...), s.Command...) {
			words = append(words, strings.Fields(a)...)
		}
		for _, w := range words {
			if !strings.HasPrefix(w, "/") {
				continue
			}
			if p, ok := hostPath(s, ms, strings.Trim(w, `";`)); ok {
				if st, err := os.Stat(p); err != nil || st.IsDir() {
					t.Errorf("service %s runs with %s, but %s is not a file", name, w, p)
				}
			}
		}
	}
	for _, dep := range []string{"Dockerfile", "delivery/example.yaml", "delivery/schema.sql"} {
		if _, err := os.Stat(filepath.Join(root, dep)); err != nil {
			t.Error(err)
		}
	}
}

// proxyConfig loads the config a proxy service runs with.
func proxyConfig(t *testing.T, c composeFile, name string) (*config.File, string) {
	t.Helper()
	s := c.Services[name]
	path := flagValue(s.Command, "-config")
	host, ok := hostPath(s, mounts(t, s), path)
	if !ok {
		t.Fatalf("service %s: -config %q is not mounted", name, path)
	}
	f, err := config.Load(host)
	if err != nil {
		t.Fatal(err)
	}
	return f, host
}

func TestProxiesAndShards(t *testing.T) {
	c := loadCompose(t)
	f, host := proxyConfig(t, c, "proxy1")
	if _, host2 := proxyConfig(t, c, "proxy2"); host2 != host {
		t.Errorf("proxy1 runs %s, proxy2 %s", host, host2)
	}
	listen, admin := port(t, f.Proxy.Listen), port(t, f.Proxy.AdminListen)
	if admin != "9930" {
		t.Errorf("admin port %s, want 9930", admin)
	}
	for _, p := range []string{"proxy1", "proxy2"} {
		if e := c.Services[p].Expose; !slices.Contains(e, listen) || !slices.Contains(e, admin) {
			t.Errorf("%s exposes %v, want %s and %s", p, e, listen, admin)
		}
	}
	var pgs []string
	for name, s := range c.Services {
		if strings.HasPrefix(s.Image, "postgres:") && !strings.HasSuffix(name, "-replica") {
			pgs = append(pgs, name)
			found := false
			for _, m := range mounts(t, s) {
				found = found || (filepath.Base(m.host) == "schema.sql" && strings.HasPrefix(m.container, "/docker-entrypoint-initdb.d/"))
			}
			if !found {
				t.Errorf("%s does not load delivery/schema.sql at init", name)
			}
		}
	}
	sort.Strings(pgs)
	var hosts []string
	for _, sh := range f.Topology.Shards {
		u, err := url.Parse(sh.DSN)
		if err != nil {
			t.Fatalf("shard %s: %v", sh.Name, err)
		}
		hosts = append(hosts, u.Hostname())
		pg, ok := c.Services[u.Hostname()]
		if !ok {
			t.Errorf("shard %s points at %s, which is not a service", sh.Name, u.Host)
			continue
		}
		pw, _ := u.User.Password()
		if u.Port() != "5432" || u.User.Username() != pg.Environment["POSTGRES_USER"] || pw != pg.Environment["POSTGRES_PASSWORD"] ||
			strings.TrimPrefix(u.Path, "/") != pg.Environment["POSTGRES_DB"] {
			t.Errorf("shard %s DSN %s does not match service %s (port 5432, %v)", sh.Name, sh.DSN, u.Hostname(), pg.Environment)
		}
	}
	sort.Strings(hosts)
	if len(pgs) != 3 || !slices.Equal(hosts, pgs) {
		t.Errorf("shards point at %v, postgres services are %v; want the same 3", hosts, pgs)
	}
}

// TestReplicas: every shard has one replica, a service that streams from
// the shard's primary service (pg_basebackup -R from it), and the
// primaries accept replication connections.
func TestReplicas(t *testing.T) {
	c := loadCompose(t)
	f, _ := proxyConfig(t, c, "proxy1")
	if f.Proxy.Replicas.ReadFrom != "replicas" {
		t.Errorf("replicas.read_from %q, want replicas", f.Proxy.Replicas.ReadFrom)
	}
	for _, sh := range f.Topology.Shards {
		pu, err := url.Parse(sh.DSN)
		if err != nil {
			t.Fatal(err)
		}
		if len(sh.Replicas) != 1 {
			t.Errorf("shard %s has %d replicas, want 1", sh.Name, len(sh.Replicas))
			continue
		}
		ru, err := url.Parse(sh.Replicas[0].DSN)
		if err != nil {
			t.Fatal(err)
		}
		r, ok := c.Services[ru.Hostname()]
		if !ok || !strings.HasPrefix(r.Image, "postgres:") {
			t.Errorf("shard %s's replica %s is not a postgres service", sh.Name, ru.Hostname())
			continue
		}
		if r.Environment["PRIMARY"] != pu.Hostname() || !strings.Contains(strings.Join(r.Command, " "), "pg_basebackup -h \"$$PRIMARY\"") ||
			!strings.Contains(strings.Join(r.Command, " "), " -R ") {
			t.Errorf("replica %s does not stream from %s: %v %v", ru.Hostname(), pu.Hostname(), r.Environment, r.Command)
		}
		found := false
		for _, m := range mounts(t, c.Services[pu.Hostname()]) {
			found = found || filepath.Base(m.host) == "replication.sh"
		}
		if !found {
			t.Errorf("primary %s does not allow replication connections (deploy/replication.sh)", pu.Hostname())
		}
	}
}

func TestHAProxy(t *testing.T) {
	c := loadCompose(t)
	f, _ := proxyConfig(t, c, "proxy1")
	listen, admin := port(t, f.Proxy.Listen), port(t, f.Proxy.AdminListen)
	s := c.Services["haproxy"]
	p, ok := hostPath(s, mounts(t, s), "/usr/local/etc/haproxy/haproxy.cfg")
	if !ok {
		t.Fatal("haproxy.cfg is not mounted where the image reads it")
	}
	file, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	sections := map[string][]string{} // "backend shardproxy" -> lines
	cur := ""
	sc := bufio.NewScanner(file)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if !strings.HasPrefix(sc.Text(), " ") && !strings.HasPrefix(sc.Text(), "\t") {
			cur = line
			continue
		}
		sections[cur] = append(sections[cur], line)
	}
	front := sections["frontend postgres"]
	if !slices.Contains(front, "bind *:"+listen) || !slices.Contains(front, "default_backend shardproxy") {
		t.Errorf("frontend: %q", front)
	}
	if !slices.Contains(s.Ports, listen+":"+listen) {
		t.Errorf("haproxy publishes %v, want %s", s.Ports, listen)
	}
	back := sections["backend shardproxy"]
	for _, want := range []string{"mode tcp", "option httpchk GET /ready", "http-check expect status 200"} {
		if !slices.Contains(back, want) {
			t.Errorf("backend lacks %q: %q", want, back)
		}
	}
	server := regexp.MustCompile(`^server (\S+) (\S+):(\d+) check port (\d+)$`)
	var servers []string
	for _, l := range back {
		if !strings.HasPrefix(l, "server ") {
			continue
		}
		m := server.FindStringSubmatch(l)
		if m == nil {
			t.Errorf("server line %q: want `server NAME HOST:PORT check port ADMIN`", l)
			continue
		}
		servers = append(servers, m[2])
		if _, ok := c.Services[m[2]]; !ok || m[3] != listen || m[4] != admin {
			t.Errorf("server line %q: want a proxy service on port %s checked on %s", l, listen, admin)
		}
	}
	if !slices.Equal(servers, []string{"proxy1", "proxy2"}) {
		t.Errorf("backend servers %v, want proxy1 and proxy2", servers)
	}
}

func TestPrometheusAndGrafana(t *testing.T) {
	c := loadCompose(t)
	f, _ := proxyConfig(t, c, "proxy1")
	admin := port(t, f.Proxy.AdminListen)
	s := c.Services["prometheus"]
	p, ok := hostPath(s, mounts(t, s), "/etc/prometheus/prometheus.yml")
	if !ok {
		t.Fatal("prometheus.yml is not mounted where the image reads it")
	}
	var prom struct {
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			MetricsPath   string `yaml:"metrics_path"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	readYAML(t, p, &prom)
	var targets []string
	for _, sc := range prom.ScrapeConfigs {
		if sc.MetricsPath != "/metrics" {
			t.Errorf("job %s scrapes %q", sc.JobName, sc.MetricsPath)
		}
		for _, st := range sc.StaticConfigs {
			targets = append(targets, st.Targets...)
		}
	}
	if want := []string{"proxy1:" + admin, "proxy2:" + admin}; !slices.Equal(targets, want) {
		t.Errorf("prometheus targets %v, want %v", targets, want)
	}

	g := c.Services["grafana"]
	gm := mounts(t, g)
	dsPath, ok := hostPath(g, gm, "/etc/grafana/provisioning/datasources/prometheus.yaml")
	if !ok {
		t.Fatal("grafana provisioning is not mounted")
	}
	var ds struct {
		Datasources []struct {
			Type, URL string
		} `yaml:"datasources"`
	}
	readYAML(t, dsPath, &ds)
	if len(ds.Datasources) != 1 || ds.Datasources[0].URL != "http://prometheus:9090" || !slices.Contains(c.Services["prometheus"].Ports, "9090:9090") {
		t.Errorf("datasource %+v does not point at the prometheus service", ds.Datasources)
	}
	provPath, _ := hostPath(g, gm, "/etc/grafana/provisioning/dashboards/shardproxy.yaml")
	var prov struct {
		Providers []struct {
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	readYAML(t, provPath, &prov)
	if len(prov.Providers) != 1 {
		t.Fatalf("dashboard providers: %+v", prov)
	}
	dir, ok := hostPath(g, gm, prov.Providers[0].Options.Path)
	if !ok {
		t.Fatalf("dashboards path %s is not mounted", prov.Providers[0].Options.Path)
	}
	dashboards, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	if len(dashboards) == 0 {
		t.Fatalf("no dashboards in %s", dir)
	}
	for _, d := range dashboards {
		b, err := os.ReadFile(d)
		if err != nil {
			t.Fatal(err)
		}
		var dash struct {
			Panels []struct {
				Targets []struct{ Expr string } `json:"targets"`
			} `json:"panels"`
		}
		if err := json.Unmarshal(b, &dash); err != nil {
			t.Fatalf("%s: %v", d, err)
		}
		for _, p := range dash.Panels {
			for _, tg := range p.Targets {
				if !strings.Contains(tg.Expr, "shardproxy") {
					t.Errorf("%s: query %q is not about shardproxy", d, tg.Expr)
				}
			}
		}
	}
}

func TestMongoCluster(t *testing.T) {
	c := loadCompose(t)
	// replica set name -> "host:port" of its member, from the mongod services.
	sets := map[string]string{}
	for name, s := range c.Services {
		if len(s.Command) > 0 && s.Command[0] == "mongod" {
			sets[flagValue(s.Command, "--replSet")] = name + ":" + flagValue(s.Command, "--port")
		}
	}
	mongos := c.Services["mongos"]
	cfgdb := flagValue(mongos.Command, "--configdb")
	if rs, member, _ := strings.Cut(cfgdb, "/"); sets[rs] != member || !slices.Contains(c.Services[strings.Split(member, ":")[0]].Command, "--configsvr") {
		t.Errorf("mongos --configdb %s does not name the config server service", cfgdb)
	}
	script := func(service, file string) string {
		s := c.Services[service]
		p, ok := hostPath(s, mounts(t, s), file)
		if !ok || !slices.Contains(s.Command, file) {
			t.Fatalf("%s does not run %s", service, file)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	init := script("mongo-init", "/scripts/init-replicasets.js")
	for rs, member := range sets {
		if !strings.Contains(init, `_id: "`+rs+`"`) || !strings.Contains(init, `host: "`+member+`"`) {
			t.Errorf("init-replicasets.js does not initiate %s with %s", rs, member)
		}
	}
	added := map[string]bool{}
	for _, m := range regexp.MustCompile(`"(\w+)/([\w-]+:\d+)"`).FindAllStringSubmatch(script("mongo-addshards", "/scripts/add-shards.js"), -1) {
		if sets[m[1]] != m[2] {
			t.Errorf("add-shards.js adds %s/%s, which is no mongod service", m[1], m[2])
		}
		added[m[1]] = true
	}
	if len(added) != 2 {
		t.Errorf("add-shards.js adds %v, want the 2 shard replica sets", added)
	}

	pm := c.Services["partman-mongo"]
	if !slices.Equal(pm.Command[:3], []string{"partman", "mongo", "apply"}) {
		t.Errorf("partman-mongo runs %v", pm.Command)
	}
	f, _ := proxyConfig(t, c, "partman-mongo")
	u, err := url.Parse(f.Mongo.URI)
	if err != nil {
		t.Fatal(err)
	}
	if u.Hostname() != "mongos" || u.Port() != flagValue(mongos.Command, "--port") {
		t.Errorf("mongo.uri %s is not the mongos service", f.Mongo.URI)
	}
	l, err := f.Mongo.Resolve(&f.Topology)
	if err != nil {
		t.Fatal(err)
	}
	for _, col := range l.Collections {
		for zone, shards := range col.ZoneShards {
			for _, sh := range shards {
				if !added[sh] {
					t.Errorf("zone %s names MongoDB shard %s, which add-shards.js does not add", zone, sh)
				}
			}
		}
	}
}

func TestPartmanLoop(t *testing.T) {
	c := loadCompose(t)
	s := c.Services["partman"]
	if !strings.Contains(strings.Join(s.Command, " "), "partman run -config /etc/shardproxy/shardproxy.yaml") {
		t.Errorf("partman runs %v", s.Command)
	}
	if _, ok := hostPath(s, mounts(t, s), "/etc/shardproxy/shardproxy.yaml"); !ok {
		t.Error("partman's config is not mounted")
	}
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// TestCoordinator: the proxies' coordinator is a database on a Postgres
// service that an init script of that service creates.
func TestCoordinator(t *testing.T) {
	c := loadCompose(t)
	f, _ := proxyConfig(t, c, "proxy1")
	if !f.Proxy.Coordinator.Enabled() {
		t.Fatal("the compose proxies run without a coordinator")
	}
	u, err := url.Parse(f.Proxy.Coordinator.DSN)
	if err != nil {
		t.Fatal(err)
	}
	pg, ok := c.Services[u.Hostname()]
	if !ok || !strings.HasPrefix(pg.Image, "postgres:") {
		t.Fatalf("coordinator host %s is not a Postgres service", u.Hostname())
	}
	db := strings.TrimPrefix(u.Path, "/")
	created := false
	for _, m := range mounts(t, pg) {
		if !strings.HasPrefix(m.container, "/docker-entrypoint-initdb.d/") {
			continue
		}
		b, err := os.ReadFile(m.host)
		if err != nil {
			t.Fatal(err)
		}
		created = created || strings.Contains(string(b), "CREATE DATABASE "+db+";")
	}
	if !created {
		t.Errorf("no init script of %s creates database %s", u.Hostname(), db)
	}
	pw, _ := u.User.Password()
	if u.User.Username() != pg.Environment["POSTGRES_USER"] || pw != pg.Environment["POSTGRES_PASSWORD"] {
		t.Errorf("coordinator DSN %s does not match service %s's user", f.Proxy.Coordinator.DSN, u.Hostname())
	}
}

// TestLeastPrivilege: the compose proxies reach the shards as each user's
// own role (backend_roles: per_user), and every Postgres creates that
// role, unprivileged, at init (delivery/app_role.sql), after the schema.
func TestLeastPrivilege(t *testing.T) {
	c := loadCompose(t)
	f, _ := proxyConfig(t, c, "proxy1")
	if f.Proxy.BackendRoles != "per_user" {
		t.Errorf("backend_roles %q, want per_user", f.Proxy.BackendRoles)
	}
	for name, s := range c.Services {
		if !strings.HasPrefix(s.Image, "postgres:") || s.Environment["PRIMARY"] != "" {
			continue // replicas get the role by streaming replication
		}
		var schema, role string
		for _, m := range mounts(t, s) {
			switch filepath.Base(m.host) {
			case "schema.sql":
				schema = m.container
			case "app_role.sql":
				role = m.container
			}
		}
		if role == "" || !strings.HasPrefix(role, "/docker-entrypoint-initdb.d/") || filepath.Base(role) < filepath.Base(schema) {
			t.Errorf("%s: app_role.sql mounted at %q, want an initdb script after the schema's (%q)", name, role, schema)
		}
	}
	for _, u := range f.Proxy.Users {
		if u.BackendUser != "" {
			t.Errorf("user %s reaches the shards as %s, want its own role", u.Name, u.BackendUser)
		}
	}
}
