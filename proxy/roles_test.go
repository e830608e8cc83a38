package proxy

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/xdg-go/scram"
)

func TestRoleOf(t *testing.T) {
	for _, tc := range []struct {
		u    User
		mode string
		want *backendRole
	}{
		{User{Name: "app", Password: "pw"}, BackendRolesShared, nil},
		{User{Name: "app", Password: "pw"}, BackendRolesPerUser, &backendRole{user: "app", password: "pw"}},
		{User{Name: "app", Password: "pw", BackendPassword: "other"}, BackendRolesPerUser, &backendRole{user: "app", password: "other"}},
		{User{Name: "app", Password: "pw", BackendUser: "ro", BackendPassword: "x"}, BackendRolesShared, &backendRole{user: "ro", password: "x"}},
		{User{Name: "app", Password: "pw", BackendUser: "ro", BackendPassword: "x"}, BackendRolesPerUser, &backendRole{user: "ro", password: "x"}},
		{User{Name: "t", Auth: "trust"}, BackendRolesPerUser, &backendRole{user: "t", password: ""}},
	} {
		got := roleOf(tc.u, tc.mode)
		if (got == nil) != (tc.want == nil) || got != nil && *got != *tc.want {
			t.Errorf("roleOf(%+v, %s) = %v, want %v", tc.u, tc.mode, got, tc.want)
		}
	}
}

func TestValidateSecurityOptions(t *testing.T) {
	base := func() Config {
		return Config{Users: []User{{Name: "a", Password: "a"}, {Name: "b", Password: "b"}}, Admins: []string{"a"}}.WithDefaults()
	}
	if err := base().Validate(); err != nil {
		t.Fatalf("base: %v", err)
	}
	if c := base(); c.BackendRoles != BackendRolesPerUser {
		t.Fatalf("default backend_roles %q, want per_user (each user its own role, like PgBouncer)", c.BackendRoles)
	}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string // "" valid
	}{
		{"per_user", func(c *Config) { c.BackendRoles = BackendRolesPerUser }, ""},
		{"bad mode", func(c *Config) { c.BackendRoles = "superuser" }, `backend_roles: "superuser"`},
		{"password alone, shared", func(c *Config) { c.BackendRoles = BackendRolesShared; c.Users[1].BackendPassword = "x" }, "backend_password without backend_user"},
		{"password alone, per_user", func(c *Config) { c.BackendRoles = BackendRolesPerUser; c.Users[1].BackendPassword = "x" }, ""},
		{"perms", func(c *Config) { c.AdminPermissions = map[string][]string{"a": {"show", "recover"}} }, ""},
		{"perms of a non-admin", func(c *Config) { c.AdminPermissions = map[string][]string{"b": {"show"}} }, "b is not in admins"},
		{"unknown perm", func(c *Config) { c.AdminPermissions = map[string][]string{"a": {"drop"}} }, `"drop" is not one of`},
		{"empty perms", func(c *Config) { c.AdminPermissions = map[string][]string{"a": {}} }, "list at least one"},
		{"negative tokens", func(c *Config) { c.MaxQueryTokens = -1 }, "max_query_tokens"},
	} {
		c := base()
		tc.edit(&c)
		err := c.Validate()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}

