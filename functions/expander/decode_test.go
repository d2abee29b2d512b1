package expander

import (
	"encoding/json"
	"testing"

	"github.com/oncesync/oncesync/shared/delivery"
	"github.com/oncesync/oncesync/shared/idem"
)

// FuzzDecode: any message data decodes to an expand message with both IDs, or is poison (dead-
// lettered, never retried); a decoded message encodes back to one that decodes to the same key and
// payload hash, so a redelivery is recognized as the same work.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{`{"tenantId":"acme","jobId":"j1"}`, `{"tenantId":"acme"}`, `null`, `[]`, `{"tenantId":7}`, `not json`, `{"jobId":"a~b/c","tenantId":"\u0000"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		em, err := decode(delivery.Message{ID: "m", Data: data})
		if err != nil {
			if !delivery.IsPermanent(err) {
				t.Fatalf("%q: error %v is not poison", data, err)
			}
			return
		}
		if em.JobID == "" || em.TenantID == "" {
			t.Fatalf("%q: decoded %+v without its IDs", data, em)
		}
		again, err := json.Marshal(em)
		if err != nil {
			t.Fatal(err)
		}
		em2, err := decode(delivery.Message{ID: "m", Data: again})
		k1, k2 := idem.ExpandKey(em.JobID).WithPayload(em), idem.ExpandKey(em2.JobID).WithPayload(em2)
		if err != nil || k1.DocID() != k2.DocID() || k1.Payload != k2.Payload {
			t.Fatalf("%q: round trip %+v -> %+v (%v)", data, em, em2, err)
		}
	})
}
