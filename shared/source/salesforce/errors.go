package salesforce

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/oncesync/oncesync/shared/source"
)

// APIError is an error response from the Salesforce REST API.
type APIError struct {
	Status     int           // HTTP status code
	Code       string        // Salesforce errorCode, e.g. "MALFORMED_QUERY"; empty if the body had none
	Message    string        // Salesforce's message, or the start of the body
	RetryAfter time.Duration // from the Retry-After header; 0 when absent
}

func (e *APIError) Error() string {
	s := "HTTP " + strconv.Itoa(e.Status)
	if e.Code != "" {
		s += " " + e.Code
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// Unwrap returns ErrPermanent when the status and errorCode make the failure permanent: every
// 4xx except 429, QUERY_TIMEOUT, REQUEST_LIMIT_EXCEEDED and INVALID_QUERY_LOCATOR.
func (e *APIError) Unwrap() error {
	if classify(e.Status, e.Code) == permanent {
		return source.ErrPermanent
	}
	return nil
}

// class is what to do about a failed request.
type class int

const (
	retry     class = iota // retry with backoff; transient once attempts run out
	transient              // do not retry now; transient (repeating the search later may work)
	permanent              // ErrPermanent
)

// classify maps an HTTP status and Salesforce errorCode to what to do about them. It is the one
// place provider errors are interpreted.
//
// 429 and 5xx are retried. Of the other 4xx, a few codes are not about the request itself:
// QUERY_TIMEOUT (a slow query) and REQUEST_LIMIT_EXCEEDED (403, API or concurrency limits) are
// retried, and INVALID_QUERY_LOCATOR (an expired nextRecordsUrl) is transient without a retry,
// since only a new search (resumed from the last key) can get past it. Everything else is
// permanent: MALFORMED_QUERY, INVALID_FIELD, INVALID_TYPE, INVALID_SESSION_ID (401), NOT_FOUND…
func classify(status int, code string) class {
	switch {
	case status == http.StatusTooManyRequests || status >= 500:
		return retry
	case code == "QUERY_TIMEOUT" || code == "REQUEST_LIMIT_EXCEEDED":
		return retry
	case code == "INVALID_QUERY_LOCATOR":
		return transient
	}
	return permanent
}

// apiError builds an APIError from a non-200 response and its body (Salesforce sends
// [{"message":"…","errorCode":"…"}]; OAuth endpoints and proxies send other shapes).
func apiError(resp *http.Response, body []byte) *APIError {
	e := &APIError{Status: resp.StatusCode, RetryAfter: retryAfter(resp.Header.Get("Retry-After"))}
	type sfError struct {
		Message   string `json:"message"`
		ErrorCode string `json:"errorCode"`
		Error     string `json:"error"`
		Desc      string `json:"error_description"`
	}
	var list []sfError
	var one sfError
	switch {
	case json.Unmarshal(body, &list) == nil && len(list) > 0:
		one = list[0]
		if len(list) > 1 {
			one.Message += fmt.Sprintf(" (and %d more errors)", len(list)-1)
		}
	case json.Unmarshal(body, &one) == nil:
	}
	switch {
	case one.ErrorCode != "" || one.Message != "":
		e.Code, e.Message = one.ErrorCode, one.Message
	case one.Error != "":
		e.Code, e.Message = one.Error, one.Desc
	default:
		e.Message = snippet(body)
		if e.Message == "" {
			e.Message = http.StatusText(resp.StatusCode)
		}
	}
	return e
}

// retryAfter parses a Retry-After header: delay seconds or an HTTP date.
func retryAfter(v string) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil {
		if n < 0 {
			return 0
		}
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(0, time.Until(t))
	}
	return 0
}

// snippet returns the start of body as one printable line, for error messages.
func snippet(body []byte) string {
	const limit = 200
	body = bytes.TrimSpace(body)
	cut := len(body) > limit
	if cut {
		body = body[:limit]
		for len(body) > 0 && !utf8.Valid(body) {
			body = body[:len(body)-1]
		}
	}
	s := strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == utf8.RuneError {
			return ' '
		}
		return r
	}, string(body))
	if cut {
		s += "…"
	}
	return s
}

// permanentError is a permanent failure that is not an API error (a bad response or query).
type permanentError struct{ msg string }

func (e *permanentError) Error() string { return e.msg }
func (e *permanentError) Unwrap() error { return source.ErrPermanent }

func permanentf(format string, args ...any) error {
	return &permanentError{msg: fmt.Sprintf(format, args...)}
}

// attemptError is a failed request that may be retried: a network error or a timeout.
type attemptError struct{ err error }

func (e *attemptError) Error() string { return e.err.Error() }
func (e *attemptError) Unwrap() error { return e.err }
