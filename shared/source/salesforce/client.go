// Package salesforce is the Salesforce connector of package source: it reads records with the REST query API: one search over a fixed
// window of SystemModstamp, delivered page by page in (SystemModstamp, Id) order. It implements source.Source.
//
// # Searches
//
// Search sends one SOQL query (see SOQL) and follows nextRecordsUrl until Salesforce says
// done, handing each page to a callback before it fetches the next, so memory is bounded by one
// page. A search can be resumed after any record with Query.After (keyset paging): resuming after
// the last record of a page returns what the rest of the original search would have returned,
// give or take records changed in between.
//
// # Rows
//
// Each row of a page is checked before it becomes a Record. A row with no Id, no parsable
// SystemModstamp, a SystemModstamp outside the window (or not after Query.After), or a key not
// after the previous valid row's is bad source data: it is reported in Page.Invalid with its raw
// JSON and a reason, and never stops the search. The same Id may legitimately appear twice with
// different SystemModstamps (a record updated while the search was paging); both are kept.
//
// Record.Fields holds the requested fields under the names the Query spelled them (Salesforce
// answers with its own spelling; SOQL names are case-insensitive), decoded as encoding/json
// decodes into any: strings, float64, bool, nil, maps and slices. A field missing from a row is
// missing from Fields; a JSON null is a nil value.
//
// # Errors
//
// Search returns an error wrapped with the page and object ("source: page 3 of Contact: …", or
// "source: search of Contact: invalid query: …" before any request):
//
//   - ErrPermanent (check with errors.Is or IsPermanent) when repeating the search cannot help: an
//     invalid Query, a 4xx answer such as 400 MALFORMED_QUERY or 401 INVALID_SESSION_ID, or a 200
//     whose body is not a query result. The *APIError it wraps has the Salesforce errorCode.
//   - A transient error otherwise: 429 and 5xx answers (and 4xx QUERY_TIMEOUT and
//     REQUEST_LIMIT_EXCEEDED), network errors and timed-out requests, once MaxAttempts attempts
//     with exponential backoff have failed; also, without retries, 400 INVALID_QUERY_LOCATOR (an
//     expired nextRecordsUrl). Repeat the search later, resuming after the last record handled.
//   - ctx's error, wrapped, when ctx ends.
//   - The callback's error, as is.
package salesforce

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"

	"github.com/oncesync/oncesync/shared/source"
	"github.com/oncesync/oncesync/shared/telemetry"
)

// Config configures a Client. Zero values mean the defaults.
type Config struct {
	BaseURL string // Salesforce instance URL, e.g. "https://acme.my.salesforce.com" (required)
	// Auth gives each request its access token, sent as "Authorization: Bearer …", and a new one
	// when a session has ended (OAuth); Token is a fixed one (StaticToken). One is required.
	Auth        Auth
	Token       string
	APIVersion  string        // REST API version; default "v60.0"
	PageSize    int           // records per page asked for (Sforce-Query-Options batchSize), 200..2000; default 2000
	Timeout     time.Duration // deadline of one request, body included; default 60s
	MaxAttempts int           // attempts per page before a transient failure is returned; default 6
	MinBackoff  time.Duration // first retry delay (before jitter); default 500ms
	MaxBackoff  time.Duration // longest retry delay (before Retry-After); default 30s
	HTTPClient  *http.Client  // default: a client with no overall timeout (each request has its own)
	// Sleep waits d or until ctx ends (returning ctx's error); tests inject one that does not
	// wait. Default: a real timer.
	Sleep func(ctx context.Context, d time.Duration) error
}

// Limits are Salesforce's: the query API's batchSize is 200..2000 records a page, and an org runs
// at most 10 long-running (over 20 s) queries at once, shared with its other integrations.
var Limits = source.Limits{MinPageSize: 200, MaxPageSize: 2000, MaxConcurrentSearches: 10}

// Defaults.
const (
	DefaultAPIVersion  = "v60.0"
	DefaultPageSize    = 2000
	DefaultTimeout     = 60 * time.Second
	DefaultMaxAttempts = 6
	DefaultMinBackoff  = 500 * time.Millisecond
	DefaultMaxBackoff  = 30 * time.Second
)

