package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	commonpb "go.temporal.io/api/common/v1"
	"go.temporal.io/sdk/converter"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/setflow/setflow/codec"
	"github.com/setflow/setflow/config"
	"github.com/setflow/setflow/internal/testenv"
)

// The codec server serves its own metrics: an operator sees callers refused
// for want of the token, and payloads of a key its ring lacks (a rotation
// that dropped a key too early), by operation and status.
func TestCodecServerCountsItsAnswers(t *testing.T) {
	key := func(b byte) string { return base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{b}, 32)) }
	t.Setenv(config.EnvCodecKeys, "current:"+key(1))
	t.Setenv(config.EnvCodecAuthToken, "codec-metrics-token")
	t.Setenv("SETFLOW_LOG_LEVEL", "error")
	listen := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	metricsAt := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runCodecServer(ctx, []string{"-listen", listen, "-metrics-listen", metricsAt}) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("codec server: %v", err)
		}
	})
	waitHTTP(t, "http://"+listen+"/healthz")
	waitHTTP(t, "http://"+metricsAt+"/metrics")

	call := func(path, token string, payloads []*commonpb.Payload) int {
		t.Helper()
		body, err := protojson.Marshal(&commonpb.Payloads{Payloads: payloads})
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest(http.MethodPost, "http://"+listen+path, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	plain, err := converter.GetDefaultDataConverter().ToPayload("payload")
	if err != nil {
		t.Fatal(err)
	}
	retired, err := codec.ParseKeyRing("retired:" + key(2))
	if err != nil {
		t.Fatal(err)
	}
	old, err := codec.New(retired).Encode([]*commonpb.Payload{plain})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path, token string
		payloads    []*commonpb.Payload
		want        int
	}{
		{"/decode", "", nil, http.StatusUnauthorized},
		{"/decode", "wrong-token", nil, http.StatusUnauthorized},
		{"/encode", "codec-metrics-token", []*commonpb.Payload{plain}, http.StatusOK},
		{"/decode", "codec-metrics-token", old, http.StatusBadRequest},
	} {
		if got := call(c.path, c.token, c.payloads); got != c.want {
			t.Fatalf("%s with token %q: %d, want %d", c.path, c.token, got, c.want)
		}
	}

	resp, err := http.Get("http://" + metricsAt + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	scraped, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`setflow_codec_requests_total{op="decode",status="401"} 2`,
		`setflow_codec_requests_total{op="encode",status="200"} 1`,
		`setflow_codec_requests_total{op="decode",status="400"} 1`,
	} {
		if !strings.Contains(string(scraped), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// waitHTTP waits until u answers 200.
func waitHTTP(t *testing.T, u string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(u)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer 200: %v", u, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
