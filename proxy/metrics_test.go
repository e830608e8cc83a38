package proxy

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func gather(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	s := testSession(t, nil)
	reg := prometheus.NewRegistry()
	if err := s.srv.RegisterMetrics(reg); err != nil {
		t.Fatal(err)
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		out[f.GetName()] = f
	}
	return out
}

func TestMetricNamesAndLabels(t *testing.T) {
	fams := gather(t)
	for name, f := range fams {
		if !strings.HasPrefix(name, "shardproxy_") {
			t.Errorf("%s: no shardproxy_ prefix", name)
		}
		if f.GetType() == dto.MetricType_COUNTER && !strings.HasSuffix(name, "_total") {
			t.Errorf("counter %s does not end in _total", name)
		}
		if f.GetType() != dto.MetricType_COUNTER && strings.HasSuffix(name, "_total") {
			t.Errorf("%s ends in _total but is a %s", name, f.GetType())
		}
		for _, m := range f.Metric {
			for _, l := range m.Label {
				switch l.GetName() {
				case "shard", "server", "route", "outcome", "state", "limit", "reason", // server: a configured replica or primary, bounded by the config
					"user": // a backend role: configured users, at most maxRoleSeries of them (roles.go)
				default:
					t.Errorf("%s: label %s is not one of the bounded labels", name, l.GetName())
				}
			}
		}
	}
}

// TestDashboardUsesExistingMetrics keeps the Grafana dashboard in step with
// the metric names.
func TestDashboardUsesExistingMetrics(t *testing.T) {
	b, err := os.ReadFile("../deploy/grafana/dashboards/shardproxy.json")
	if err != nil {
		t.Fatal(err)
	}
	fams := gather(t)
	used := regexp.MustCompile(`shardproxy_[a-z_]+`).FindAllString(string(b), -1)
	if len(used) < 10 {
		t.Fatalf("dashboard uses only %d metrics", len(used))
	}
	for _, name := range used {
		base := name
		for _, suf := range []string{"_bucket", "_sum", "_count"} {
			if fams[base] == nil {
				base = strings.TrimSuffix(base, suf)
			}
		}
		if fams[base] == nil {
			t.Errorf("dashboard uses %s, which the proxy does not export", name)
		}
	}
}
