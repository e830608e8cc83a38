package partman

import (
	"fmt"
	"time"
)

// Trunc returns the start of the period holding t, in UTC.
func (iv Interval) Trunc(t time.Time) time.Time {
	t = t.UTC()
	y, m, d := t.Date()
	switch iv {
	case Day:
		return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
	case Week:
		back := (int(t.Weekday()) + 6) % 7 // days since Monday
		return time.Date(y, m, d-back, 0, 0, 0, 0, time.UTC)
	default:
		return time.Date(y, m, 1, 0, 0, 0, 0, time.UTC)
	}
}

// Next returns the start of the period after the one starting at start.
// start must be a period start (see Trunc).
func (iv Interval) Next(start time.Time) time.Time {
	switch iv {
	case Day:
		return start.AddDate(0, 0, 1)
	case Week:
		return start.AddDate(0, 0, 7)
	default:
		// start is the 1st of a month, so AddDate never normalises.
		return start.AddDate(0, 1, 0)
	}
}

// suffix names the period starting at start: p2025_03 (month),
// p2025w09 (ISO week), p2025_03_15 (day).
func (iv Interval) suffix(start time.Time) string {
	switch iv {
	case Day:
		return start.Format("p2006_01_02")
	case Week:
		y, w := start.ISOWeek()
		return fmt.Sprintf("p%04dw%02d", y, w)
	default:
		return start.Format("p2006_01")
	}
}

// maxIdent is Postgres's NAMEDATALEN-1.
const maxIdent = 63

// PartitionName is the child's name for the period starting at start:
// the parent's name, cut so that the whole fits in 63 bytes, then _suffix.
func PartitionName(relation string, iv Interval, start time.Time) string {
	return joinName(relation, iv.suffix(start))
}

// DefaultName is the name partman gives a DEFAULT partition it creates.
func DefaultName(relation string) string { return joinName(relation, "default") }

func joinName(relation, suffix string) string {
	base := relation
	if room := maxIdent - len(suffix) - 1; len(base) > room {
		base = base[:room]
	}
	return base + "_" + suffix
}

// ColumnKind is the type of a partition key, which decides how bounds are
// written.
type ColumnKind int

// Column kinds partman supports.
const (
	TimestampTZ ColumnKind = iota
	Timestamp
	Date
)

// literal formats t (UTC) as a SQL string literal for a bound of kind k.
// The text only ever holds digits, dashes, colons, a space and +00, so the
// quotes need no escaping. timestamptz bounds carry +00 so that the session
// TimeZone cannot move them.
func (k ColumnKind) literal(t time.Time) string {
	t = t.UTC()
	switch k {
	case Date:
		return "'" + t.Format("2006-01-02") + "'"
	case Timestamp:
		return "'" + t.Format("2006-01-02 15:04:05") + "'"
	default:
		return "'" + t.Format("2006-01-02 15:04:05") + "+00'"
	}
}

// Periods returns the starts of the periods from first (a period start) up
// to, not including, end.
func (iv Interval) Periods(first, end time.Time) []time.Time {
	var out []time.Time
	for p := first; p.Before(end); p = iv.Next(p) {
		out = append(out, p)
	}
	return out
}
