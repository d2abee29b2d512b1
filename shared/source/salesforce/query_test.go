package salesforce_test

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/oncesync/oncesync/shared/source"
	"github.com/oncesync/oncesync/shared/source/salesforce"
)

var (
	jan1 = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	feb1 = time.Date(2024, 2, 1, 0, 0, 0, 0, time.UTC)
)

func TestQuerySOQL(t *testing.T) {
	paris := time.FixedZone("CET", 3600)
	tests := []struct {
		name string
		q    source.Query
		want string
	}{
		{
			name: "fields",
			q:    source.Query{Object: "Contact", Fields: []string{"Name", "Email"}, From: jan1, To: feb1},
			want: "SELECT Id, SystemModstamp, Name, Email FROM Contact WHERE SystemModstamp >= 2024-01-01T00:00:00.000Z AND SystemModstamp < 2024-02-01T00:00:00.000Z ORDER BY SystemModstamp, Id",
		},
		{
			name: "no fields, custom object, times in another zone",
			q:    source.Query{Object: "Engagement__c", From: jan1.In(paris), To: feb1.In(paris)},
			want: "SELECT Id, SystemModstamp FROM Engagement__c WHERE SystemModstamp >= 2024-01-01T00:00:00.000Z AND SystemModstamp < 2024-02-01T00:00:00.000Z ORDER BY SystemModstamp, Id",
		},
		{
			name: "sub-millisecond window rounds up",
			q:    source.Query{Object: "Contact", From: jan1.Add(1), To: feb1.Add(999_999)},
			want: "SELECT Id, SystemModstamp FROM Contact WHERE SystemModstamp >= 2024-01-01T00:00:00.001Z AND SystemModstamp < 2024-02-01T00:00:00.001Z ORDER BY SystemModstamp, Id",
		},
		{
			name: "zero From",
			q:    source.Query{Object: "Contact", To: feb1},
			want: "SELECT Id, SystemModstamp FROM Contact WHERE SystemModstamp >= 1700-01-01T00:00:00.000Z AND SystemModstamp < 2024-02-01T00:00:00.000Z ORDER BY SystemModstamp, Id",
		},
		{
			name: "after",
			q: source.Query{Object: "Contact", Fields: []string{"Name"}, From: jan1, To: feb1,
				After: &source.Key{Modstamp: jan1.Add(90*time.Minute + 5*time.Millisecond), ID: "0035g00000AbCdEAAV"}},
			want: "SELECT Id, SystemModstamp, Name FROM Contact WHERE SystemModstamp >= 2024-01-01T00:00:00.000Z AND SystemModstamp < 2024-02-01T00:00:00.000Z" +
				" AND (SystemModstamp > 2024-01-01T01:30:00.005Z OR (SystemModstamp = 2024-01-01T01:30:00.005Z AND Id > '0035g00000AbCdEAAV'))" +
				" ORDER BY SystemModstamp, Id",
		},
		{
			name: "after ID with quotes and backslashes",
			q:    source.Query{Object: "Contact", From: jan1, To: feb1, After: &source.Key{Modstamp: jan1, ID: `a'b\c' OR Id != '`}},
			want: "SELECT Id, SystemModstamp FROM Contact WHERE SystemModstamp >= 2024-01-01T00:00:00.000Z AND SystemModstamp < 2024-02-01T00:00:00.000Z" +
				` AND (SystemModstamp > 2024-01-01T00:00:00.000Z OR (SystemModstamp = 2024-01-01T00:00:00.000Z AND Id > 'a\'b\\c\' OR Id != \''))` +
				" ORDER BY SystemModstamp, Id",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := salesforce.ValidateQuery(tt.q); err != nil {
				t.Fatalf("Validate() = %v, want nil", err)
			}
			if got := salesforce.SOQL(tt.q); got != tt.want {
				t.Errorf("SOQL() =\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

func TestQueryValidate(t *testing.T) {
	ok := source.Query{Object: "Contact", Fields: []string{"Name"}, From: jan1, To: feb1}
	tests := []struct {
		name string
		mod  func(q *source.Query)
		want string // substring of the error; "" for valid
	}{
		{"valid", func(q *source.Query) {}, ""},
		{"empty window", func(q *source.Query) { q.To = q.From }, ""},
		{"custom names", func(q *source.Query) {
			q.Object = "ns__Engagement__c"
			q.Fields = []string{"Amount__c", "ns__Score_Value__c", "Owner_Name2"}
		}, ""},
		{"injection in object", func(q *source.Query) { q.Object = "Contact WHERE Id != null" }, `object "Contact WHERE Id != null" is not a SOQL identifier`},
		{"empty object", func(q *source.Query) { q.Object = "" }, `object "" is not a SOQL identifier`},
		{"injection in field", func(q *source.Query) { q.Fields = []string{"Name FROM User --"} }, `field "Name FROM User --" is not a SOQL identifier`},
		{"comma in field", func(q *source.Query) { q.Fields = []string{"Name,Email"} }, `field "Name,Email" is not`},
		{"relationship path", func(q *source.Query) { q.Fields = []string{"Account.Name"} }, `field "Account.Name" is not`},
		{"leading digit", func(q *source.Query) { q.Fields = []string{"1Name"} }, `field "1Name" is not`},
		{"leading underscore", func(q *source.Query) { q.Fields = []string{"_Name"} }, `field "_Name" is not`},
		{"trailing underscore", func(q *source.Query) { q.Fields = []string{"Name__"} }, `field "Name__" is not`},
		{"triple underscore", func(q *source.Query) { q.Fields = []string{"a___c"} }, `field "a___c" is not`},
		{"non-ASCII", func(q *source.Query) { q.Fields = []string{"Näme"} }, `field "Näme" is not`},
		{"quote", func(q *source.Query) { q.Fields = []string{"Name'"} }, `field "Name'" is not`},
		{"too long", func(q *source.Query) { q.Fields = []string{"A" + strings.Repeat("b", 255)} }, "is not a SOQL identifier"},
		{"Id in fields", func(q *source.Query) { q.Fields = []string{"id"} }, `field "id" is always selected`},
		{"SystemModstamp in fields", func(q *source.Query) { q.Fields = []string{"SystemModstamp"} }, "always selected"},
		{"duplicate field", func(q *source.Query) { q.Fields = []string{"Name", "NAME"} }, `field "NAME" is selected twice`},
		{"zero From searches from 1700", func(q *source.Query) { q.From = time.Time{} }, ""},
		{"zero To", func(q *source.Query) { q.To = time.Time{} }, "To 0001-01-01T00:00:00Z is outside Salesforce's datetime range"},
		{"To beyond 4000", func(q *source.Query) { q.To = time.Date(4001, 1, 1, 0, 0, 0, 0, time.UTC) }, "To 4001-01-01T00:00:00Z is outside"},
		{"window backwards", func(q *source.Query) { q.From, q.To = q.To, q.From }, "ends before it starts"},
		{"after without ID", func(q *source.Query) { q.After = &source.Key{Modstamp: jan1} }, "After.ID is empty"},
		{"after with control character", func(q *source.Query) { q.After = &source.Key{Modstamp: jan1, ID: "a\nb"} }, "control characters"},
		{"after finer than a millisecond", func(q *source.Query) { q.After = &source.Key{Modstamp: jan1.Add(time.Microsecond), ID: "a"} }, "finer than a millisecond"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := ok
			q.Fields = append([]string(nil), ok.Fields...)
			tt.mod(&q)
			err := salesforce.ValidateQuery(q)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate() = %v, want an error containing %q", err, tt.want)
			}
			if !source.IsPermanent(err) {
				t.Errorf("IsPermanent(%v) = false, want true", err)
			}
		})
	}
}

func TestParseTime(t *testing.T) {
	want := time.Date(2024, 3, 5, 7, 8, 9, 123_000_000, time.UTC)
	for _, s := range []string{
		"2024-03-05T07:08:09.123+0000",
		"2024-03-05T08:08:09.123+0100",
		"2024-03-05T07:08:09.123Z",
		"2024-03-05T02:08:09.123-05:00",
	} {
		got, err := salesforce.ParseTime(s)
		if err != nil || !got.Equal(want) || got.Location() != time.UTC {
			t.Errorf("ParseTime(%q) = %v, %v; want %v in UTC", s, got, err, want)
		}
	}
	for _, s := range []string{"", "yesterday", "2024-03-05", "2024-03-05 07:08:09", "2024-13-05T07:08:09.123+0000"} {
		if got, err := salesforce.ParseTime(s); err == nil {
			t.Errorf("ParseTime(%q) = %v, want an error", s, got)
		}
	}
}

func TestKeyCompare(t *testing.T) {
	keys := []source.Key{
		{Modstamp: jan1, ID: "003A"},
		{Modstamp: jan1, ID: "003B"},
		{Modstamp: jan1, ID: "003a"}, // lower case sorts after upper case, byte by byte
		{Modstamp: jan1.Add(time.Millisecond), ID: "0030"},
	}
	for i := range keys {
		for j := range keys {
			want := 0
			if i < j {
				want = -1
			} else if i > j {
				want = 1
			}
			if got := keys[i].Compare(keys[j]); got != want {
				t.Errorf("%v.Compare(%v) = %d, want %d", keys[i], keys[j], got, want)
			}
		}
	}
	if diff := cmp.Diff("(2024-01-01T00:00:00.000Z, 003A)", keys[0].String()); diff != "" {
		t.Errorf("String() (-want +got):\n%s", diff)
	}
}
