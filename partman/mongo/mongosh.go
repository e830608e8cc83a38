package mongo

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

var bareName = regexp.MustCompile(`^[A-Za-z_$][A-Za-z0-9_$]*$`)

// shell renders a command value in mongosh syntax, so that `partman mongo
// plan` prints lines an operator can paste: { key: { date: 1 } },
// ISODate("2025-01-01T00:00:00Z"), MinKey, MaxKey.
func shell(v any) string {
	var b strings.Builder
	writeShell(&b, v)
	return b.String()
}

func writeShell(b *strings.Builder, v any) {
	switch x := v.(type) {
	case bson.D:
		if len(x) == 0 {
			b.WriteString("{}")
			return
		}
		b.WriteString("{ ")
		for i, e := range x {
			if i > 0 {
				b.WriteString(", ")
			}
			if bareName.MatchString(e.Key) {
				b.WriteString(e.Key)
			} else {
				b.WriteString(strconv.Quote(e.Key))
			}
			b.WriteString(": ")
			writeShell(b, e.Value)
		}
		b.WriteString(" }")
	case Keys:
		writeShell(b, bson.D(x))
	case bson.A:
		b.WriteString("[ ")
		for i, e := range x {
			if i > 0 {
				b.WriteString(", ")
			}
			writeShell(b, e)
		}
		b.WriteString(" ]")
	case string:
		b.WriteString(strconv.Quote(x))
	case bool:
		b.WriteString(strconv.FormatBool(x))
	case int32:
		b.WriteString(strconv.FormatInt(int64(x), 10))
	case int64:
		fmt.Fprintf(b, "NumberLong(%d)", x)
	case float64:
		b.WriteString(strconv.FormatFloat(x, 'g', -1, 64))
	case bson.DateTime:
		fmt.Fprintf(b, "ISODate(%q)", x.Time().UTC().Format(time.RFC3339Nano))
	case bson.MinKey:
		b.WriteString("MinKey")
	case bson.MaxKey:
		b.WriteString("MaxKey")
	case nil:
		b.WriteString("null")
	default:
		fmt.Fprintf(b, "%v", x)
	}
}
