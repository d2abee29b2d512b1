package emu

import (
	"context"
	"fmt"
	"math"
	"net"

	"cloud.google.com/go/firestore"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// FreePort returns a TCP port of 127.0.0.1 that is free now.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// DialFirestore returns a Firestore client of project and database on the emulator at host,
// dialed the way the Firestore client dials it when FIRESTORE_EMULATOR_HOST is set (one
// connection, owner credentials, no message size limit), with the given interceptors on every
// call: the simulator's fault injection, the benchmark's meter.
func DialFirestore(ctx context.Context, host, project, database string, unary grpc.UnaryClientInterceptor, stream grpc.StreamClientInterceptor) (*firestore.Client, error) {
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(ownerCreds{}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(math.MaxInt32), grpc.MaxCallSendMsgSize(math.MaxInt32)),
	}
	if unary != nil {
		opts = append(opts, grpc.WithChainUnaryInterceptor(unary))
	}
	if stream != nil {
		opts = append(opts, grpc.WithChainStreamInterceptor(stream))
	}
	conn, err := grpc.NewClient(host, opts...)
	if err != nil {
		return nil, fmt.Errorf("emu: dial firestore emulator: %w", err)
	}
	c, err := firestore.NewClientWithDatabase(ctx, project, database, option.WithGRPCConn(conn))
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("emu: firestore client: %w", err)
	}
	return c, nil
}

// ownerCreds is what the Firestore client sends the emulator: the owner, who may do anything.
type ownerCreds struct{}

func (ownerCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer owner"}, nil
}
func (ownerCreds) RequireTransportSecurity() bool { return false }
