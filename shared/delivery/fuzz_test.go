package delivery_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"unicode/utf8"

	"github.com/oncesync/oncesync/shared/delivery"
)

// FuzzHTTPFront posts arbitrary headers and bodies to the HTTP front. Whatever arrives is either
// handed to the handler as a message with an ID, or dead-lettered with a known reason and an ID —
// exactly one of the two — and answered 200: no input ends in an endless retry or a 4xx.
func FuzzHTTPFront(f *testing.F) {
	ok := `{"message":{"data":"e30=","messageId":"m1","publishTime":"2026-01-01T00:00:00Z"},"subscription":"projects/p/subscriptions/s"}`
	src := "//pubsub.googleapis.com/projects/p/topics/t"
	typ := "google.cloud.pubsub.topic.v1.messagePublished"
	f.Add("1.0", "m1", src, typ, "application/json", []byte(ok))
	f.Add("", "m1", src, typ, "application/json", []byte(ok))
	f.Add("1.0", "m1", "", typ, "application/json", []byte(ok))
	f.Add("1.0", "", src, "", "application/json", []byte(`not json`))
	f.Add("", "", "", "", "application/cloudevents+json", []byte(`{"specversion":"1.0","id":"1","source":"s","type":"t","data":{}}`))
	f.Add("", "", "", "", "", []byte(ok))
	f.Add("", "", "", "", "", []byte(`{"message":{"messageId":""}}`))
	f.Add("0.3", "m2", src, typ, "text/plain", []byte{0xff, 0xfe})
	reasons := []string{delivery.ReasonMalformedCloudEvent, delivery.ReasonMalformedPush, delivery.ReasonOversizedBody, "malformed_event", "retries_exhausted"}
	f.Fuzz(func(t *testing.T, spec, id, source, typ, ctype string, body []byte) {
		s := &sink{}
		var handled []delivery.Message
		var log bytes.Buffer
		h := gate(s, &log).HTTP(func(_ context.Context, m delivery.Message) error {
			handled = append(handled, m)
			return nil
		})
		r := httptest.NewRequest(http.MethodPost, "/Expander", bytes.NewReader(body))
		for k, v := range map[string]string{"Ce-Specversion": spec, "Ce-Id": id, "Ce-Source": source, "Ce-Type": typ, "Content-Type": ctype} {
			if v != "" && utf8.ValidString(v) && !bytes.ContainsAny([]byte(v), "\r\n\x00") {
				r.Header.Set(k, v)
			}
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != http.StatusOK {
			t.Fatalf("answered %d %q", w.Code, w.Body.String())
		}
		switch {
		case len(handled)+len(s.got) != 1:
			t.Fatalf("handled %d, dead-lettered %d: want exactly one of the two", len(handled), len(s.got))
		case len(handled) == 1 && handled[0].ID == "":
			t.Fatalf("handled a message without an ID: %+v", handled[0])
		case len(s.got) == 1 && (s.got[0].ID == "" || len(s.got[0].ID) > 1500 || !slices.Contains(reasons, s.got[0].Reason)):
			t.Fatalf("dead letter %q with reason %q", s.got[0].ID, s.got[0].Reason)
		}
	})
}
