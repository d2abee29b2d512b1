package importer

import (
	"encoding/json"
	"testing"

	"github.com/oncesync/oncesync/shared/delivery"
	"github.com/oncesync/oncesync/shared/idem"
)

// FuzzDecode: any message data decodes to a chunk message with its IDs and an index >= 0, or is
// poison; a decoded message encodes back to one with the same key and payload hash.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{`{"tenantId":"acme","jobId":"j1","chunk":3}`, `{"tenantId":"acme","jobId":"j1","chunk":-1}`, `{"tenantId":"acme","jobId":"j1","chunk":1.5}`,
		`{"tenantId":"acme","jobId":"j1","chunk":99999999999999999999}`, `null`, `not json`, `{"jobId":"j","tenantId":"t"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cm, err := decode(delivery.Message{ID: "m", Data: data})
		if err != nil {
			if !delivery.IsPermanent(err) {
				t.Fatalf("%q: error %v is not poison", data, err)
			}
			return
		}
		if cm.JobID == "" || cm.TenantID == "" || cm.Chunk < 0 {
			t.Fatalf("%q: decoded %+v", data, cm)
		}
		again, err := json.Marshal(cm)
		if err != nil {
			t.Fatal(err)
		}
		cm2, err := decode(delivery.Message{ID: "m", Data: again})
		k1, k2 := idem.ChunkKey(cm.JobID, cm.Chunk).WithPayload(cm), idem.ChunkKey(cm2.JobID, cm2.Chunk).WithPayload(cm2)
		if err != nil || k1.DocID() != k2.DocID() || k1.Payload != k2.Payload {
			t.Fatalf("%q: round trip %+v -> %+v (%v)", data, cm, cm2, err)
		}
	})
}