// TestMaxQueryTokens: a statement over max_query_tokens gets 54001 before
// it is parsed, on either protocol, and the session goes on; each refusal
// is counted.
func TestMaxQueryTokens(t *testing.T) {
	srv, addr := startTestServer(t, Config{Users: []User{{Name: "a", Auth: "trust"}}, Limits: Limits{MaxQueryTokens: 50}})
	c, err := dial(t, addr, "user=a&sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	big := "SELECT 1 WHERE 1 IN (" + strings.Repeat("2, ", 30) + "1)"
	if _, err := c.Exec(ctx, big).ReadAll(); sqlstate(err) != "54001" || !strings.Contains(err.Error(), "max_query_tokens") {
		t.Fatalf("simple: %v, want 54001", err)
	}
	if err := c.Exec(ctx, ";").Close(); err != nil {
		t.Fatalf("after the refusal: %v", err)
	}
	if rr := c.ExecParams(ctx, big, nil, nil, nil, nil).Read(); sqlstate(rr.Err) != "54001" {
		t.Fatalf("extended: %v, want 54001", rr.Err)
	}
	if err := c.Exec(ctx, ";").Close(); err != nil {
		t.Fatalf("after the refused Parse: %v", err)
	}
	if c.TxStatus() != 'I' {
		t.Fatalf("status %c", c.TxStatus())
	}
	if n := counterValue(srv.limits.hits[limitQueryTokens]); n != 2 {
		t.Errorf("hits %v, want 2", n)
	}
}

// TestPassThroughRecoversClientKey: the ClientKey recovered from a real
// client's SCRAM exchange (xdg-go/scram's client against the proxy's
// verifier) is the one derived from the password, and a shard-side SCRAM
// conversation with the same verifier accepts the pass-through proof.
func TestPassThroughRecoversClientKey(t *testing.T) {
	client, err := scram.SHA256.NewClient("", "s3cret", "")
	if err != nil {
		t.Fatal(err)
	}
	kf := scram.KeyFactors{Salt: "0123456789abcdef", Iters: 4096}
	stored := client.GetStoredCredentials(kf)
	verifier := "SCRAM-SHA-256$4096:" + base64.StdEncoding.EncodeToString([]byte(kf.Salt)) + "$" +
		base64.StdEncoding.EncodeToString(stored.StoredKey) + ":" + base64.StdEncoding.EncodeToString(stored.ServerKey)
	sc, err := parseVerifier(verifier)
	if err != nil || sc.Iters != 4096 || sc.Salt != kf.Salt {
		t.Fatalf("parseVerifier: %+v %v", sc, err)
	}
	c := &credential{name: "u", stored: sc, authQuery: true}
	srv, _ := scram.SHA256.NewServer(func(string) (scram.StoredCredentials, error) { return sc, nil })
	conv, cc := srv.NewConversation(), client.NewConversation()
	first, _ := cc.Step("")
	sfirst, err := conv.Step(first)
	if err != nil {
		t.Fatal(err)
	}
	final, _ := cc.Step(sfirst)
	if _, err := conv.Step(final); err != nil || !conv.Valid() {
		t.Fatalf("client login: %v", err)
	}
	role, err := passThrough(c, first, sfirst, final)
	if err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256([]byte(role.scram.clientKey))
	if string(want[:]) != string(stored.StoredKey) {
		t.Fatal("recovered ClientKey does not hash to StoredKey")
	}
	if _, err := parseVerifier("md5abc"); err == nil {
		t.Fatal("an md5 password parsed as a SCRAM verifier")
	}
}

// TestRolePoolFollowsBase: a backend role's pool fails at once with the
// base's 08006 while the health checker holds the base down (no dial:
// connect_errors stays 0), and dials the base's new server, as the role,
// after a failover retarget.
func TestRolePoolFollowsBase(t *testing.T) {
	s := testSession(t, nil)
	srv := s.srv
	base := srv.pools[0]
	role := backendRole{user: "app", password: "pw"}
	s.role = &role
	p := s.sessionPool(0)
	if p == base || p.base != base || s.sessionPool(0) != p {
		t.Fatal("the session does not lease from one pool of its role")
	}
	if c := p.config(); c.User != "app" || c.Password != "pw" || c.Host != base.config().Host || c.Port != base.config().Port {
		t.Fatalf("role pool dials %s@%s:%d", c.User, c.Host, c.Port)
	}
	base.downErr.Store(&shardError{shard: base.name, err: errors.New("marked down after 3 failed health checks")})
	for i := 0; i < 3; i++ {
		_, err := p.acquire(context.Background())
		if r := errorResponse(err); r.Code != "08006" || !strings.Contains(r.Message, "marked down") {
			t.Fatalf("lease on a down shard: %v (%s)", err, r.Code)
		}
	}
	if n := p.connectErrors.Load(); n != 0 {
		t.Fatalf("the role's pool dialed a down shard %d times", n)
	}
	base.downErr.Store(nil)

	// A failover: the base now dials another server.
	gen := p.gen.Load()
	moved := base.config().Copy()
	moved.Port = 3
	base.retarget(&server{cfg: moved})
	if err := p.follow(context.Background()); err != nil {
		t.Fatal(err)
	}
	if c := p.config(); c.Port != 3 || c.User != "app" || c.Password != "pw" || p.gen.Load() == gen {
		t.Fatalf("after the retarget the role pool dials %s@:%d (gen %d, was %d)", c.User, c.Port, p.gen.Load(), gen)
	}
	if base.config().User != "x" {
		t.Fatalf("the base pool's user changed to %q", base.config().User)
	}
}

// TestPoolFiguresBounded: the pool metrics name each backend role up to
// maxRoleSeries; the pools of roles past it are summed under "_other".
func TestPoolFiguresBounded(t *testing.T) {
	srv := testSession(t, nil).srv
	for i := 0; i < maxRoleSeries+10; i++ {
		for _, base := range srv.pools {
			srv.rolePool(backendRole{user: fmt.Sprintf("r%03d", i)}, base)
		}
	}
	users := map[string]int{}
	for _, f := range srv.poolFigures() {
		users[f.user]++
	}
	if len(users) != maxRoleSeries+2 || users["x"] != 2 || users["_other"] != 2 || users["r000"] != 2 {
		t.Fatalf("%d users in the pool metrics (%v), want %d roles, the DSN's x and _other, one series per shard each",
			len(users), users["_other"], maxRoleSeries)
	}
}
