package salesforce_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/oncesync/oncesync/shared/source"
	"github.com/oncesync/oncesync/shared/source/salesforce"
)

const queryPath = "/services/data/v60.0/query"

// contactQuery is the query most tests run.
var contactQuery = source.Query{Object: "Contact", Fields: []string{"Name", "Email"}, From: jan1, To: feb1}

// sleeps records the delays a client asked for, without waiting.
type sleeps struct {
	mu sync.Mutex
	d  []time.Duration
}

func (s *sleeps) sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	s.d = append(s.d, d)
	s.mu.Unlock()
	return ctx.Err()
}

func (s *sleeps) all() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.d...)
}

// newClient returns a client of the server at url that never waits between attempts.
func newClient(t *testing.T, url string, mod func(c *salesforce.Config)) (*salesforce.Client, *sleeps) {
	t.Helper()
	s := &sleeps{}
	cfg := salesforce.Config{
		BaseURL:     url,
		Token:       "tok",
		MaxAttempts: 4,
		MinBackoff:  10 * time.Millisecond,
		MaxBackoff:  time.Second,
		Timeout:     5 * time.Second,
		Sleep:       s.sleep,
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := salesforce.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c, s
}

// server starts h and counts its requests.
func server(t *testing.T, h http.HandlerFunc) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		h(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

// row returns a raw Salesforce row.
func row(id, stamp string, fields ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `{"attributes":{"type":"Contact","url":"/services/data/v60.0/sobjects/Contact/%s"},"Id":%q,"SystemModstamp":%q`, id, id, stamp)
	for i := 0; i+1 < len(fields); i += 2 {
		fmt.Fprintf(&b, ",%q:%s", fields[i], fields[i+1])
	}
	return b.String() + "}"
}

func page(total int, next string, rows ...string) string {
	done := next == ""
	s := fmt.Sprintf(`{"totalSize":%d,"done":%t`, total, done)
	if !done {
		s += fmt.Sprintf(`,"nextRecordsUrl":%q`, next)
	}
	return s + `,"records":[` + strings.Join(rows, ",") + "]}"
}

func writeJSON(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/json;charset=UTF-8")
	w.WriteHeader(status)
	fmt.Fprint(w, body)
}

// collect runs a search and returns its pages.
func collect(t *testing.T, c *salesforce.Client, q source.Query) ([]source.Page, error) {
	t.Helper()
	var pages []source.Page
	err := c.Search(t.Context(), q, func(ctx context.Context, p source.Page) error {
		pages = append(pages, p)
		return nil
	})
	return pages, err
}

func at(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t.UTC()
}

func TestSearchFollowsPages(t *testing.T) {
	var reqs []*http.Request
	var mu sync.Mutex
	srv, n := server(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		reqs = append(reqs, r.Clone(context.Background()))
		mu.Unlock()
		switch r.URL.Path {
		case queryPath:
			writeJSON(w, 200, page(5, queryPath+"/01gA-2",
				row("003A", "2024-01-01T00:00:00.000+0000", "Name", `"Ada Lovelace"`, "Email", `"ada@example.com"`),
				row("003B", "2024-01-02T10:00:00.000+0000", "Name", `"Grace Hopper"`, "Email", `null`)))
		case queryPath + "/01gA-2":
			writeJSON(w, 200, page(5, queryPath+"/01gA-4",
				// Same record again, updated while the search was paging: not invalid.
				row("003A", "2024-01-03T00:00:00.000+0000", "Name", `"Ada King"`, "Email", `"ada@example.com"`),
				row("003C", "2024-01-03T00:00:00.000Z", "name", `"Alan Turing"`, "Email", `"alan@example.com"`, "Other", `1`)))
		case queryPath + "/01gA-4":
			writeJSON(w, 200, page(5, "", row("003D", "2024-01-31T23:59:59.999+0000", "Name", `{"first":"Edsger"}`, "Email", `42.5`)))
		default:
			http.NotFound(w, r)
		}
	})
	c, sl := newClient(t, srv.URL+"/", nil)

	var fetchedBeforeFn []int64
	var pages []source.Page
	err := c.Search(t.Context(), contactQuery, func(ctx context.Context, p source.Page) error {
		fetchedBeforeFn = append(fetchedBeforeFn, n.Load())
		pages = append(pages, p)
		return nil
	})
	if err != nil {
		t.Fatalf("Search: %v", err)
	}
	want := []source.Page{
		{Number: 1, Records: []source.Record{
			{ID: "003A", Modstamp: at("2024-01-01T00:00:00Z"), Fields: map[string]any{"Name": "Ada Lovelace", "Email": "ada@example.com"}},
			{ID: "003B", Modstamp: at("2024-01-02T10:00:00Z"), Fields: map[string]any{"Name": "Grace Hopper", "Email": nil}},
		}},
		{Number: 2, Records: []source.Record{
			{ID: "003A", Modstamp: at("2024-01-03T00:00:00Z"), Fields: map[string]any{"Name": "Ada King", "Email": "ada@example.com"}},
			{ID: "003C", Modstamp: at("2024-01-03T00:00:00Z"), Fields: map[string]any{"Name": "Alan Turing", "Email": "alan@example.com"}},
		}},
		{Number: 3, Records: []source.Record{
			{ID: "003D", Modstamp: at("2024-01-31T23:59:59.999Z"), Fields: map[string]any{"Name": map[string]any{"first": "Edsger"}, "Email": 42.5}},
		}},
	}
	if diff := cmp.Diff(want, pages); diff != "" {
		t.Errorf("pages (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]int64{1, 2, 3}, fetchedBeforeFn); diff != "" {
		t.Errorf("requests made before each fn call (-want +got):\n%s", diff)
	}
	if got := sl.all(); len(got) != 0 {
		t.Errorf("slept %v, want no sleeps", got)
	}
	for i, r := range reqs {
		if got, want := r.Header.Get("Authorization"), "Bearer tok"; got != want {
			t.Errorf("request %d: Authorization = %q, want %q", i, got, want)
		}
		if got, want := r.Header.Get("Sforce-Query-Options"), "batchSize=2000"; got != want {
			t.Errorf("request %d: Sforce-Query-Options = %q, want %q", i, got, want)
		}
	}
	if got, want := reqs[0].URL.Query().Get("q"), salesforce.SOQL(contactQuery); got != want {
		t.Errorf("q = %q, want %q", got, want)
	}
}

func TestSearchOptions(t *testing.T) {
	var got []string
	srv, _ := server(t, func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.URL.Path, r.Header.Get("Sforce-Query-Options"))
		writeJSON(w, 200, page(0, ""))
	})
	c, _ := newClient(t, srv.URL+"/sf", func(c *salesforce.Config) { c.APIVersion = "v58.0"; c.PageSize = 200 })
	pages, err := collect(t, c, contactQuery)
	if err != nil {
		t.Fatalf("Search: %v", err)
	}
	if diff := cmp.Diff([]source.Page{{Number: 1}}, pages); diff != "" {
		t.Errorf("an empty result is still one page (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"/sf/services/data/v58.0/query", "batchSize=200"}, got); diff != "" {
		t.Errorf("path and options (-want +got):\n%s", diff)
	}
}

