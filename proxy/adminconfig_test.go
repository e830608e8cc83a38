package proxy

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

// SHOW CONFIG's rows cover every section of the running config, show
// durations as durations, hide secrets, and say which keys a reload keeps.
func TestFlattenConfig(t *testing.T) {
	c := Config{
		Listen:       "127.0.0.1:16432",
		Users:        []User{{Name: "app", Password: "apppw", Auth: "scram-sha-256"}},
		BackendRoles: "per_user",
		AuthQuery:    AuthQueryConfig{Query: "SELECT 1", User: "lookup", Password: "lookuppw"},
		TLS:          TLSConfig{Mode: "require", Cert: "/c.pem", Key: "/k.pem"},
		Replicas:     ReplicasConfig{ReadFrom: "replicas", FailoverBuffer: 5 * time.Second},
	}.WithDefaults()
	rows := flattenConfig("", reflect.ValueOf(c), nil)
	got := map[string][]string{}
	for _, r := range rows {
		got[r[0]] = r
		if strings.Contains(r[1], "pw") {
			t.Errorf("a secret is shown: %v", r)
		}
	}
	for key, want := range map[string]string{
		"listen":                   "127.0.0.1:16432",
		"tls.mode":                 "require",
		"replicas.read_from":       "replicas",
		"replicas.failover_buffer": "5s",
		"backend_roles":            "per_user",
		"auth_query.user":          "lookup",
		"auth_query.password":      "********",
		"users[0].password":        "********",
		"two_phase.mode":           c.TwoPhase.Mode,
		"pool.size":                itoa(c.Pool.Size),
	} {
		if r, ok := got[key]; !ok || r[1] != want {
			t.Errorf("%s = %v, want %q", key, r, want)
		}
	}
	for key, want := range map[string]string{"listen": "no", "pool.connect_timeout": "no", "pool.size": "yes", "tls.mode": "yes"} {
		if got[key][2] != want {
			t.Errorf("%s reloadable = %q, want %q", key, got[key][2], want)
		}
	}
	for _, section := range []string{"limits", "cache.", "health.", "two_phase.", "replicas.", "tls."} {
		found := false
		for k := range got {
			found = found || strings.HasPrefix(k, section) || section == "limits" && strings.HasPrefix(k, "max_")
		}
		if !found {
			t.Errorf("no row for section %s", section)
		}
	}
}
