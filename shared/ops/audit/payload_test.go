package audit

import "testing"

func TestPayloadSummary(t *testing.T) {
	for _, tc := range []struct{ data, want string }{
		{``, "(empty)"},
		{`{"tenantId":"acme","jobId":"j1","chunk":3}`, "tenantId=acme jobId=j1 chunk=3"},
		{`{"attributes":{"type":"Contact"},"Id":"","SystemModstamp":"2025-12-31T12:00:00.000+0000","Name":"no id"}`,
			`Id="" SystemModstamp=2025-12-31T12:00:00.000+0000 Name="no id"`},
		{`{"a":1,"b":2,"c":3,"d":4,"e":5}`, "a=1 b=2 c=3 +2 fields"},
		{`not json`, `"not json"`},
		{"\x00\x01\x02", "3 bytes of binary data"},
	} {
		if got := payloadSummary([]byte(tc.data)); got != tc.want {
			t.Errorf("payloadSummary(%q) = %q, want %q", tc.data, got, tc.want)
		}
	}
}

func TestDupPhrase(t *testing.T) {
	for _, tc := range []struct {
		n, inProgress int
		want          string
	}{
		{1, 1, "duplicate delivery suppressed (sent back: the work was in progress)"},
		{1, 0, "duplicate delivery suppressed (acked: the work was done)"},
		{3, 2, "the last of 3 duplicate deliveries suppressed (2 sent back: the work was in progress)"},
	} {
		if got := dupPhrase(tc.n, tc.inProgress); got != tc.want {
			t.Errorf("dupPhrase(%d, %d) = %q, want %q", tc.n, tc.inProgress, got, tc.want)
		}
	}
}