func TestSearchAfter(t *testing.T) {
	after := source.Key{Modstamp: at("2024-01-10T12:00:00.250Z"), ID: "003M"}
	var soql string
	srv, _ := server(t, func(w http.ResponseWriter, r *http.Request) {
		soql = r.URL.Query().Get("q")
		writeJSON(w, 200, page(4, "",
			row("003L", "2024-01-10T12:00:00.250+0000"), // before the resume key
			row("003M", "2024-01-10T12:00:00.250+0000"), // the resume key itself
			row("003N", "2024-01-10T12:00:00.250+0000"),
			row("003A", "2024-01-10T12:00:00.251+0000")))
	})
	c, _ := newClient(t, srv.URL, nil)
	q := contactQuery
	q.Fields = nil
	q.After = &after
	pages, err := collect(t, c, q)
	if err != nil {
		t.Fatalf("Search: %v", err)
	}
	wantSOQL := "SELECT Id, SystemModstamp FROM Contact WHERE SystemModstamp >= 2024-01-01T00:00:00.000Z AND SystemModstamp < 2024-02-01T00:00:00.000Z" +
		" AND (SystemModstamp > 2024-01-10T12:00:00.250Z OR (SystemModstamp = 2024-01-10T12:00:00.250Z AND Id > '003M')) ORDER BY SystemModstamp, Id"
	if soql != wantSOQL {
		t.Errorf("q =\n%s\nwant\n%s", soql, wantSOQL)
	}
	want := []source.Page{{
		Number: 1,
		Records: []source.Record{
			{ID: "003N", Modstamp: at("2024-01-10T12:00:00.250Z"), Fields: map[string]any{}},
			{ID: "003A", Modstamp: at("2024-01-10T12:00:00.251Z"), Fields: map[string]any{}},
		},
		Invalid: []source.Invalid{
			{Raw: json.RawMessage(row("003L", "2024-01-10T12:00:00.250+0000")), Reason: "key (2024-01-10T12:00:00.250Z, 003L) not after the resume key (2024-01-10T12:00:00.250Z, 003M)", ID: "003L"},
			{Raw: json.RawMessage(row("003M", "2024-01-10T12:00:00.250+0000")), Reason: "key (2024-01-10T12:00:00.250Z, 003M) not after the resume key (2024-01-10T12:00:00.250Z, 003M)", ID: "003M"},
		},
	}}
	if diff := cmp.Diff(want, pages); diff != "" {
		t.Errorf("pages (-want +got):\n%s", diff)
	}
}

