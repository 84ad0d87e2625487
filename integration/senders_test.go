package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/setflow/setflow/ingress"
)

// kakaoSenders offers events to the ingress at a steady rate until they run
// out or it is stopped. Its senders behave like Kakao's: they retry
// connection errors and 5xx answers for 90 s with a growing pause, and count
// only a 2xx as accepted. There are several senders, so that the retries
// during an outage do not slow the offered load.
type kakaoSenders struct {
	accepted  atomic.Int64
	retries   atomic.Int64
	sent      atomic.Int64 // events taken from the pool
	exhausted atomic.Bool  // every event was offered
	mu        sync.Mutex
	ok        []chaosEvent
	rejected  []string
	quit      chan struct{}
	quitOnce  sync.Once
	done      chan struct{}
}

// startKakaoSenders offers events at perSecond through senders senders.
func startKakaoSenders(baseURL string, events []chaosEvent, perSecond float64, senders int) *kakaoSenders {
	l := &kakaoSenders{quit: make(chan struct{}), done: make(chan struct{})}
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: senders, DisableCompression: true}}
	jobs := make(chan chaosEvent)
	go func() {
		defer close(jobs)
		tick := time.NewTicker(time.Duration(float64(time.Second) / perSecond))
		defer tick.Stop()
		for _, e := range events {
			select {
			case <-l.quit:
				return
			case <-tick.C:
			}
			select {
			case <-l.quit:
				return
			case jobs <- e:
				l.sent.Add(1)
			}
		}
		l.exhausted.Store(true)
	}()
	var wg sync.WaitGroup
	for range senders {
		wg.Go(func() {
			for e := range jobs {
				l.send(hc, baseURL, e)
			}
		})
	}
	go func() { wg.Wait(); hc.CloseIdleConnections(); close(l.done) }()
	return l
}

func (l *kakaoSenders) send(hc *http.Client, baseURL string, e chaosEvent) {
	deadline := time.Now().Add(90 * time.Second)
	backoff := 50 * time.Millisecond
	for {
		status, err := chaosPost(hc, baseURL, e)
		switch {
		case err == nil && status/100 == 2:
			l.accepted.Add(1)
			l.mu.Lock()
			l.ok = append(l.ok, e)
			l.mu.Unlock()
			return
		case err == nil && status < 500:
			l.reject(fmt.Sprintf("%s: %d", e.key, status))
			return
		}
		l.retries.Add(1)
		if time.Now().After(deadline) {
			l.reject(fmt.Sprintf("%s: gave up (%v, %d)", e.key, err, status))
			return
		}
		time.Sleep(backoff)
		backoff = min(2*backoff, time.Second)
	}
}

func (l *kakaoSenders) reject(why string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rejected = append(l.rejected, why)
}

// chaosPost delivers one event once and drains the answer.
func chaosPost(hc *http.Client, baseURL string, e chaosEvent) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var req *http.Request
	var err error
	if e.token != "" {
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, baseURL+ingress.PathAccountStatus, strings.NewReader(e.token))
		if err == nil {
			req.Header.Set("Content-Type", ingress.SETContentType)
		}
	} else {
		req, err = e.hook.Request(ctx, baseURL)
	}
	if err != nil {
		return 0, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// stop ends the offer; deliveries in flight go on until answered.
func (l *kakaoSenders) stop() { l.quitOnce.Do(func() { close(l.quit) }) }

// wait waits for the senders to finish their last delivery.
func (l *kakaoSenders) wait(t *testing.T) {
	t.Helper()
	select {
	case <-l.done:
	case <-time.After(2 * time.Minute):
		t.Fatal("senders did not finish")
	}
}

func (l *kakaoSenders) offered() int { return int(l.sent.Load()) }

// waitAccepted waits until n events in all are accepted.
func (l *kakaoSenders) waitAccepted(t *testing.T, n int64) {
	t.Helper()
	eventually(t, 2*time.Minute, fmt.Sprintf("%d accepted events", n), func() bool { return l.accepted.Load() >= n })
}

// waitMore waits for n more accepted events.
func (l *kakaoSenders) waitMore(t *testing.T, n int64) {
	t.Helper()
	l.waitAccepted(t, l.accepted.Load()+n)
}

// result is the accepted events and why the others were not.
func (l *kakaoSenders) result() ([]chaosEvent, []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]chaosEvent(nil), l.ok...), append([]string(nil), l.rejected...)
}
