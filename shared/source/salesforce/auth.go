package salesforce

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/jwt"

	"github.com/oncesync/oncesync/shared/source"
)

// Auth gives each request the access token it carries, and a new one when Salesforce says a
// session has ended. A Salesforce access token is a session: it ends when the org's session
// timeout runs out (15 minutes to 24 hours, which the token answer does not say: it has no
// expires_in), or at once when it is revoked, the user's password changes or an admin logs the
// user out. So the client asks Token before every request — a long search never carries a token
// captured at its start — and tells Refused when an answer is 401 INVALID_SESSION_ID.
type Auth interface {
	// Token returns the token a request carries now. An error wrapping source.ErrDisconnected
	// means no token can be had until the connection is repaired.
	Token(ctx context.Context) (string, error)
	// Refused reports that token was refused as an ended session, and whether the next Token
	// may return another, so that the request is worth repeating once.
	Refused(token string) bool
}

// StaticToken is a fixed access token: a refused one cannot be replaced.
type StaticToken string

// Token implements Auth.
func (s StaticToken) Token(context.Context) (string, error) { return string(s), nil }

// Refused implements Auth.
func (StaticToken) Refused(string) bool { return false }

// RefreshTokens keeps one connection's refresh token. Exchange calls exchange with the latest
// refresh token, under the connection's refresher lease (one refresher per connection at a time,
// across every function instance), and when exchange returns a rotated refresh token, persists it
// before returning, so that it is stored before the access token that came with it is used.
type RefreshTokens interface {
	Exchange(ctx context.Context, exchange func(ctx context.Context, refreshToken string) (rotated string, err error)) error
}

// OAuthConfig configures an OAuth session source for one connection: the connected app's JWT
// bearer flow (server to server, no user session: Username and PrivateKey) or the refresh-token
// flow (after a user's web-server consent: Refresh).
type OAuthConfig struct {
	LoginURL string // https://login.salesforce.com, https://test.salesforce.com or a My Domain URL
	ClientID string // the connected app's consumer key
	// JWT bearer flow: the user the integration acts as, and the private key (PEM) of the
	// certificate uploaded to the connected app.
	Username   string
	PrivateKey []byte
	// Refresh-token flow: the consumer secret (if the app requires it) and the refresh token's
	// keeper.
	ClientSecret string
	Refresh      RefreshTokens
	// MaxAge: a token this old is refreshed before it is used (default 15 minutes, the shortest
	// session timeout an org can set); a refused one is refreshed at once.
	MaxAge time.Duration
	// Introspect asks the token introspection endpoint, after each refresh, when the token
	// expires (its exp: the only place Salesforce says so), and refreshes a minute (or a quarter
	// of a short token's life) before that too. Best effort: without an answer, MaxAge alone
	// decides.
	Introspect bool
	HTTPClient *http.Client     // default http.DefaultClient
	Now        func() time.Time // default time.Now
}

// OAuth is the Auth of one connection: its access token cached in memory, refreshed before
// MaxAge and once when refused. Safe for concurrent use; one refresh at a time.
type OAuth struct {
	cfg OAuthConfig

	mu       sync.Mutex
	token    string
	issued   time.Time
	expires  time.Time // from introspection; zero: unknown
	instance string
	stats    OAuthStats
}

// OAuthStats counts what an OAuth did.
type OAuthStats struct {
	Refreshes   int       // tokens obtained
	Refused     int       // tokens the source refused
	LastRefresh time.Time // when the current token was obtained
}