func TestSearchInvalidRows(t *testing.T) {
	rows := []string{
		row("003A", "2024-01-05T00:00:00.000+0000", "Name", `"ok"`),
		`{"attributes":{"type":"Contact"},"SystemModstamp":"2024-01-05T00:00:01.000+0000","Name":"no id"}`,
		row("", "2024-01-05T00:00:01.000+0000"),
		`{"Id":12345,"SystemModstamp":"2024-01-05T00:00:01.000+0000"}`,
		`{"Id":"003B","Name":"no stamp"}`,
		`{"Id":"003B","SystemModstamp":null}`,
		`{"Id":"003B","SystemModstamp":1704412801000}`,
		row("003B", "05/01/2024 00:00"),
		row("003B", "2024-01-05T00:00:01.000000001Z"),
		row("003B", "2023-12-31T23:59:59.999+0000"),
		row("003B", "2024-02-01T00:00:00.000+0000"),
		row("003B", "2024-01-04T00:00:00.000+0000"), // before the previous valid row
		row("003A", "2024-01-05T00:00:00.000+0000"), // the same key again
		`"a string"`, // not an object
		`null`,       // not an object
		row("003C", "2024-01-05T00:00:00.000+0000", "Name", `"ok too"`), // after 003A: valid
	}
	srv, _ := server(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, page(len(rows), "", rows...))
	})
	c, _ := newClient(t, srv.URL, nil)
	q := contactQuery
	q.Fields = []string{"Name"}
	pages, err := collect(t, c, q)
	if err != nil {
		t.Fatalf("Search: %v", err)
	}
	if len(pages) != 1 {
		t.Fatalf("got %d pages, want 1", len(pages))
	}
	wantRecords := []source.Record{
		{ID: "003A", Modstamp: at("2024-01-05T00:00:00Z"), Fields: map[string]any{"Name": "ok"}},
		{ID: "003C", Modstamp: at("2024-01-05T00:00:00Z"), Fields: map[string]any{"Name": "ok too"}},
	}
	if diff := cmp.Diff(wantRecords, pages[0].Records); diff != "" {
		t.Errorf("records (-want +got):\n%s", diff)
	}
	wantInvalid := []source.Invalid{
		{Raw: json.RawMessage(rows[1]), Reason: "missing Id"},
		{Raw: json.RawMessage(rows[2]), Reason: "empty Id"},
		{Raw: json.RawMessage(rows[3]), Reason: "Id 12345 is not a string"},
		{Raw: json.RawMessage(rows[4]), Reason: "missing SystemModstamp", ID: "003B"},
		{Raw: json.RawMessage(rows[5]), Reason: "SystemModstamp is null", ID: "003B"},
		{Raw: json.RawMessage(rows[6]), Reason: "SystemModstamp 1704412801000 is not a string", ID: "003B"},
		{Raw: json.RawMessage(rows[7]), Reason: `unparsable SystemModstamp "05/01/2024 00:00"`, ID: "003B"},
		{Raw: json.RawMessage(rows[8]), Reason: `SystemModstamp "2024-01-05T00:00:01.000000001Z" is finer than a millisecond`, ID: "003B"},
		{Raw: json.RawMessage(rows[9]), Reason: "SystemModstamp 2023-12-31T23:59:59.999Z outside the window [2024-01-01T00:00:00.000Z, 2024-02-01T00:00:00.000Z)", ID: "003B"},
		{Raw: json.RawMessage(rows[10]), Reason: "SystemModstamp 2024-02-01T00:00:00.000Z outside the window [2024-01-01T00:00:00.000Z, 2024-02-01T00:00:00.000Z)", ID: "003B"},
		{Raw: json.RawMessage(rows[11]), Reason: "out of order: key (2024-01-04T00:00:00.000Z, 003B) sorts before the previous row's (2024-01-05T00:00:00.000Z, 003A)", ID: "003B"},
		{Raw: json.RawMessage(rows[12]), Reason: "repeats the previous row's key (2024-01-05T00:00:00.000Z, 003A)", ID: "003A"},
		{Raw: json.RawMessage(rows[13]), Reason: "row is not a JSON object"},
		{Raw: json.RawMessage(rows[14]), Reason: "row is not a JSON object"},
	}
	if diff := cmp.Diff(wantInvalid, pages[0].Invalid); diff != "" {
		t.Errorf("invalid rows (-want +got):\n%s", diff)
	}
}

func TestSearchRetries(t *testing.T) {
	statuses := []int{503, 429, 500, 403, 200}
	var i atomic.Int64
	srv, n := server(t, func(w http.ResponseWriter, r *http.Request) {
		switch s := statuses[i.Add(1)-1]; s {
		case 200:
			writeJSON(w, 200, page(1, "", row("003A", "2024-01-05T00:00:00.000+0000")))
		case 429:
			w.Header().Set("Retry-After", "7")
			writeJSON(w, s, `[{"message":"slow down","errorCode":"REQUEST_LIMIT_EXCEEDED"}]`)
		case 403:
			writeJSON(w, s, `[{"message":"ConcurrentPerOrgLongTxn Limit exceeded.","errorCode":"REQUEST_LIMIT_EXCEEDED"}]`)
		default:
			writeJSON(w, s, `[{"message":"try later","errorCode":"SERVER_UNAVAILABLE"}]`)
		}
	})
	c, sl := newClient(t, srv.URL, func(c *salesforce.Config) { c.MaxAttempts = 5 })
	pages, err := collect(t, c, contactQuery)
	if err != nil {
		t.Fatalf("Search: %v", err)
	}
	if len(pages) != 1 || len(pages[0].Records) != 1 {
		t.Errorf("pages = %+v, want one page with one record", pages)
	}
	if got, want := n.Load(), int64(5); got != want {
		t.Errorf("requests = %d, want %d", got, want)
	}
	got := sl.all()
	if len(got) != 4 {
		t.Fatalf("sleeps = %v, want 4", got)
	}
	// Equal jitter: attempt k waits within [b/2, b] for b = 10ms·2^(k-1); Retry-After wins when longer.
	bounds := [][2]time.Duration{{5 * time.Millisecond, 10 * time.Millisecond}, {7 * time.Second, 7 * time.Second},
		{20 * time.Millisecond, 40 * time.Millisecond}, {40 * time.Millisecond, 80 * time.Millisecond}}
	for k, b := range bounds {
		if got[k] < b[0] || got[k] > b[1] {
			t.Errorf("sleep %d = %v, want within [%v, %v]", k+1, got[k], b[0], b[1])
		}
	}
}