var apiVersion = regexp.MustCompile(`^v[0-9]{1,3}\.[0-9]$`)

// Validate reports settings that cannot work.
func (c Config) Validate() error {
	var errs []error
	if u, err := url.Parse(c.BaseURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" ||
		u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		errs = append(errs, fmt.Errorf("salesforce: base URL %q is not an http(s) URL with a host and no query", c.BaseURL))
	}
	if c.Token == "" && c.Auth == nil {
		errs = append(errs, errors.New("salesforce: no token and no auth"))
	}
	if c.APIVersion != "" && !apiVersion.MatchString(c.APIVersion) {
		errs = append(errs, fmt.Errorf("salesforce: API version %q is not like %q", c.APIVersion, DefaultAPIVersion))
	}
	if c.PageSize != 0 && (c.PageSize < Limits.MinPageSize || c.PageSize > Limits.MaxPageSize) {
		errs = append(errs, fmt.Errorf("salesforce: page size %d outside Salesforce's %d..%d", c.PageSize, Limits.MinPageSize, Limits.MaxPageSize))
	}
	if c.Timeout < 0 || c.MaxAttempts < 0 || c.MinBackoff < 0 || c.MaxBackoff < 0 {
		errs = append(errs, errors.New("salesforce: timeout, attempts and backoffs must not be negative"))
	}
	if c.MinBackoff > 0 && c.MaxBackoff > 0 && c.MinBackoff > c.MaxBackoff {
		errs = append(errs, fmt.Errorf("salesforce: min backoff %v exceeds max backoff %v", c.MinBackoff, c.MaxBackoff))
	}
	return errors.Join(errs...)
}

