package partman

import (
	"strings"
	"testing"
	"time"
)

func ts(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

func TestPeriods(t *testing.T) {
	cases := []struct {
		name      string
		iv        Interval
		at        string
		start     string
		next      string
		partition string
	}{
		{"mid month", Month, "2025-03-15T12:00:00Z", "2025-03-01T00:00:00Z", "2025-04-01T00:00:00Z", "orders_p2025_03"},
		{"first instant of month", Month, "2025-03-01T00:00:00Z", "2025-03-01T00:00:00Z", "2025-04-01T00:00:00Z", "orders_p2025_03"},
		{"last instant of month", Month, "2025-03-31T23:59:59.999Z", "2025-03-01T00:00:00Z", "2025-04-01T00:00:00Z", "orders_p2025_03"},
		{"leap february", Month, "2024-02-29T23:00:00Z", "2024-02-01T00:00:00Z", "2024-03-01T00:00:00Z", "orders_p2024_02"},
		{"december to january", Month, "2025-12-31T23:59:59Z", "2025-12-01T00:00:00Z", "2026-01-01T00:00:00Z", "orders_p2025_12"},
		{"offset moves to next year in UTC", Month, "2025-12-31T23:30:00-01:00", "2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z", "orders_p2026_01"},
		{"offset keeps previous month in UTC", Month, "2025-03-01T00:30:00+01:00", "2025-02-01T00:00:00Z", "2025-03-01T00:00:00Z", "orders_p2025_02"},
		{"leap day", Day, "2024-02-29T10:00:00Z", "2024-02-29T00:00:00Z", "2024-03-01T00:00:00Z", "orders_p2024_02_29"},
		{"day at year end", Day, "2024-12-31T23:00:00Z", "2024-12-31T00:00:00Z", "2025-01-01T00:00:00Z", "orders_p2024_12_31"},
		{"week across year end", Week, "2025-01-01T08:00:00Z", "2024-12-30T00:00:00Z", "2025-01-06T00:00:00Z", "orders_p2025w01"},
		{"ISO week 53", Week, "2021-01-03T08:00:00Z", "2020-12-28T00:00:00Z", "2021-01-04T00:00:00Z", "orders_p2020w53"},
		{"week on monday", Week, "2025-03-03T00:00:00Z", "2025-03-03T00:00:00Z", "2025-03-10T00:00:00Z", "orders_p2025w10"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			start := c.iv.Trunc(ts(c.at))
			if !start.Equal(ts(c.start)) || start.Location() != time.UTC {
				t.Fatalf("Trunc = %v, want %s UTC", start, c.start)
			}
			if next := c.iv.Next(start); !next.Equal(ts(c.next)) {
				t.Fatalf("Next = %v, want %s", next, c.next)
			}
			if n := PartitionName("orders", c.iv, start); n != c.partition {
				t.Fatalf("name = %s, want %s", n, c.partition)
			}
		})
	}
}

func TestMonthsOfALeapYear(t *testing.T) {
	ps := Month.Periods(ts("2024-01-01T00:00:00Z"), ts("2025-01-01T00:00:00Z"))
	if len(ps) != 12 {
		t.Fatalf("%d months in 2024", len(ps))
	}
	days := 0
	for _, p := range ps {
		days += int(Month.Next(p).Sub(p).Hours() / 24)
	}
	if days != 366 {
		t.Fatalf("2024 months cover %d days, want 366", days)
	}
}

func TestNames(t *testing.T) {
	long := strings.Repeat("x", 70)
	n := PartitionName(long, Month, ts("2025-03-01T00:00:00Z"))
	if len(n) != 63 || !strings.HasSuffix(n, "_p2025_03") {
		t.Fatalf("long name %q (%d bytes)", n, len(n))
	}
	if d := DefaultName("orders"); d != "orders_default" {
		t.Fatal(d)
	}
}

func TestLiterals(t *testing.T) {
	at := ts("2025-03-01T00:00:00Z")
	cases := []struct {
		k    ColumnKind
		want string
	}{
		{TimestampTZ, "'2025-03-01 00:00:00+00'"},
		{Timestamp, "'2025-03-01 00:00:00'"},
		{Date, "'2025-03-01'"},
	}
	for _, c := range cases {
		if got := c.k.literal(at); got != c.want {
			t.Errorf("kind %d: %s, want %s", c.k, got, c.want)
		}
	}
	// A time in another zone is written as its UTC instant.
	madrid, _ := time.LoadLocation("Europe/Madrid")
	if got := TimestampTZ.literal(at.In(madrid)); got != "'2025-03-01 00:00:00+00'" {
		t.Errorf("Madrid time written as %s", got)
	}
}