func TestSearchBackoffIsCapped(t *testing.T) {
	srv, n := server(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 502, `<html>bad gateway</html>`)
	})
	c, sl := newClient(t, srv.URL, func(c *salesforce.Config) {
		c.MaxAttempts = 8
		c.MinBackoff = 100 * time.Millisecond
		c.MaxBackoff = 300 * time.Millisecond
	})
	_, err := collect(t, c, contactQuery)
	if err == nil || source.IsPermanent(err) {
		t.Fatalf("Search = %v, want a transient error", err)
	}
	want := "salesforce: page 1 of Contact: gave up after 8 attempts: HTTP 502: <html>bad gateway</html>"
	if err.Error() != want {
		t.Errorf("error = %q, want %q", err, want)
	}
	var ae *salesforce.APIError
	if !errors.As(err, &ae) || ae.Status != 502 {
		t.Errorf("errors.As(%v, *APIError) = %+v, want status 502", err, ae)
	}
	if got := n.Load(); got != 8 {
		t.Errorf("requests = %d, want 8", got)
	}
	for k, d := range sl.all() {
		if d > 300*time.Millisecond || d < 50*time.Millisecond {
			t.Errorf("sleep %d = %v, want within [50ms, 300ms]", k+1, d)
		}
	}
}

func TestSearchPermanentErrors(t *testing.T) {
	tests := []struct {
		name     string
		status   int
		body     string
		wantCode string
		wantErr  string
	}{
		{"malformed query", 400, `[{"message":"unexpected token: FROM","errorCode":"MALFORMED_QUERY"}]`, "MALFORMED_QUERY",
			"salesforce: page 1 of Contact: HTTP 400 MALFORMED_QUERY: unexpected token: FROM"},
		{"bad session", 401, `[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]`, "INVALID_SESSION_ID",
			"salesforce: page 1 of Contact: HTTP 401 INVALID_SESSION_ID: Session expired or invalid (source: the connection cannot authenticate)"},
		{"several errors", 400, `[{"message":"No such column 'Foo'","errorCode":"INVALID_FIELD"},{"message":"x","errorCode":"Y"}]`, "INVALID_FIELD",
			"salesforce: page 1 of Contact: HTTP 400 INVALID_FIELD: No such column 'Foo' (and 1 more errors)"},
		{"not found, not JSON", 404, "<html>\n<body>Not here</body></html>", "",
			"salesforce: page 1 of Contact: HTTP 404: <html> <body>Not here</body></html>"},
		{"forbidden, empty body", 403, "", "", "salesforce: page 1 of Contact: HTTP 403: Forbidden"},
		{"oauth shape", 401, `{"error":"invalid_token","error_description":"expired"}`, "invalid_token",
			"salesforce: page 1 of Contact: HTTP 401 invalid_token: expired"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, n := server(t, func(w http.ResponseWriter, r *http.Request) { writeJSON(w, tt.status, tt.body) })
			c, sl := newClient(t, srv.URL, nil)
			calls := 0
			err := c.Search(t.Context(), contactQuery, func(context.Context, source.Page) error { calls++; return nil })
			if !source.IsPermanent(err) || !errors.Is(err, source.ErrPermanent) {
				t.Fatalf("Search = %v, want a permanent error", err)
			}
			if err.Error() != tt.wantErr {
				t.Errorf("error = %q, want %q", err, tt.wantErr)
			}
			var ae *salesforce.APIError
			if !errors.As(err, &ae) || ae.Status != tt.status || ae.Code != tt.wantCode {
				t.Errorf("APIError = %+v, want status %d code %q", ae, tt.status, tt.wantCode)
			}
			if n.Load() != 1 || calls != 0 || len(sl.all()) != 0 {
				t.Errorf("requests %d, fn calls %d, sleeps %v; want 1, 0, none", n.Load(), calls, sl.all())
			}
		})
	}
}

func TestSearchExpiredLocatorIsTransientWithoutRetry(t *testing.T) {
	srv, n := server(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == queryPath {
			writeJSON(w, 200, page(3, queryPath+"/01gA-1", row("003A", "2024-01-05T00:00:00.000+0000")))
			return
		}
		writeJSON(w, 400, `[{"message":"invalid query locator","errorCode":"INVALID_QUERY_LOCATOR"}]`)
	})
	c, _ := newClient(t, srv.URL, nil)
	pages, err := collect(t, c, contactQuery)
	if err == nil || source.IsPermanent(err) {
		t.Fatalf("Search = %v, want a transient error", err)
	}
	if want := "salesforce: page 2 of Contact: HTTP 400 INVALID_QUERY_LOCATOR: invalid query locator"; err.Error() != want {
		t.Errorf("error = %q, want %q", err, want)
	}
	if len(pages) != 1 || n.Load() != 2 {
		t.Errorf("pages %d, requests %d; want 1, 2", len(pages), n.Load())
	}
}

