package salesforce

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/oncesync/oncesync/shared/source"
)

// checker turns raw rows into Records, or reasons they are bad source data.
type checker struct {
	q    source.Query // normalized
	prev *source.Key  // the last valid row's key
}

func newChecker(q source.Query) *checker { return &checker{q: q} }

// row checks one raw row. It returns the Record, or a non-empty reason.
func (c *checker) row(raw json.RawMessage) (source.Record, string) {
	// One decoding pass: encoding/json validates the whole input before each Unmarshal, so
	// decoding fields one by one would read the row again for each.
	var obj map[string]any
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		return source.Record{}, "row is not a JSON object"
	}
	id, isString := obj["Id"].(string)
	switch v, ok := obj["Id"]; {
	case !ok:
		return source.Record{}, "missing Id"
	case !isString:
		return source.Record{}, fmt.Sprintf("Id %s is not a string", jsonText(v))
	case id == "":
		return source.Record{}, "empty Id"
	}
	stamp, isString := obj["SystemModstamp"].(string)
	switch v, ok := obj["SystemModstamp"]; {
	case !ok:
		return source.Record{}, "missing SystemModstamp"
	case v == nil:
		return source.Record{}, "SystemModstamp is null"
	case !isString:
		return source.Record{}, fmt.Sprintf("SystemModstamp %s is not a string", jsonText(v))
	}
	t, err := ParseTime(stamp)
	if err != nil {
		return source.Record{}, fmt.Sprintf("unparsable SystemModstamp %q", stamp)
	}
	k := source.Key{Modstamp: t, ID: id}
	switch {
	case !t.Equal(t.Truncate(time.Millisecond)):
		return source.Record{}, fmt.Sprintf("SystemModstamp %q is finer than a millisecond", stamp)
	case t.Before(c.q.From) || !t.Before(c.q.To):
		return source.Record{}, fmt.Sprintf("SystemModstamp %s outside the window [%s, %s)",
			t.Format(soqlTime), c.q.From.Format(soqlTime), c.q.To.Format(soqlTime))
	case c.q.After != nil && k.Compare(*c.q.After) <= 0:
		return source.Record{}, fmt.Sprintf("key %v not after the resume key %v", k, *c.q.After)
	case c.prev != nil && k.Compare(*c.prev) < 0:
		return source.Record{}, fmt.Sprintf("out of order: key %v sorts before the previous row's %v", k, *c.prev)
	case c.prev != nil && k.Compare(*c.prev) == 0:
		return source.Record{}, fmt.Sprintf("repeats the previous row's key %v", k)
	}
	rec := source.Record{ID: id, Modstamp: t, Fields: make(map[string]any, len(c.q.Fields))}
	if c.q.Deleted {
		// Absent counts as live: an object without the field has no recycle bin.
		switch v := obj["IsDeleted"].(type) {
		case bool:
			rec.Deleted = v
		case nil:
		default:
			return source.Record{}, fmt.Sprintf("IsDeleted %s is not a boolean", jsonText(v))
		}
	}
	for _, f := range c.q.Fields {
		v, ok := obj[f]
		if !ok {
			// SOQL names are case-insensitive; Salesforce answers with the field's own spelling.
			for name, fv := range obj {
				if strings.EqualFold(name, f) {
					v, ok = fv, true
					break
				}
			}
		}
		if ok {
			rec.Fields[f] = v
		}
	}
	c.prev = &k
	return rec, ""
}

// jsonText writes a decoded JSON value back as JSON, for messages.
func jsonText(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// ParseTime parses a Salesforce datetime: its own "2006-01-02T15:04:05.000+0000" or RFC 3339.
// The result is in UTC.
func ParseTime(s string) (time.Time, error) {
	// Go accepts a fractional second after the seconds even when the layout has none.
	t, err := time.Parse("2006-01-02T15:04:05Z0700", s)
	if err != nil {
		var err2 error
		if t, err2 = time.Parse(time.RFC3339, s); err2 != nil {
			return time.Time{}, fmt.Errorf("salesforce: %q is not a Salesforce datetime", s)
		}
	}
	return t.UTC(), nil
}