func (c Config) withDefaults() Config {
	if c.Auth == nil {
		c.Auth = StaticToken(c.Token)
	}
	if c.APIVersion == "" {
		c.APIVersion = DefaultAPIVersion
	}
	if c.PageSize == 0 {
		c.PageSize = DefaultPageSize
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = DefaultMinBackoff
		if c.MaxBackoff > 0 {
			c.MinBackoff = min(DefaultMinBackoff, c.MaxBackoff)
		}
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = max(DefaultMaxBackoff, c.MinBackoff)
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{}
	}
	if c.Sleep == nil {
		c.Sleep = sleep
	}
	return c
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

var _ source.Source = (*Client)(nil)

// Client searches one Salesforce org. It is safe for concurrent use.
type Client struct {
	cfg         Config
	base        string // BaseURL without a trailing slash
	queryURL    string
	queryAllURL string // the query resource that also returns deleted records
	limitsURL   string
}

// New returns a Client for cfg, after validating it.
func New(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	base := strings.TrimRight(cfg.BaseURL, "/")
	api := base + "/services/data/" + cfg.APIVersion
	return &Client{cfg: cfg, base: base, queryURL: api + "/query", queryAllURL: api + "/queryAll", limitsURL: api + "/limits"}, nil
}

// resource is the query resource q is sent to: queryAll when it asks for deleted records.
func (c *Client) resource(q source.Query) string {
	if q.Deleted {
		return c.queryAllURL
	}
	return c.queryURL
}

// maxBody bounds one response body; a full page of 2000 wide records is far below it.
const maxBody = 256 << 20

// Search runs q and calls fn with each page, in order, before fetching the next; fn is called
// for every page Salesforce returns, even an empty one, so at least once. See the package
// documentation for row checks and errors.
func (c *Client) Search(ctx context.Context, q source.Query, fn func(ctx context.Context, p source.Page) error) error {
	if err := ValidateQuery(q); err != nil {
		return fmt.Errorf("salesforce: search of %s: %w", q.Object, err)
	}
	q = normalized(q)
	chk := newChecker(q)
	next := c.resource(q) + "?q=" + url.QueryEscape(SOQL(q))
	for n := 1; ; n++ {
		pctx, span := telemetry.Start(ctx, "source page", attribute.Int("oncesync.source.page", n), attribute.String("oncesync.source.object", q.Object))
		res, usage, err := c.page(pctx, next)
		if res != nil {
			span.SetAttributes(attribute.Int("oncesync.source.rows", len(*res.Records)))
		}
		if usage.Known() {
			span.SetAttributes(attribute.Int("oncesync.source.api_used", usage.Used), attribute.Int("oncesync.source.api_limit", usage.Limit))
		}
		telemetry.End(span, err)
		if err != nil {
			return fmt.Errorf("salesforce: page %d of %s: %w", n, q.Object, err)
		}
		p := source.Page{Number: n, Usage: usage}
		for _, raw := range *res.Records {
			if rec, reason := chk.row(raw); reason != "" {
				p.Invalid = append(p.Invalid, source.Invalid{Raw: raw, Reason: reason, ID: rowID(raw)})
			} else {
				p.Records = append(p.Records, rec)
			}
		}
		if err := fn(ctx, p); err != nil {
			return err
		}
		if *res.Done {
			return nil
		}
		u, err := c.nextURL(res.NextRecordsURL, next)
		if err != nil {
			return fmt.Errorf("salesforce: page %d of %s: %w", n, q.Object, err)
		}
		next = u
	}
}

// Count measures q's window with one aggregate query (q.Fields and q.After are ignored). Errors
// are as Search's.
func (c *Client) Count(ctx context.Context, q source.Query) (source.Extent, error) {
	q.Fields, q.After = nil, nil
	if err := ValidateQuery(q); err != nil {
		return source.Extent{}, fmt.Errorf("salesforce: count of %s: %w", q.Object, err)
	}
	ctx, span := telemetry.Start(ctx, "source count", attribute.String("oncesync.source.object", q.Object))
	body, _, err := c.get(ctx, c.resource(q)+"?q="+url.QueryEscape(CountSOQL(q)))
	telemetry.End(span, err)
	if err != nil {
		return source.Extent{}, fmt.Errorf("salesforce: count of %s: %w", q.Object, err)
	}
	e, err := decodeExtent(body)
	if err != nil {
		return e, fmt.Errorf("salesforce: count of %s: %w", q.Object, err)
	}
	return e, nil
}

// decodeExtent decodes an aggregate result: one AggregateResult row with expr0 (the count), and
// expr1 and expr2 (the first and last stamps, null when nothing is counted).
func decodeExtent(body []byte) (source.Extent, error) {
	var res struct {
		Records []struct {
			Count *int    `json:"expr0"`
			First *string `json:"expr1"`
			Last  *string `json:"expr2"`
		} `json:"records"`
	}
	bad := func(why string) (source.Extent, error) {
		return source.Extent{}, permanentf("response is not an aggregate result: %s (body %q)", why, snippet(body))
	}
	if err := json.Unmarshal(body, &res); err != nil {
		return bad(err.Error())
	}
	if len(res.Records) != 1 || res.Records[0].Count == nil || *res.Records[0].Count < 0 {
		return bad("want one row with a count")
	}
	r := res.Records[0]
	e := source.Extent{Count: *r.Count}
	if e.Count == 0 {
		return e, nil
	}
	var err1, err2 error = errNoStamp, errNoStamp
	if r.First != nil && r.Last != nil {
		e.First, err1 = ParseTime(*r.First)
		e.Last, err2 = ParseTime(*r.Last)
	}
	if err1 != nil || err2 != nil || e.Last.Before(e.First) {
		return bad("no first and last stamp in order")
	}
	return e, nil
}

var errNoStamp = errors.New("no stamp")

var _ source.Counter = (*Client)(nil)

// queryResult is the body of a query response; pointers tell absent from empty.
type queryResult struct {
	Done           *bool              `json:"done"`
	NextRecordsURL string             `json:"nextRecordsUrl"`
	Records        *[]json.RawMessage `json:"records"`
}

// page fetches and decodes one page.
func (c *Client) page(ctx context.Context, u string) (*queryResult, source.Usage, error) {
	body, usage, err := c.get(ctx, u)
	if err != nil {
		return nil, usage, err
	}
	res, err := decodePage(body)
	return res, usage, err
}

var _ source.Budgeter = (*Client)(nil)

// Usage reads the org's daily API requests from the limits resource, which does not count
// against them. Errors are as Search's.
func (c *Client) Usage(ctx context.Context) (source.Usage, error) {
	body, _, err := c.get(ctx, c.limitsURL)
	if ae, ok := errors.AsType[*APIError](err); ok && ae.Status == http.StatusForbidden && ae.Code == "INSUFFICIENT_ACCESS" {
		// Not the search's fault: the connection's user lacks a permission a setting needs.
		return source.Usage{}, fmt.Errorf("salesforce: limits: the connection's user lacks the permission %q, which reading the org's API budget needs (a setting keeps an API reserve): %w: %w",
			"View Setup and Configuration", source.ErrDisconnected, err)
	}
	if err != nil {
		return source.Usage{}, fmt.Errorf("salesforce: limits: %w", err)
	}
	u, err := decodeLimits(body)
	if err != nil {
		return u, fmt.Errorf("salesforce: limits: %w", err)
	}
	return u, nil
}

// decodeLimits reads DailyApiRequests from a limits response.
func decodeLimits(body []byte) (source.Usage, error) {
	var res struct {
		Daily *struct {
			Max       *int `json:"Max"`
			Remaining *int `json:"Remaining"`
		} `json:"DailyApiRequests"`
	}
	if err := json.Unmarshal(body, &res); err != nil || res.Daily == nil || res.Daily.Max == nil || res.Daily.Remaining == nil ||
		*res.Daily.Max <= 0 || *res.Daily.Remaining < 0 {
		return source.Usage{}, permanentf("response is not a limits result with DailyApiRequests Max and Remaining (body %q)", snippet(body))
	}
	return source.Usage{Used: max(*res.Daily.Max-*res.Daily.Remaining, 0), Limit: *res.Daily.Max}, nil
}

// limitInfo reads "api-usage=N/M" from a Sforce-Limit-Info header ("api-usage=18/15000",
// possibly with per-app parts after a comma); the zero Usage when there is none.
func limitInfo(h string) source.Usage {
	for part := range strings.SplitSeq(h, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || !strings.EqualFold(k, "api-usage") {
			continue
		}
		used, limit, ok := strings.Cut(v, "/")
		n, err1 := strconv.Atoi(strings.TrimSpace(used))
		m, err2 := strconv.Atoi(strings.TrimSpace(limit))
		if ok && err1 == nil && err2 == nil && n >= 0 && m > 0 {
			return source.Usage{Used: n, Limit: m}
		}
	}
	return source.Usage{}
}

// decodePage decodes one query response body.
func decodePage(body []byte) (*queryResult, error) {
	var res queryResult
	if err := json.Unmarshal(body, &res); err != nil {
		return nil, permanentf("response is not a query result: %v (body %q)", err, snippet(body))
	}
	switch {
	case res.Done == nil || res.Records == nil:
		return nil, permanentf("response is not a query result: no done flag or records array (body %q)", snippet(body))
	case !*res.Done && res.NextRecordsURL == "":
		return nil, permanentf("response is not done but has no nextRecordsUrl")
	}
	return &res, nil
}

// nextURL resolves nextRecordsUrl, a path relative to the base URL. Anything that would leave
// the instance (and take the token with it) is refused.
func (c *Client) nextURL(next, current string) (string, error) {
	u, err := url.Parse(next)
	if err != nil || !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || u.Scheme != "" || u.Host != "" {
		return "", permanentf("nextRecordsUrl %q is not a path on the instance", next)
	}
	abs := c.base + next
	if abs == current {
		return "", permanentf("nextRecordsUrl %q repeats the page just read", next)
	}
	return abs, nil
}

// get fetches u, retrying transient failures with exponential backoff and jitter. It returns the
// API usage the last answer reported.
func (c *Client) get(ctx context.Context, u string) (body []byte, usage source.Usage, err error) {
	renewed := false // a refused session was replaced once for this request
	for attempt := 1; ; attempt++ {
		var token string
		body, usage, token, err = c.once(ctx, u)
		if err == nil {
			return body, usage, nil
		}
		if ae, ok := errors.AsType[*APIError](err); ok && ae.Status == http.StatusUnauthorized && ae.Code == "INVALID_SESSION_ID" {
			// The session ended (timeout, revocation, password change): one fresh token, and the
			// request again at once; refused again right after a fresh token, the connection is
			// broken, not the session.
			if !renewed && c.cfg.Auth.Refused(token) {
				renewed = true
				attempt--
				continue
			}
			if renewed {
				return nil, usage, fmt.Errorf("%w, right after a fresh token (%w)", err, source.ErrDisconnected)
			}
			return nil, usage, fmt.Errorf("%w (%w)", err, source.ErrDisconnected)
		}
		if source.IsDisconnected(err) {
			return nil, usage, err
		}
		if ctx.Err() != nil {
			return nil, usage, fmt.Errorf("%w (attempt %d: %v)", ctx.Err(), attempt, err)
		}
		var wait time.Duration
		var ae *APIError
		switch {
		case errors.As(err, &ae):
			switch classify(ae.Status, ae.Code) {
			case permanent, transient:
				return nil, usage, err
			}
			wait = ae.RetryAfter
		case errors.As(err, new(*attemptError)):
		default:
			return nil, usage, err
		}
		if attempt >= c.cfg.MaxAttempts {
			return nil, usage, fmt.Errorf("gave up after %d attempts: %w", attempt, err)
		}
		d := max(c.backoff(attempt), wait)
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
			return nil, usage, fmt.Errorf("gave up after %d attempts, the next in %v would be past the deadline: %w", attempt, d, err)
		}
		if serr := c.cfg.Sleep(ctx, d); serr != nil {
			return nil, usage, fmt.Errorf("%w (waiting to retry after attempt %d: %v)", serr, attempt, err)
		}
	}
}