func TestSearchBadResponses(t *testing.T) {
	tests := []struct {
		name string
		body string // of the second page, after a good first page whose nextRecordsUrl is /services/data/v60.0/query/01gA-1
		want string
	}{
		{"not JSON", `<html>maintenance</html>`, `response is not a query result: invalid character '<'`},
		{"truncated", `{"totalSize":3,"done":true,"records":[{"Id":"003A"`, "response is not a query result: unexpected end of JSON input"},
		{"array", `[]`, "response is not a query result: json: cannot unmarshal array"},
		{"no records", `{"totalSize":0,"done":true}`, "response is not a query result: no done flag or records array"},
		{"null records", `{"done":true,"records":null}`, "response is not a query result: no done flag or records array"},
		{"records not an array", `{"done":true,"records":{}}`, "response is not a query result: json: cannot unmarshal object"},
		{"done not a bool", `{"done":"yes","records":[]}`, "response is not a query result: json: cannot unmarshal string"},
		{"no done", `{"records":[]}`, "response is not a query result: no done flag or records array"},
		{"not done without next", `{"done":false,"records":[]}`, "response is not done but has no nextRecordsUrl"},
		{"next on another host", `{"done":false,"nextRecordsUrl":"https://evil.example/steal","records":[]}`, `nextRecordsUrl "https://evil.example/steal" is not a path on the instance`},
		{"next protocol-relative", `{"done":false,"nextRecordsUrl":"//evil.example/steal","records":[]}`, "is not a path on the instance"},
		{"next relative", `{"done":false,"nextRecordsUrl":"query/01gA-2","records":[]}`, "is not a path on the instance"},
		{"next repeats", `{"done":false,"nextRecordsUrl":"/services/data/v60.0/query/01gA-1","records":[]}`, "repeats the page just read"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, n := server(t, func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == queryPath {
					writeJSON(w, 200, page(3, queryPath+"/01gA-1", row("003A", "2024-01-05T00:00:00.000+0000")))
					return
				}
				writeJSON(w, 200, tt.body)
			})
			c, _ := newClient(t, srv.URL, nil)
			_, err := collect(t, c, contactQuery)
			if !source.IsPermanent(err) {
				t.Fatalf("Search = %v, want a permanent error", err)
			}
			if !strings.HasPrefix(err.Error(), "salesforce: page 2 of Contact: ") || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %q, want page 2 and %q", err, tt.want)
			}
			if n.Load() != 2 {
				t.Errorf("requests = %d, want 2 (no retries)", n.Load())
			}
		})
	}
}

func TestSearchNetworkErrors(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close() // connections are refused from now on
	c, sl := newClient(t, url, nil)
	_, err := collect(t, c, contactQuery)
	if err == nil || source.IsPermanent(err) {
		t.Fatalf("Search = %v, want a transient error", err)
	}
	if !strings.HasPrefix(err.Error(), "salesforce: page 1 of Contact: gave up after 4 attempts: ") || strings.Contains(err.Error(), "SELECT") {
		t.Errorf("error = %q, want it to say it gave up, without the query", err)
	}
	if got := len(sl.all()); got != 3 {
		t.Errorf("sleeps = %d, want 3", got)
	}
}

func TestSearchAbortedResponseIsRetried(t *testing.T) {
	var i atomic.Int64
	srv, _ := server(t, func(w http.ResponseWriter, r *http.Request) {
		if i.Add(1) == 1 {
			// Promise more than we send, then drop the connection: a read error, not bad JSON.
			w.Header().Set("Content-Length", "1000")
			w.WriteHeader(200)
			fmt.Fprint(w, `{"done":true,"records":[`)
			panic(http.ErrAbortHandler)
		}
		writeJSON(w, 200, page(1, "", row("003A", "2024-01-05T00:00:00.000+0000")))
	})
	c, sl := newClient(t, srv.URL, nil)
	pages, err := collect(t, c, contactQuery)
	if err != nil {
		t.Fatalf("Search: %v", err)
	}
	if len(pages) != 1 || len(pages[0].Records) != 1 || len(sl.all()) != 1 {
		t.Errorf("pages %+v, sleeps %v; want one record after one retry", pages, sl.all())
	}
}

