package salesforce_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/oncesync/oncesync/shared/source"
	"github.com/oncesync/oncesync/shared/source/salesforce"
)

// A search over January 2024, one page at a time; a real client points BaseURL at the
// Salesforce instance. The second row is bad source data: it is reported, not returned.
func ExampleClient_Search() {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"totalSize":2,"done":true,"records":[
			{"attributes":{"type":"Contact"},"Id":"0038d00000AbCdEAAV","SystemModstamp":"2024-01-05T10:00:00.000+0000","Email":"ada@example.com"},
			{"attributes":{"type":"Contact"},"Id":"0038d00000AbCdFAAV","SystemModstamp":"yesterday","Email":"alan@example.com"}]}`)
	}))
	defer srv.Close()

	c, err := salesforce.New(salesforce.Config{BaseURL: srv.URL, Token: "00D…"})
	if err != nil {
		panic(err)
	}
	q := source.Query{
		Object: "Contact",
		Fields: []string{"Email"},
		From:   time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC),
		To:     time.Date(2024, 2, 1, 0, 0, 0, 0, time.UTC),
	}
	fmt.Println(salesforce.SOQL(q))
	err = c.Search(context.Background(), q, func(ctx context.Context, p source.Page) error {
		for _, r := range p.Records {
			fmt.Println("record", r.ID, r.Modstamp.Format(time.RFC3339), r.Fields["Email"])
		}
		for _, bad := range p.Invalid {
			fmt.Println("invalid:", bad.Reason)
		}
		return nil
	})
	fmt.Println("error:", err, "permanent:", source.IsPermanent(err))
	// Output:
	// SELECT Id, SystemModstamp, Email FROM Contact WHERE SystemModstamp >= 2024-01-01T00:00:00.000Z AND SystemModstamp < 2024-02-01T00:00:00.000Z ORDER BY SystemModstamp, Id
	// record 0038d00000AbCdEAAV 2024-01-05T10:00:00Z ada@example.com
	// invalid: unparsable SystemModstamp "yesterday"
	// error: <nil> permanent: false
}
