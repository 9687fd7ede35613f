// A grpc-go client for test/grpc-interop.test.ts: grpc-go's HTTP/2 transport is what istio-agent
// speaks to its CA. It calls meshca's CreateCertificate with request bytes serialized by the test
// (a raw codec, so no generated protobuf code), and prints one JSON line per check.
//
// Usage: grpc-go-client <dir with ca.pem, token.txt, request.bin> <host:port> <idle seconds>
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io/ioutil"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

const method = "/istio.v1.auth.IstioCertificateService/CreateCertificate"

type rawCodec struct{}

func (rawCodec) Marshal(v interface{}) ([]byte, error) { return v.([]byte), nil }
func (rawCodec) Unmarshal(data []byte, v interface{}) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

type result struct {
	Check   string         `json:"check"`
	Code    string         `json:"code"`
	Message string         `json:"message,omitempty"`
	Counts  map[string]int `json:"counts,omitempty"`
	State   string         `json:"state,omitempty"`
}

func report(r result) {
	line, _ := json.Marshal(r)
	os.Stdout.Write(append(line, '\n'))
}

func main() {
	dir, addr := os.Args[1], os.Args[2]
	idle, _ := strconv.Atoi(os.Args[3])
	read := func(name string) []byte {
		b, err := ioutil.ReadFile(dir + "/" + name)
		if err != nil {
			panic(err)
		}
		return b
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(read("ca.pem"))
	token := strings.TrimSpace(string(read("token.txt")))
	request := read("request.bin")
	creds := credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "localhost"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	conn, err := grpc.DialContext(ctx, addr, grpc.WithTransportCredentials(creds), grpc.WithBlock())
	cancel()
	if err != nil {
		report(result{Check: "dial", Code: "error", Message: err.Error()})
		os.Exit(1)
	}
	defer conn.Close()
	call := func(body []byte, pairs ...string) ([]byte, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		ctx = metadata.AppendToOutgoingContext(ctx, pairs...)
		var response []byte
		err := conn.Invoke(ctx, method, body, &response, grpc.ForceCodec(rawCodec{}))
		return response, err
	}
	bearer := []string{"authorization", "Bearer " + token, "clusterid", "Kubernetes"}
	codeOf := func(err error) string { return status.Code(err).String() }

	// 200 calls at once on one connection: more than its SETTINGS_MAX_CONCURRENT_STREAMS, so grpc-go queues.
	var wg sync.WaitGroup
	var mu sync.Mutex
	counts := map[string]int{}
	var first []byte
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			response, err := call(request, bearer...)
			mu.Lock()
			defer mu.Unlock()
			counts[codeOf(err)]++
			if err == nil && first == nil {
				first = response
			}
		}()
	}
	wg.Wait()
	if first != nil {
		ioutil.WriteFile(dir+"/response.bin", first, 0o600)
	}
	report(result{Check: "concurrent", Code: "done", Counts: counts})

	_, err = call(request, "authorization", "Bearer not-a-token")
	report(result{Check: "bad token", Code: codeOf(err), Message: status.Convert(err).Message()})
	_, err = call([]byte{0x0a, 0x03, 'x', 'y', 'z'}, bearer...)
	report(result{Check: "bad csr", Code: codeOf(err), Message: status.Convert(err).Message()})
	_, err = call(make([]byte, 70000), bearer...)
	report(result{Check: "oversized message", Code: codeOf(err), Message: status.Convert(err).Message()})
	_, err = call(request, append(bearer, "x-pad", strings.Repeat("p", 12*1024))...)
	report(result{Check: "12 KiB of metadata", Code: codeOf(err)})
	var response []byte
	err = conn.Invoke(context.Background(), "/istio.v1.auth.IstioCertificateService/Nope", request, &response, grpc.ForceCodec(rawCodec{}))
	report(result{Check: "unknown method", Code: codeOf(err)})

	// The server sends GOAWAY after --max-connection-idle; grpc-go reconnects on the next call.
	time.Sleep(time.Duration(idle)*time.Second + 1500*time.Millisecond)
	_, err = call(request, bearer...)
	report(result{Check: "after the idle GOAWAY", Code: codeOf(err), State: conn.GetState().String()})
}
