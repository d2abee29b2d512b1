package salesforce

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/oncesync/oncesync/shared/source"
)

// soqlTime is the SOQL datetime literal layout the client emits (always UTC).
const soqlTime = "2006-01-02T15:04:05.000Z07:00"

// Salesforce's datetime range.
var (
	minTime = time.Date(1700, 1, 1, 0, 0, 0, 0, time.UTC)
	maxTime = time.Date(4001, 1, 1, 0, 0, 0, 0, time.UTC)
)

// SOQL returns the query text Search sends. It does not validate q: an invalid query (see
// ValidateQuery) yields text that must not be sent anywhere.
//
//	SELECT Id, SystemModstamp[, IsDeleted], F1, F2 FROM Obj
//	WHERE SystemModstamp >= <From> AND SystemModstamp < <To>
//	[AND (SystemModstamp > <T> OR (SystemModstamp = <T> AND Id > '<ID>'))]
//	ORDER BY SystemModstamp, Id
//
// (on one line, with single spaces). IsDeleted is selected when q asks for deleted records (they
// are sent to the queryAll resource).
func SOQL(q source.Query) string {
	q = normalized(q)
	var b strings.Builder
	b.WriteString("SELECT Id, SystemModstamp")
	if q.Deleted {
		b.WriteString(", IsDeleted")
	}
	for _, f := range q.Fields {
		b.WriteString(", ")
		b.WriteString(f)
	}
	b.WriteString(" FROM ")
	b.WriteString(q.Object)
	b.WriteString(" WHERE SystemModstamp >= ")
	b.WriteString(q.From.Format(soqlTime))
	b.WriteString(" AND SystemModstamp < ")
	b.WriteString(q.To.Format(soqlTime))
	if q.After != nil {
		t := q.After.Modstamp.Format(soqlTime)
		b.WriteString(" AND (SystemModstamp > ")
		b.WriteString(t)
		b.WriteString(" OR (SystemModstamp = ")
		b.WriteString(t)
		b.WriteString(" AND Id > '")
		b.WriteString(escapeLiteral(q.After.ID))
		b.WriteString("'))")
	}
	b.WriteString(" ORDER BY SystemModstamp, Id")
	return b.String()
}

// CountSOQL returns the aggregate query Count sends:
//
//	SELECT COUNT(Id), MIN(SystemModstamp), MAX(SystemModstamp) FROM Obj
//	WHERE SystemModstamp >= <From> AND SystemModstamp < <To>
//
// (on one line, with single spaces).
func CountSOQL(q source.Query) string {
	q = normalized(q)
	return "SELECT COUNT(Id), MIN(SystemModstamp), MAX(SystemModstamp) FROM " + q.Object + " WHERE SystemModstamp >= " + q.From.Format(soqlTime) +
		" AND SystemModstamp < " + q.To.Format(soqlTime)
}

// ValidateQuery reports why q cannot be sent: names that are not SOQL identifiers (the only defence
// against injection a query needs, since every other part is formatted by SOQL), repeated or
// reserved fields, and times outside Salesforce's range or out of order. The error wraps
// ErrPermanent.
func ValidateQuery(q source.Query) error {
	var errs []error
	if !IsIdentifier(q.Object) {
		errs = append(errs, fmt.Errorf("object %q is not a SOQL identifier", q.Object))
	}
	seen := make(map[string]bool, len(q.Fields))
	for _, f := range q.Fields {
		lf := strings.ToLower(f)
		switch {
		case !IsIdentifier(f):
			errs = append(errs, fmt.Errorf("field %q is not a SOQL identifier", f))
		case lf == "id" || lf == "systemmodstamp":
			errs = append(errs, fmt.Errorf("field %q is always selected; leave it out of Fields", f))
		case lf == "isdeleted" && q.Deleted:
			errs = append(errs, fmt.Errorf("field %q is selected for deleted records; leave it out of Fields", f))
		case seen[lf]:
			errs = append(errs, fmt.Errorf("field %q is selected twice", f))
		}
		seen[lf] = true
	}
	inRange := func(name string, t time.Time) {
		if t.Before(minTime) || !t.Before(maxTime) {
			errs = append(errs, fmt.Errorf("%s %s is outside Salesforce's datetime range (years 1700 to 4000)", name, t.Format(time.RFC3339Nano)))
		}
	}
	inRange("To", q.To)
	if n := normalized(q); n.To.Before(n.From) {
		errs = append(errs, fmt.Errorf("window [%s, %s) ends before it starts", q.From.Format(time.RFC3339Nano), q.To.Format(time.RFC3339Nano)))
	}
	if a := q.After; a != nil {
		inRange("After.Modstamp", a.Modstamp)
		if !a.Modstamp.Equal(a.Modstamp.Truncate(time.Millisecond)) {
			errs = append(errs, fmt.Errorf("After.Modstamp %s is finer than a millisecond", a.Modstamp.Format(time.RFC3339Nano)))
		}
		switch {
		case a.ID == "":
			errs = append(errs, errors.New("After.ID is empty"))
		case !utf8.ValidString(a.ID) || strings.ContainsFunc(a.ID, func(r rune) bool { return r < 0x20 || r == 0x7f }):
			errs = append(errs, fmt.Errorf("After.ID %q holds invalid UTF-8 or control characters", a.ID))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return &permanentError{msg: "invalid query: " + strings.ReplaceAll(err.Error(), "\n", "; ")}
	}
	return nil
}

// normalized returns q in the form SOQL and row validation use: times in UTC, From and To
// rounded up to whole milliseconds, From no earlier than 1700.
//
// Salesforce stores SystemModstamp to the millisecond. From and To are rounded up to the next
// whole millisecond, which selects exactly the same records; After.Modstamp must be a whole
// millisecond already (keys come from records, and records are). A From before 1700, the start
// of Salesforce's datetime range (the zero time, say, for "from the beginning"), searches from
// 1700-01-01.
func normalized(q source.Query) source.Query {
	q.From = ceilMilli(q.From)
	if q.From.Before(minTime) {
		q.From = minTime
	}
	q.To = ceilMilli(q.To)
	if q.After != nil {
		a := source.Key{Modstamp: q.After.Modstamp.UTC(), ID: q.After.ID}
		q.After = &a
	}
	return q
}

func ceilMilli(t time.Time) time.Time {
	c := t.Truncate(time.Millisecond)
	if c.Before(t) {
		c = c.Add(time.Millisecond)
	}
	return c.UTC()
}

// IsIdentifier reports whether s is a SOQL object or field API name: a letter, then letters,
// digits and single underscores, with double underscores only between parts (as in the custom
// suffix "__c" and namespace prefixes "ns__Field__c"), no trailing underscore, at most 255 bytes.
// Relationship paths ("Account.Name") are not accepted.
func IsIdentifier(s string) bool {
	if s == "" || len(s) > 255 || !isLetter(s[0]) || s[len(s)-1] == '_' {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		switch {
		case isLetter(c) || ('0' <= c && c <= '9'):
		case c == '_':
			// A third underscore in a row is never valid.
			if i >= 2 && s[i-1] == '_' && s[i-2] == '_' {
				return false
			}
		default:
			return false
		}
	}
	return true
}

func isLetter(c byte) bool { return ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') }

// escapeLiteral escapes s for a single-quoted SOQL string literal.
func escapeLiteral(s string) string {
	return strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s)
}