// backoff returns the delay before attempt+1: MinBackoff doubled per attempt, capped at
// MaxBackoff, with "equal jitter" (a random point in its upper half).
func (c *Client) backoff(attempt int) time.Duration {
	d := c.cfg.MinBackoff
	for i := 1; i < attempt && d < c.cfg.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, c.cfg.MaxBackoff)
	half := d / 2
	return d - half + rand.N(half+1)
}

// once makes one request with its own deadline, carrying the token Auth gives now (returned, so
// that a refusal names the token refused).
func (c *Client) once(ctx context.Context, u string) ([]byte, source.Usage, string, error) {
	rctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	var usage source.Usage
	token, err := c.cfg.Auth.Token(rctx)
	if err != nil {
		if source.IsDisconnected(err) || source.IsPermanent(err) {
			return nil, usage, "", err
		}
		return nil, usage, "", &attemptError{err: err}
	}
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, usage, token, permanentf("request: %v", err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Sforce-Query-Options", "batchSize="+strconv.Itoa(c.cfg.PageSize))
	req.Header.Set("Accept", "application/json")
	resp, err := c.cfg.HTTPClient.Do(req)
	if err != nil {
		telemetry.MetricsFrom(ctx).SourceRequest(ctx, 0, 0, false)
		return nil, usage, token, c.attemptErr(rctx, stripURL(err))
	}
	defer resp.Body.Close()
	usage = limitInfo(resp.Header.Get("Sforce-Limit-Info"))
	telemetry.MetricsFrom(ctx).SourceRequest(ctx, resp.StatusCode, usage.Left(), usage.Known())
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return nil, usage, token, apiError(resp, body)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return nil, usage, token, c.attemptErr(rctx, fmt.Errorf("reading response: %w", err))
	}
	if len(body) > maxBody {
		return nil, usage, token, permanentf("response larger than %d bytes", maxBody)
	}
	return body, usage, token, nil
}

func (c *Client) attemptErr(rctx context.Context, err error) error {
	if errors.Is(rctx.Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("request timed out after %v: %w", c.cfg.Timeout, err)
	}
	return &attemptError{err: err}
}

// stripURL drops the request URL (the whole SOQL) from a transport error, keeping the cause.
func stripURL(err error) error {
	if ue, ok := errors.AsType[*url.Error](err); ok {
		return fmt.Errorf("%s: %w", ue.Op, ue.Err)
	}
	return err
}

// rowID is a row's Id, if it has one that reads as a string ("" otherwise).
func rowID(raw json.RawMessage) string {
	var r struct {
		ID any `json:"Id"`
	}
	if json.Unmarshal(raw, &r) != nil {
		return ""
	}
	id, _ := r.ID.(string)
	return id
}