// NewOAuth returns an OAuth for cfg.
func NewOAuth(cfg OAuthConfig) (*OAuth, error) {
	var errs []error
	if u, err := url.Parse(cfg.LoginURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		errs = append(errs, fmt.Errorf("salesforce: login URL %q is not an http(s) URL", cfg.LoginURL))
	}
	if cfg.ClientID == "" {
		errs = append(errs, errors.New("salesforce: no client ID (the connected app's consumer key)"))
	}
	jwtFlow, refreshFlow := len(cfg.PrivateKey) > 0 || cfg.Username != "", cfg.Refresh != nil
	switch {
	case jwtFlow && refreshFlow:
		errs = append(errs, errors.New("salesforce: a JWT key and a refresh token: choose one flow"))
	case jwtFlow && (len(cfg.PrivateKey) == 0 || cfg.Username == ""):
		errs = append(errs, errors.New("salesforce: the JWT bearer flow needs a username and a private key"))
	case !jwtFlow && !refreshFlow:
		errs = append(errs, errors.New("salesforce: no credentials: a private key and username, or a refresh token"))
	}
	if cfg.MaxAge < 0 {
		errs = append(errs, errors.New("salesforce: max token age is negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	cfg.LoginURL = strings.TrimSuffix(cfg.LoginURL, "/")
	if cfg.MaxAge == 0 {
		cfg.MaxAge = 15 * time.Minute
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = http.DefaultClient
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &OAuth{cfg: cfg}, nil
}

// Token implements Auth.
func (o *OAuth) Token(ctx context.Context) (string, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	now := o.cfg.Now()
	if o.token != "" && now.Sub(o.issued) < o.cfg.MaxAge && (o.expires.IsZero() || now.Before(o.expires)) {
		return o.token, nil
	}
	return o.refresh(ctx)
}

// Refused implements Auth: the refused token is dropped (unless a newer one replaced it already),
// and the next Token gets a fresh one.
func (o *OAuth) Refused(token string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.stats.Refused++
	if token == o.token {
		o.token = ""
	}
	return true
}

// Instance returns the instance URL the last token answer named ("" before the first).
func (o *OAuth) Instance() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.instance
}

// Stats returns what o did so far.
func (o *OAuth) Stats() OAuthStats {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.stats
}

// refresh gets a new access token; o.mu is held.
func (o *OAuth) refresh(ctx context.Context) (string, error) {
	ctx = context.WithValue(ctx, oauth2.HTTPClient, o.cfg.HTTPClient)
	tokenURL := o.cfg.LoginURL + "/services/oauth2/token"
	var t *oauth2.Token
	var err error
	if o.cfg.Refresh == nil {
		c := jwt.Config{Email: o.cfg.ClientID, Subject: o.cfg.Username, PrivateKey: o.cfg.PrivateKey, TokenURL: tokenURL,
			Audience: o.cfg.LoginURL, Expires: 3 * time.Minute}
		t, err = c.TokenSource(ctx).Token()
	} else {
		c := oauth2.Config{ClientID: o.cfg.ClientID, ClientSecret: o.cfg.ClientSecret,
			Endpoint: oauth2.Endpoint{TokenURL: tokenURL, AuthStyle: oauth2.AuthStyleInParams}}
		err = o.cfg.Refresh.Exchange(ctx, func(ctx context.Context, rt string) (string, error) {
			if rt == "" {
				return "", fmt.Errorf("salesforce: no refresh token is stored: %w", source.ErrDisconnected)
			}
			var xerr error
			t, xerr = c.TokenSource(ctx, &oauth2.Token{RefreshToken: rt}).Token()
			if xerr != nil {
				return "", tokenError(xerr)
			}
			if t.RefreshToken != "" && t.RefreshToken != rt {
				return t.RefreshToken, nil
			}
			return "", nil
		})
	}
	if err != nil {
		return "", tokenError(err)
	}
	if t.AccessToken == "" {
		return "", fmt.Errorf("salesforce: the token answer has no access_token: %w", source.ErrPermanent)
	}
	o.token, o.issued, o.expires = t.AccessToken, o.cfg.Now(), time.Time{}
	if inst, ok := t.Extra("instance_url").(string); ok && inst != "" {
		o.instance = inst
	}
	if o.cfg.Introspect {
		if life, ok := o.introspect(ctx, t.AccessToken); ok {
			// Refreshed a minute before it expires, or a quarter of its life for a short one. The
			// life is Salesforce's (exp − iat), counted on this clock from the answer: a clock
			// skewed from Salesforce's neither refreshes at every request nor trusts a dead token.
			o.expires = o.issued.Add(life - min(time.Minute, life/4))
		}
	}
	o.stats.Refreshes++
	o.stats.LastRefresh = o.issued
	return o.token, nil
}

// introspect asks how long token lives: POST /services/oauth2/introspect, answered with its exp
// and iat (seconds since the epoch) while it is active. Without iat, the life is counted from
// this clock's now.
func (o *OAuth) introspect(ctx context.Context, token string) (time.Duration, bool) {
	form := url.Values{"token": {token}, "token_type_hint": {"access_token"}, "client_id": {o.cfg.ClientID}}
	if o.cfg.ClientSecret != "" {
		form.Set("client_secret", o.cfg.ClientSecret)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, o.cfg.LoginURL+"/services/oauth2/introspect", strings.NewReader(form.Encode()))
	if err != nil {
		return 0, false
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := o.cfg.HTTPClient.Do(req)
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	var ans struct {
		Active bool  `json:"active"`
		Exp    int64 `json:"exp"`
		Iat    int64 `json:"iat"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&ans) != nil || !ans.Active || ans.Exp <= 0 {
		return 0, false
	}
	from := o.issued.Unix()
	if ans.Iat > 0 && ans.Iat <= ans.Exp {
		from = ans.Iat
	}
	life := time.Duration(ans.Exp-from) * time.Second
	if life <= 0 {
		return 0, false
	}
	return life, true
}

// tokenError maps a token endpoint's refusal to what it means for the connection, keeping
// Salesforce's error code and description and never the request (which holds the credential).
func tokenError(err error) error {
	if errors.Is(err, source.ErrDisconnected) || errors.Is(err, source.ErrPermanent) {
		return err
	}
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) {
		return fmt.Errorf("salesforce: token endpoint: %v", redact(err)) // network: transient
	}
	code, desc := re.ErrorCode, re.ErrorDescription
	if code == "" {
		e := apiError(re.Response, re.Body)
		code, desc = e.Code, e.Message
	}
	status := 0
	if re.Response != nil {
		status = re.Response.StatusCode
	}
	if status == http.StatusTooManyRequests || status >= 500 {
		return fmt.Errorf("salesforce: token endpoint: HTTP %d %s: %s", status, code, desc)
	}
	// invalid_grant (consent revoked, user deactivated, app removed, an expired or rotated
	// refresh token, a rejected assertion), invalid_client_id, invalid_client…
	return fmt.Errorf("salesforce: token refused: %s: %s: %w", code, desc, source.ErrDisconnected)
}

// redact keeps a transport error's cause without its URL.
func redact(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
