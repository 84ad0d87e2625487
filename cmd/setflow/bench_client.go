package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/setflow/setflow/ingress"
)

// setPoster is the bench's load generator: it POSTs SETs the way Kakao does
// (HTTP/1.1, keep-alive) over connections of its own. net/http's client
// spends about as much CPU per request as the server it measures (a reader
// and a writer goroutine per connection, channel hand-offs, a request and a
// header map built per call), and on the 2-core development machine every
// microsecond of the load generator is taken from the ingress it measures.
// setPoster writes a pre-formatted request with one Write and reads the
// answer with http.ReadResponse, so the answer is still parsed by the
// standard library (status, Content-Length, chunked bodies, Connection: close).
type setPoster struct {
	addr string
	head []byte // request line and headers, up to Content-Length's value
	idle chan *posterConn
}

// posterConn is one keep-alive connection; one request at a time.
type posterConn struct {
	c   net.Conn
	br  *bufio.Reader
	buf []byte
}

// postTimeout bounds one request (the net/http client's Timeout before).
const postTimeout = 10 * time.Second

// newSETPoster posts to rawURL (http only) and keeps up to conns idle
// connections for reuse.
func newSETPoster(rawURL string, conns int) (*setPoster, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "http" || u.Host == "" {
		return nil, fmt.Errorf("bench client: %q is not an http:// URL", rawURL)
	}
	head := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: %s\r\nAccept: application/json\r\nContent-Length: ",
		u.RequestURI(), u.Host, ingress.SETContentType)
	return &setPoster{addr: u.Host, head: []byte(head), idle: make(chan *posterConn, conns)}, nil
}

// post sends one token and returns the answer's status once its body is read.
func (p *setPoster) post(ctx context.Context, token []byte) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	pc, err := p.get(ctx)
	if err != nil {
		return 0, err
	}
	status, reuse, err := pc.roundTrip(p.head, token)
	if err != nil || !reuse {
		_ = pc.c.Close()
		return status, err
	}
	p.put(pc)
	return status, nil
}

func (p *setPoster) get(ctx context.Context) (*posterConn, error) {
	select {
	case pc := <-p.idle:
		return pc, nil
	default:
	}
	var d net.Dialer
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := d.DialContext(dctx, "tcp", p.addr)
	if err != nil {
		return nil, err
	}
	return &posterConn{c: c, br: bufio.NewReaderSize(c, 4096)}, nil
}

func (p *setPoster) put(pc *posterConn) {
	select {
	case p.idle <- pc:
	default:
		_ = pc.c.Close()
	}
}

// warm opens n connections before a clock starts.
func (p *setPoster) warm(ctx context.Context, n int) error {
	conns := make([]*posterConn, 0, n)
	defer func() {
		for _, pc := range conns {
			p.put(pc)
		}
	}()
	for range n {
		pc, err := p.get(ctx)
		if err != nil {
			return err
		}
		conns = append(conns, pc)
	}
	return nil
}

// close closes the idle connections.
func (p *setPoster) close() {
	for {
		select {
		case pc := <-p.idle:
			_ = pc.c.Close()
		default:
			return
		}
	}
}

// roundTrip writes the request in one Write and reads the whole answer;
// reuse is false when the connection cannot carry another request.
func (pc *posterConn) roundTrip(head, token []byte) (status int, reuse bool, err error) {
	if err := pc.c.SetDeadline(time.Now().Add(postTimeout)); err != nil {
		return 0, false, err
	}
	pc.buf = append(pc.buf[:0], head...)
	pc.buf = strconv.AppendInt(pc.buf, int64(len(token)), 10)
	pc.buf = append(pc.buf, "\r\n\r\n"...)
	pc.buf = append(pc.buf, token...)
	if _, err := pc.c.Write(pc.buf); err != nil {
		return 0, false, err
	}
	resp, err := http.ReadResponse(pc.br, nil)
	if err != nil {
		return 0, false, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return resp.StatusCode, false, err
	}
	if resp.Close {
		return resp.StatusCode, false, nil
	}
	if pc.br.Buffered() > 0 {
		return resp.StatusCode, false, errors.New("bench client: bytes after the answer")
	}
	return resp.StatusCode, true, nil
}