func TestSearchRequestTimeout(t *testing.T) {
	var i atomic.Int64
	srv, _ := server(t, func(w http.ResponseWriter, r *http.Request) {
		if i.Add(1) == 1 {
			<-r.Context().Done() // hang until the client gives up
			return
		}
		writeJSON(w, 200, page(1, "", row("003A", "2024-01-05T00:00:00.000+0000")))
	})
	c, sl := newClient(t, srv.URL, func(c *salesforce.Config) { c.Timeout = 50 * time.Millisecond })
	pages, err := collect(t, c, contactQuery)
	if err != nil {
		t.Fatalf("Search: %v", err)
	}
	if len(pages) != 1 || len(sl.all()) != 1 || i.Load() != 2 {
		t.Errorf("pages %d, sleeps %v, requests %d; want 1, one, 2", len(pages), sl.all(), i.Load())
	}

	// A server that always hangs: every attempt times out.
	hang, _ := server(t, func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	c, _ = newClient(t, hang.URL, func(c *salesforce.Config) { c.Timeout = 20 * time.Millisecond; c.MaxAttempts = 2 })
	_, err = collect(t, c, contactQuery)
	if err == nil || source.IsPermanent(err) || !errors.Is(err, context.DeadlineExceeded) ||
		!strings.Contains(err.Error(), "gave up after 2 attempts: request timed out after 20ms") {
		t.Errorf("Search = %v, want a transient timeout after 2 attempts", err)
	}
}

func TestSearchContextCanceled(t *testing.T) {
	t.Run("while a request is in flight", func(t *testing.T) {
		started := make(chan struct{})
		srv, _ := server(t, func(w http.ResponseWriter, r *http.Request) {
			close(started)
			<-r.Context().Done()
		})
		c, sl := newClient(t, srv.URL, nil)
		ctx, cancel := context.WithCancel(t.Context())
		go func() { <-started; cancel() }()
		err := c.Search(ctx, contactQuery, func(context.Context, source.Page) error { return nil })
		if !errors.Is(err, context.Canceled) || source.IsPermanent(err) {
			t.Errorf("Search = %v, want context.Canceled", err)
		}
		if len(sl.all()) != 0 {
			t.Errorf("slept %v after cancel, want no retries", sl.all())
		}
	})
	t.Run("while waiting to retry", func(t *testing.T) {
		srv, n := server(t, func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 503, "") })
		ctx, cancel := context.WithCancel(t.Context())
		c, _ := newClient(t, srv.URL, func(c *salesforce.Config) {
			c.Sleep = func(ctx context.Context, d time.Duration) error { cancel(); return ctx.Err() }
		})
		err := c.Search(ctx, contactQuery, func(context.Context, source.Page) error { return nil })
		if !errors.Is(err, context.Canceled) || source.IsPermanent(err) {
			t.Errorf("Search = %v, want context.Canceled", err)
		}
		if n.Load() != 1 {
			t.Errorf("requests = %d, want 1", n.Load())
		}
	})
	t.Run("between pages", func(t *testing.T) {
		srv, n := server(t, func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, 200, page(2, queryPath+"/01gA-1", row("003A", "2024-01-05T00:00:00.000+0000")))
		})
		ctx, cancel := context.WithCancel(t.Context())
		c, _ := newClient(t, srv.URL, nil)
		err := c.Search(ctx, contactQuery, func(context.Context, source.Page) error { cancel(); return nil })
		if !errors.Is(err, context.Canceled) || !strings.HasPrefix(err.Error(), "salesforce: page 2 of Contact: context canceled") {
			t.Errorf("Search = %v, want context.Canceled on page 2", err)
		}
		if n.Load() != 1 {
			t.Errorf("requests = %d, want 1", n.Load())
		}
	})
	t.Run("retry would outlive the deadline", func(t *testing.T) {
		srv, n := server(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Retry-After", "3600")
			writeJSON(w, 429, "")
		})
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		c, sl := newClient(t, srv.URL, nil)
		err := c.Search(ctx, contactQuery, func(context.Context, source.Page) error { return nil })
		if err == nil || source.IsPermanent(err) || !strings.Contains(err.Error(), "would be past the deadline") {
			t.Errorf("Search = %v, want a transient error that gives up early", err)
		}
		if n.Load() != 1 || len(sl.all()) != 0 {
			t.Errorf("requests %d, sleeps %v; want 1, none", n.Load(), sl.all())
		}
	})
}

func TestSearchCallbackError(t *testing.T) {
	srv, n := server(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, page(2, queryPath+"/01gA-1", row("003A", "2024-01-05T00:00:00.000+0000")))
	})
	c, _ := newClient(t, srv.URL, nil)
	stop := errors.New("stop here")
	err := c.Search(t.Context(), contactQuery, func(context.Context, source.Page) error { return stop })
	if err != stop {
		t.Errorf("Search = %v, want the callback's error as is", err)
	}
	if n.Load() != 1 {
		t.Errorf("requests = %d, want 1", n.Load())
	}
}

func TestSearchInvalidQuery(t *testing.T) {
	srv, n := server(t, func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, page(0, "")) })
	c, _ := newClient(t, srv.URL, nil)
	q := contactQuery
	q.Fields = []string{"Name", "Email FROM User"}
	_, err := collect(t, c, q)
	want := `salesforce: search of Contact: invalid query: field "Email FROM User" is not a SOQL identifier`
	if !source.IsPermanent(err) || err.Error() != want {
		t.Errorf("Search = %v, want permanent %q", err, want)
	}
	if n.Load() != 0 {
		t.Errorf("requests = %d, want 0", n.Load())
	}
}

