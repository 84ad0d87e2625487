package integration

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/setflow/setflow/ingress"
	"github.com/setflow/setflow/simulator"
)

// BenchmarkIngressAccept measures the ingress alone (no Temporal): concurrent
// keep-alive clients POST distinct, pre-signed SETs; each 202 means the
// verified event is committed to the Postgres inbox. ns/op is wall time per
// accepted SET across all clients; sets/s is the accept rate.
//
//	go test ./integration -run '^$' -bench IngressAccept -benchtime 3s
func BenchmarkIngressAccept(b *testing.B) {
	const parallelism = 8 // clients per GOMAXPROCS
	s := newStack(b)

	b.StopTimer()
	tokens := signDistinct(b, s.Key, b.N)
	clients := parallelism * runtime.GOMAXPROCS(0)
	// database/sql keeps only 2 idle connections by default: the others would
	// be closed after every insert and reopened (a new Postgres backend each).
	s.DB.SetMaxOpenConns(clients)
	s.DB.SetMaxIdleConns(clients)
	c := &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			MaxIdleConns:        clients,
			MaxIdleConnsPerHost: clients, // keep-alive for every client
			DisableCompression:  true,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		},
	}
	b.Cleanup(c.CloseIdleConnections)
	url := s.Ingress.URL + ingress.PathAccountStatus
	var next atomic.Int64
	var failures atomic.Int64
	b.SetParallelism(parallelism)
	b.ReportAllocs()
	b.ResetTimer()
	b.StartTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			tok := tokens[next.Add(1)-1]
			req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(tok))
			if err != nil {
				b.Error(err)
				return
			}
			req.Header.Set("Content-Type", ingress.SETContentType)
			resp, err := c.Do(req)
			if err != nil {
				failures.Add(1)
				continue
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusAccepted {
				failures.Add(1)
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sets/s")

	if n := failures.Load(); n > 0 {
		b.Fatalf("%d of %d deliveries not accepted", n, b.N)
	}
	var rows int
	if err := s.DB.Get(&rows, `SELECT count(*) FROM setflow_inbox`); err != nil {
		b.Fatal(err)
	}
	if rows != b.N {
		b.Fatalf("%d accepted, %d rows committed", b.N, rows)
	}
}

// signDistinct signs n Kakao-shaped SETs with distinct jti on all cores.
func signDistinct(b *testing.B, key *simulator.Key, n int) []string {
	b.Helper()
	tokens := make([]string, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 1)
	now := time.Now()
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				claims, err := simulator.SET{Issuer: testIssuer, Audience: testAudience,
					UserID: fmt.Sprint(1_000_000 + i), EventType: "account-disabled",
					Fields: map[string]any{"reason": "hijacking"}, IssuedAt: now}.Claims()
				if err == nil {
					tokens[i], err = key.Sign(claims)
				}
				if err != nil {
					select {
					case errs <- err:
					default:
					}
					return
				}
			}
		})
	}
	wg.Wait()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
	return tokens
}
