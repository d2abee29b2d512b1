package bus_test

import (
	"testing"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/oncesync/oncesync/shared/bus"
	"github.com/oncesync/oncesync/shared/model"
)

func TestPublishCarriesRoutingAttributes(t *testing.T) {
	ctx := t.Context()
	srv := pstest.NewServer()
	t.Cleanup(func() { srv.Close() })
	conn, err := grpc.NewClient(srv.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	c, err := pubsub.NewClient(ctx, "p", option.WithGRPCConn(conn))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.TopicAdminClient.CreateTopic(ctx, &pubsubpb.Topic{Name: "projects/p/topics/chunks"}); err != nil {
		t.Fatal(err)
	}
	p := bus.New(c)
	defer p.Close()
	job := model.Job{ID: "j1", TenantID: "acme"}
	ids, err := p.Publish(ctx, "chunks", bus.Chunk(job, 3), bus.Expand(job))
	if err != nil || len(ids) != 2 {
		t.Fatalf("ids %v, err %v", ids, err)
	}
	msgs := srv.Messages()
	if len(msgs) != 2 {
		t.Fatalf("%d messages", len(msgs))
	}
	if got := string(msgs[0].Data); got != `{"tenantId":"acme","jobId":"j1","chunk":3}` {
		t.Errorf("chunk body %s", got)
	}
	if a := msgs[0].Attributes; a["tenant"] != "acme" || a["job"] != "j1" || a["chunk"] != "3" {
		t.Errorf("chunk attributes %v", a)
	}
	if _, err := p.Publish(ctx, "", bus.Expand(job)); err == nil {
		t.Error("empty topic accepted")
	}
}
