package scheduler

import (
	"testing"
	"time"

	"github.com/oncesync/oncesync/shared/delivery"
	"github.com/oncesync/oncesync/shared/idem"
)

// FuzzDecode: any tick data (Cloud Scheduler's body is free text) decodes to a tick with an ID and
// a time, or is poison; the same data always gives the same tick key, so a redelivered tick is the
// same tick.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{``, `{}`, `{"tickId":"t1","at":"2026-01-01T00:00:00Z"}`, `{"at":"not a time"}`, `null`, `  `, `tick`, `{"tickId":""}`} {
		f.Add([]byte(s), true)
	}
	published := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, data []byte, hasPublishTime bool) {
		m := delivery.Message{ID: "m1", Data: data}
		if hasPublishTime {
			m.PublishTime = published
		}
		tick, err := decode(m)
		if err != nil {
			if !delivery.IsPermanent(err) {
				t.Fatalf("%q: error %v is not poison", data, err)
			}
			return
		}
		if tick.TickID == "" || tick.At.IsZero() {
			t.Fatalf("%q: decoded %+v", data, tick)
		}
		again, err := decode(m)
		if err != nil || idem.TickKey(again.TickID).DocID() != idem.TickKey(tick.TickID).DocID() || !again.At.Equal(tick.At) {
			t.Fatalf("%q: decoded twice, %+v and %+v (%v)", data, tick, again, err)
		}
	})
}