func TestNew(t *testing.T) {
	good := salesforce.Config{BaseURL: "https://acme.my.salesforce.com", Token: "t"}
	tests := []struct {
		name string
		mod  func(c *salesforce.Config)
		want string
	}{
		{"defaults", func(c *salesforce.Config) {}, ""},
		{"all set", func(c *salesforce.Config) {
			*c = salesforce.Config{BaseURL: "http://127.0.0.1:8080/sf/", Token: "t", APIVersion: "v61.0", PageSize: 200,
				Timeout: time.Second, MaxAttempts: 1, MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond}
		}, ""},
		{"no base URL", func(c *salesforce.Config) { c.BaseURL = "" }, `base URL "" is not`},
		{"relative base URL", func(c *salesforce.Config) { c.BaseURL = "acme.my.salesforce.com" }, "is not an http(s) URL"},
		{"ftp", func(c *salesforce.Config) { c.BaseURL = "ftp://acme" }, "is not an http(s) URL"},
		{"query in base URL", func(c *salesforce.Config) { c.BaseURL = "https://acme/?x=1" }, "is not an http(s) URL"},
		{"user in base URL", func(c *salesforce.Config) { c.BaseURL = "https://u:p@acme/" }, "is not an http(s) URL"},
		{"no token", func(c *salesforce.Config) { c.Token = "" }, "no token and no auth"},
		{"bad version", func(c *salesforce.Config) { c.APIVersion = "60" }, `API version "60"`},
		{"page too small", func(c *salesforce.Config) { c.PageSize = 7 }, "page size 7 outside"},
		{"page too big", func(c *salesforce.Config) { c.PageSize = 2001 }, "page size 2001 outside"},
		{"negative timeout", func(c *salesforce.Config) { c.Timeout = -1 }, "must not be negative"},
		{"backoffs reversed", func(c *salesforce.Config) { c.MinBackoff, c.MaxBackoff = time.Second, time.Millisecond }, "exceeds max backoff"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			tt.mod(&cfg)
			c, err := salesforce.New(cfg)
			if tt.want == "" {
				if err != nil || c == nil {
					t.Fatalf("New = %v, %v; want a client", c, err)
				}
				if err := cfg.Validate(); err != nil {
					t.Errorf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "salesforce: ") {
				t.Errorf("New = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestSearchDefaultRetries(t *testing.T) {
	srv, n := server(t, func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 500, "") })
	sl := &sleeps{}
	c, err := salesforce.New(salesforce.Config{BaseURL: srv.URL, Token: "tok", Sleep: sl.sleep})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := collect(t, c, contactQuery); err == nil || source.IsPermanent(err) {
		t.Fatalf("Search = %v, want a transient error", err)
	}
	if n.Load() != salesforce.DefaultMaxAttempts {
		t.Errorf("requests = %d, want %d", n.Load(), salesforce.DefaultMaxAttempts)
	}
	got := sl.all()
	if len(got) != salesforce.DefaultMaxAttempts-1 {
		t.Fatalf("sleeps = %v, want %d", got, salesforce.DefaultMaxAttempts-1)
	}
	for k, d := range got {
		b := min(salesforce.DefaultMinBackoff<<k, salesforce.DefaultMaxBackoff)
		if d < b/2 || d > b {
			t.Errorf("sleep %d = %v, want within [%v, %v]", k+1, d, b/2, b)
		}
	}
}

// TestCountSendsTheAggregateQueryAndReadsItsRow: Count sends the one aggregate query of the
// window (never the fields or the resume point), reads Salesforce's AggregateResult row, and
// treats an answer that is no such row as permanent.
func TestCountSendsTheAggregateQueryAndReadsItsRow(t *testing.T) {
	var got string
	srv, _ := server(t, func(w http.ResponseWriter, r *http.Request) {
		got = r.URL.Query().Get("q")
		fmt.Fprint(w, `{"totalSize":1,"done":true,"records":[{"attributes":{"type":"AggregateResult"},"expr0":42,"expr1":"2026-01-03T10:00:00.000+0000","expr2":"2026-01-20T11:30:00.250+0000"}]}`)
	})
	c, _ := newClient(t, srv.URL, nil)
	q := contactQuery
	q.After = &source.Key{Modstamp: jan1.Add(time.Hour), ID: "003x"}
	e, err := c.Count(t.Context(), q)
	if err != nil {
		t.Fatal(err)
	}
	want := "SELECT COUNT(Id), MIN(SystemModstamp), MAX(SystemModstamp) FROM Contact WHERE SystemModstamp >= 2024-01-01T00:00:00.000Z AND SystemModstamp < 2024-02-01T00:00:00.000Z"
	if got != want || got != salesforce.CountSOQL(q) {
		t.Errorf("query %q, want %q", got, want)
	}
	if e.Count != 42 || !e.First.Equal(time.Date(2026, 1, 3, 10, 0, 0, 0, time.UTC)) || !e.Last.Equal(time.Date(2026, 1, 20, 11, 30, 0, 250e6, time.UTC)) {
		t.Errorf("extent %+v", e)
	}
	for name, body := range map[string]string{
		"not json":      `{"records":`,
		"no row":        `{"totalSize":0,"done":true,"records":[]}`,
		"no count":      `{"records":[{"expr1":null,"expr2":null}]}`,
		"negative":      `{"records":[{"expr0":-1}]}`,
		"no stamps":     `{"records":[{"expr0":3,"expr1":null,"expr2":null}]}`,
		"stamps turned": `{"records":[{"expr0":3,"expr1":"2026-01-05T00:00:00Z","expr2":"2026-01-04T00:00:00Z"}]}`,
	} {
		srv, _ := server(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, body) })
		c, _ := newClient(t, srv.URL, nil)
		if _, err := c.Count(t.Context(), contactQuery); !source.IsPermanent(err) {
			t.Errorf("%s: %v, want a permanent error", name, err)
		}
	}
	srv, _ = server(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"totalSize":1,"done":true,"records":[{"attributes":{"type":"AggregateResult"},"expr0":0,"expr1":null,"expr2":null}]}`)
	})
	c, _ = newClient(t, srv.URL, nil)
	if e, err := c.Count(t.Context(), contactQuery); err != nil || e != (source.Extent{}) {
		t.Errorf("an empty window: %+v, %v", e, err)
	}
}

func TestDeletedRecordsComeFromQueryAll(t *testing.T) {
	var paths []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		paths = append(paths, r.URL.Path+" "+r.URL.Query().Get("q"))
		fmt.Fprint(w, `{"done":true,"records":[`+
			`{"Id":"003A","SystemModstamp":"2024-01-02T00:00:00.000+0000","IsDeleted":true,"Name":"gone"},`+
			`{"Id":"003B","SystemModstamp":"2024-01-02T00:00:01.000+0000","IsDeleted":false,"Name":"here"},`+
			`{"Id":"003C","SystemModstamp":"2024-01-02T00:00:02.000+0000","Name":"no field: live"},`+
			`{"Id":"003D","SystemModstamp":"2024-01-02T00:00:03.000+0000","IsDeleted":"yes"}]}`)
	}))
	defer srv.Close()
	c, _ := newClient(t, srv.URL, nil)
	q := source.Query{Object: "Contact", Fields: []string{"Name"}, From: jan1, To: feb1, Deleted: true}
	var got []source.Record
	var bad []source.Invalid
	if err := c.Search(t.Context(), q, func(_ context.Context, p source.Page) error {
		got, bad = append(got, p.Records...), append(bad, p.Invalid...)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	want := "/services/data/v60.0/queryAll SELECT Id, SystemModstamp, IsDeleted, Name FROM Contact WHERE SystemModstamp >= 2024-01-01T00:00:00.000Z AND SystemModstamp < 2024-02-01T00:00:00.000Z ORDER BY SystemModstamp, Id"
	if len(paths) != 1 || paths[0] != want {
		t.Errorf("requests %q, want [%q]", paths, want)
	}
	var flags []string
	for _, r := range got {
		flags = append(flags, fmt.Sprintf("%s:%v", r.ID, r.Deleted))
	}
	if fmt.Sprint(flags) != "[003A:true 003B:false 003C:false]" || len(bad) != 1 || bad[0].Reason != `IsDeleted "yes" is not a boolean` {
		t.Errorf("records %v, invalid %+v", flags, bad)
	}
	if err := salesforce.ValidateQuery(source.Query{Object: "Contact", Fields: []string{"IsDeleted"}, From: jan1, To: feb1, Deleted: true}); !source.IsPermanent(err) {
		t.Errorf("IsDeleted selected twice: %v, want a permanent error", err)
	}
}

func TestAPIUsageIsReadFromEveryAnswerAndFromLimits(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/services/data/v60.0/limits":
			fmt.Fprint(w, `{"DailyApiRequests":{"Max":15000,"Remaining":14000},"DataStorageMB":{"Max":5,"Remaining":5}}`)
		default:
			w.Header().Set("Sforce-Limit-Info", "api-usage=1001/15000, per-app-api-usage=17/250(appName=sync)")
			fmt.Fprint(w, `{"done":true,"records":[]}`)
		}
	}))
	defer srv.Close()
	c, _ := newClient(t, srv.URL, nil)
	var pages []source.Page
	if err := c.Search(t.Context(), contactQuery, func(_ context.Context, p source.Page) error { pages = append(pages, p); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(pages) != 1 || pages[0].Usage != (source.Usage{Used: 1001, Limit: 15000}) || pages[0].Usage.Left() != 13999 {
		t.Errorf("page usage %+v, want 1001 of 15000", pages[0].Usage)
	}
	u, err := c.Usage(t.Context())
	if err != nil || u != (source.Usage{Used: 1000, Limit: 15000}) {
		t.Errorf("Usage() = %+v, %v; want 1000 of 15000", u, err)
	}
}

func TestLimitsThatAreNotLimitsArePermanent(t *testing.T) {
	for _, body := range []string{`{}`, `{"DailyApiRequests":{"Max":0,"Remaining":0}}`, `not json`, `{"DailyApiRequests":{"Max":10}}`} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, body) }))
		c, _ := newClient(t, srv.URL, nil)
		if _, err := c.Usage(t.Context()); !source.IsPermanent(err) {
			t.Errorf("limits %s: %v, want a permanent error", body, err)
		}
		srv.Close()
	}
}
