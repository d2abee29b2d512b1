package salesforce

import (
	"net/url"
	"testing"
	"time"

	"github.com/oncesync/oncesync/shared/source"
)

// FuzzPageRows feeds arbitrary response bodies through the page decoder and the row checks. A
// body is a query result or a permanent error; every row of a result is a Record or an Invalid
// with a reason, never both and never lost; and the Records come out inside the window, after the
// resume key, in strictly increasing key order: what the expander's stable plans rely on.
func FuzzPageRows(f *testing.F) {
	f.Add([]byte(`{"done":true,"records":[{"Id":"003A","SystemModstamp":"2026-01-01T00:00:01.000+0000","Name":"a"}]}`))
	f.Add([]byte(`{"done":false,"nextRecordsUrl":"/services/data/v61.0/query/01g-2000","records":[]}`))
	f.Add([]byte(`{"done":true,"records":[{"Id":"003B","SystemModstamp":"2026-01-01T00:00:02Z"},{"Id":"003A","SystemModstamp":"2026-01-01T00:00:02Z"},{"Id":7},null,[],{"Id":"x","SystemModstamp":null}]}`))
	f.Add([]byte(`{"done":true,"records":[{"Id":"003C","SystemModstamp":"2026-01-01T00:00:02.0001Z","name":"case"}]}`))
	f.Add([]byte(`not json`))
	from := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	after := source.Key{Modstamp: from.Add(time.Second), ID: "003A"}
	q := normalized(source.Query{Object: "Contact", Fields: []string{"Name"}, From: from, To: from.Add(time.Hour), After: &after})
	f.Fuzz(func(t *testing.T, body []byte) {
		res, err := decodePage(body)
		if err != nil {
			if !source.IsPermanent(err) {
				t.Fatalf("a body that is no query result is not a permanent error: %v", err)
			}
			return
		}
		if !*res.Done && res.NextRecordsURL == "" {
			t.Fatal("accepted a page that is not done and has no next page")
		}
		chk := newChecker(q)
		var prev *source.Key
		for _, raw := range *res.Records {
			rec, reason := chk.row(raw)
			if reason != "" {
				if rec.ID != "" {
					t.Fatalf("row %s is invalid (%s) and a record", raw, reason)
				}
				continue
			}
			k := source.Key{Modstamp: rec.Modstamp, ID: rec.ID}
			switch {
			case rec.ID == "":
				t.Fatalf("row %s: a record without an ID", raw)
			case rec.Modstamp.Before(q.From) || !rec.Modstamp.Before(q.To):
				t.Fatalf("row %s: stamp %v outside the window", raw, rec.Modstamp)
			case k.Compare(after) <= 0:
				t.Fatalf("row %s: key %v not after the resume key", raw, k)
			case prev != nil && k.Compare(*prev) <= 0:
				t.Fatalf("row %s: key %v does not sort after %v", raw, k, *prev)
			case rec.Modstamp.Location() != time.UTC:
				t.Fatalf("row %s: stamp not in UTC", raw)
			}
			prev = &k
		}
	})
}

// FuzzNextURL checks that no nextRecordsUrl takes the client (and its token) off the instance.
func FuzzNextURL(f *testing.F) {
	for _, s := range []string{"/services/data/v61.0/query/01g-2000", "//evil.example/x", "https://evil.example/", "/\\evil.example", "/%2F%2Fevil", "", "/a?b=c#d", "/@evil.example"} {
		f.Add(s)
	}
	c, err := New(Config{BaseURL: "https://acme.my.salesforce.com", Token: "t"})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, next string) {
		abs, err := c.nextURL(next, c.queryURL)
		if err != nil {
			if !source.IsPermanent(err) {
				t.Fatalf("refusal is not permanent: %v", err)
			}
			return
		}
		u, err := url.Parse(abs)
		if err != nil {
			return // the request fails to build; the token is not sent anywhere
		}
		if u.Scheme != "https" || u.Host != "acme.my.salesforce.com" || u.User != nil {
			t.Fatalf("nextRecordsUrl %q leads to %q (scheme %q, host %q)", next, abs, u.Scheme, u.Host)
		}
	})
}
