package salesforce_test

import (
	"net/http/httptest"
	"testing"
	"time"

	"github.com/oncesync/oncesync/harness/fixture"
	"github.com/oncesync/oncesync/shared/source"
	"github.com/oncesync/oncesync/shared/source/salesforce"
	"github.com/oncesync/oncesync/shared/source/sourcetest"
)

// fixtureHarness is the fixture Salesforce (harness/fixture) as a sourcetest backend.
type fixtureHarness struct{ srv *fixture.Server }

func (h fixtureHarness) Put(object string, recs ...source.Record) {
	rows := make([]fixture.Row, len(recs))
	for i, r := range recs {
		rows[i] = fixture.Row{ID: r.ID, Modstamp: r.Modstamp, Fields: r.Fields, Deleted: r.Deleted}
	}
	h.srv.PutRecords(object, rows...)
}

func (h fixtureHarness) PutBad(object string, stamp time.Time) {
	h.srv.Put(object, []byte(`{"Name":"no id","SystemModstamp":"`+stamp.UTC().Format("2006-01-02T15:04:05.000+0000")+`"}`))
}

func (h fixtureHarness) PageSize() int { return 200 }

func (h fixtureHarness) Open(t *testing.T, pageSize int) source.Source {
	ts := httptest.NewServer(h.srv)
	t.Cleanup(ts.Close)
	c, err := salesforce.New(salesforce.Config{BaseURL: ts.URL, Token: "tok", PageSize: pageSize, MinBackoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestConformance holds the Salesforce connector to the source contract, against the fixture.
func TestConformance(t *testing.T) {
	sourcetest.Run(t, func(t *testing.T) sourcetest.Harness {
		return fixtureHarness{srv: fixture.New(fixture.Options{Token: "tok"})}
	})
}
