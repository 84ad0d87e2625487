package codec_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	commonpb "go.temporal.io/api/common/v1"
	enumspb "go.temporal.io/api/enums/v1"
	failurepb "go.temporal.io/api/failure/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/setflow/setflow/codec"
	"github.com/setflow/setflow/internal/testenv"
)

func newKey(t testing.TB) []byte {
	t.Helper()
	k := make([]byte, codec.KeySize)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

func b64(k []byte) string { return base64.StdEncoding.EncodeToString(k) }

func mustRing(t testing.TB, spec string) *codec.KeyRing {
	t.Helper()
	r, err := codec.ParseKeyRing(spec)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// marker is a value that must never reach Temporal in clear.
func marker(t testing.TB) string {
	t.Helper()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return fmt.Sprintf("kakao.user.%x@example.com", b)
}

type event struct {
	UserID int64             `json:"user_id"`
	Email  string            `json:"email"`
	Claims map[string]string `json:"claims"`
}

func TestRoundTrip(t *testing.T) {
	ring := mustRing(t, "k1:"+b64(newKey(t)))
	dc := codec.DataConverter(ring)
	m := marker(t)
	big := strings.Repeat(m, 1<<20/len(m))

	values := []any{
		m,
		"",
		[]byte(m),
		[]byte{},
		42,
		true,
		nil,
		event{UserID: 1234567890, Email: m, Claims: map[string]string{"reason": "withdrawn " + m}},
		[]string{m, m},
		big,
	}
	for i, v := range values {
		p, err := dc.ToPayload(v)
		if err != nil {
			t.Fatalf("%d: ToPayload(%T): %v", i, v, err)
		}
		if got := string(p.Metadata[converter.MetadataEncoding]); got != codec.Encoding {
			t.Fatalf("%d: encoding %q, want %q", i, got, codec.Encoding)
		}
		if got := string(p.Metadata[codec.MetadataKeyID]); got != "k1" {
			t.Fatalf("%d: key id %q", i, got)
		}
		if len(p.Metadata) != 2 {
			t.Fatalf("%d: metadata leaks more than encoding and key id: %v", i, p.Metadata)
		}
		raw, _ := proto.Marshal(p)
		if bytes.Contains(raw, []byte(m)) || bytes.Contains(raw, []byte("json/plain")) {
			t.Fatalf("%d: encrypted payload contains clear text", i)
		}
		switch want := v.(type) {
		case nil:
			var got any = "not nil"
			if err := dc.FromPayload(p, &got); err != nil || got != nil {
				t.Fatalf("%d: got %v, %v", i, got, err)
			}
		case string:
			var got string
			if err := dc.FromPayload(p, &got); err != nil || got != want {
				t.Fatalf("%d: got %.40q, %v", i, got, err)
			}
		case []byte:
			var got []byte
			if err := dc.FromPayload(p, &got); err != nil || !bytes.Equal(got, want) {
				t.Fatalf("%d: got %q, %v", i, got, err)
			}
		case int:
			var got int
			if err := dc.FromPayload(p, &got); err != nil || got != want {
				t.Fatalf("%d: got %v, %v", i, got, err)
			}
		case bool:
			var got bool
			if err := dc.FromPayload(p, &got); err != nil || got != want {
				t.Fatalf("%d: got %v, %v", i, got, err)
			}
		case event:
			var got event
			if err := dc.FromPayload(p, &got); err != nil || got.Email != want.Email || got.UserID != want.UserID || got.Claims["reason"] != want.Claims["reason"] {
				t.Fatalf("%d: got %+v, %v", i, got, err)
			}
		case []string:
			var got []string
			if err := dc.FromPayload(p, &got); err != nil || len(got) != 2 || got[1] != m {
				t.Fatalf("%d: got %v, %v", i, got, err)
			}
		}
		if v == m {
			if s := dc.ToString(p); !strings.Contains(s, m) {
				t.Fatalf("ToString does not decrypt: %q", s)
			}
		}
	}

	// Several payloads at once, metadata kept exactly, fresh nonce each time.
	c := codec.New(ring)
	in := []*commonpb.Payload{
		{Metadata: map[string][]byte{"encoding": []byte("json/plain"), "messageType": []byte("x")}, Data: []byte(`"` + m + `"`)},
		{Metadata: map[string][]byte{"encoding": []byte("binary/null")}},
		{},
	}
	enc1, err := c.Encode(in)
	if err != nil {
		t.Fatal(err)
	}
	enc2, _ := c.Encode(in)
	if bytes.Equal(enc1[0].Data, enc2[0].Data) || bytes.Equal(enc1[0].Data[:12], enc2[0].Data[:12]) {
		t.Fatal("same payload encrypted twice gives the same ciphertext or nonce")
	}
	dec, err := c.Decode(enc1)
	if err != nil {
		t.Fatal(err)
	}
	for i := range in {
		if !proto.Equal(in[i], dec[i]) {
			t.Fatalf("payload %d: got %v, want %v", i, dec[i], in[i])
		}
	}
}

func TestRotation(t *testing.T) {
	k1, k2 := b64(newKey(t)), b64(newKey(t))
	old := codec.DataConverter(mustRing(t, "k1:"+k1))
	rotated := codec.DataConverter(mustRing(t, "k2:"+k2+",k1:"+k1))
	m := marker(t)

	p1, err := old.ToPayload(m)
	if err != nil {
		t.Fatal(err)
	}
	var got string
	if err := rotated.FromPayload(p1, &got); err != nil || got != m {
		t.Fatalf("rotated ring cannot read k1 payload: %q, %v", got, err)
	}
	p2, _ := rotated.ToPayload(m)
	if id := string(p2.Metadata[codec.MetadataKeyID]); id != "k2" {
		t.Fatalf("rotated ring encrypts with %q, want k2", id)
	}
	// The old ring does not know k2.
	err = old.FromPayload(p2, &got)
	if !errors.Is(err, codec.ErrUnknownKey) {
		t.Fatalf("old ring on k2 payload: %v, want ErrUnknownKey", err)
	}
}

func TestUnknownKey(t *testing.T) {
	p, _ := codec.DataConverter(mustRing(t, "k9:"+b64(newKey(t)))).ToPayload("x")
	_, err := codec.New(mustRing(t, "k2:"+b64(newKey(t))+",k1:"+b64(newKey(t)))).Decode([]*commonpb.Payload{p})
	if !errors.Is(err, codec.ErrUnknownKey) {
		t.Fatalf("got %v, want ErrUnknownKey", err)
	}
	for _, want := range []string{`"k9"`, "k2, k1"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("error %q does not mention %s", err, want)
		}
	}

	// Missing key id metadata.
	p.Metadata = map[string][]byte{converter.MetadataEncoding: []byte(codec.Encoding)}
	if _, err := codec.New(mustRing(t, "k9:"+b64(newKey(t)))).Decode([]*commonpb.Payload{p}); err == nil || !strings.Contains(err.Error(), codec.MetadataKeyID) {
		t.Fatalf("no key id: %v", err)
	}
}

func TestTamperedCiphertext(t *testing.T) {
	k1, k2 := b64(newKey(t)), b64(newKey(t))
	ring := mustRing(t, "k1:"+k1+",k2:"+k2)
	c := codec.New(ring)
	enc, err := c.Encode([]*commonpb.Payload{{Metadata: map[string][]byte{"encoding": []byte("json/plain")}, Data: []byte(`"secret"`)}})
	if err != nil {
		t.Fatal(err)
	}
	orig := enc[0]
	n := len(orig.Data)
	for _, pos := range []int{0, 11, 12, n / 2, n - 17, n - 1} { // nonce, ciphertext, tag
		p := proto.Clone(orig).(*commonpb.Payload)
		p.Data[pos] ^= 0x01
		if _, err := c.Decode([]*commonpb.Payload{p}); !errors.Is(err, codec.ErrDecrypt) {
			t.Fatalf("flipped byte %d of %d: got %v, want ErrDecrypt", pos, n, err)
		}
	}
	for _, l := range []int{0, 12, 27, n - 1} {
		p := proto.Clone(orig).(*commonpb.Payload)
		p.Data = p.Data[:l]
		if _, err := c.Decode([]*commonpb.Payload{p}); !errors.Is(err, codec.ErrDecrypt) {
			t.Fatalf("truncated to %d: got %v, want ErrDecrypt", l, err)
		}
	}
	// Relabelled to another key of the ring.
	p := proto.Clone(orig).(*commonpb.Payload)
	p.Metadata[codec.MetadataKeyID] = []byte("k2")
	if _, err := c.Decode([]*commonpb.Payload{p}); !errors.Is(err, codec.ErrDecrypt) {
		t.Fatalf("relabelled key id: got %v, want ErrDecrypt", err)
	}
	// Same id, different key material.
	other := codec.New(mustRing(t, "k1:"+b64(newKey(t))))
	if _, err := other.Decode([]*commonpb.Payload{orig}); !errors.Is(err, codec.ErrDecrypt) {
		t.Fatalf("wrong key material: got %v, want ErrDecrypt", err)
	}
	// The untouched payload still decodes.
	if _, err := c.Decode([]*commonpb.Payload{orig}); err != nil {
		t.Fatal(err)
	}
}

func TestDecodePassesOtherPayloadsThrough(t *testing.T) {
	c := codec.New(mustRing(t, "k1:"+b64(newKey(t))))
	plain, _ := converter.GetDefaultDataConverter().ToPayload("written before encryption")
	zlib := &commonpb.Payload{Metadata: map[string][]byte{"encoding": []byte("binary/zlib")}, Data: []byte{1, 2, 3}}
	none := &commonpb.Payload{}
	in := []*commonpb.Payload{plain, zlib, none}
	out, err := c.Decode(in)
	if err != nil {
		t.Fatal(err)
	}
	for i := range in {
		if out[i] != in[i] {
			t.Fatalf("payload %d changed", i)
		}
	}
	var s string
	if err := codec.DataConverter(mustRing(t, "k1:"+b64(newKey(t)))).FromPayload(plain, &s); err != nil || s != "written before encryption" {
		t.Fatalf("clear payload through the data converter: %q, %v", s, err)
	}
}

func TestParseKeyRing(t *testing.T) {
	k1, k2 := newKey(t), newKey(t)
	r, err := codec.ParseKeyRing(" k2:" + b64(k2) + " , k1:" + base64.RawURLEncoding.EncodeToString(k1) + "\n")
	if err != nil {
		t.Fatal(err)
	}
	if r.CurrentID() != "k2" || strings.Join(r.IDs(), ",") != "k2,k1" {
		t.Fatalf("current %q ids %v", r.CurrentID(), r.IDs())
	}
	// The URL-safe unpadded key is the same key as its standard form.
	p, _ := codec.DataConverter(mustRing(t, "k1:"+b64(k1))).ToPayload("x")
	var s string
	if err := codec.DataConverter(r).FromPayload(p, &s); err != nil || s != "x" {
		t.Fatalf("URL-safe key differs: %v", err)
	}

	short := b64(make([]byte, 16))
	cases := []struct{ spec, want string }{
		{"", "empty key ring"},
		{"   ", "empty key ring"},
		{b64(k1), "entry 1 has no id"},
		{"k1:" + b64(k1) + ",," + "k2:" + b64(k2), "entry 2 is empty"},
		{"k1:not*base64!", `entry 1 (id "k1"): key is not valid base64`},
		{"k1:" + b64(k1) + ",k2:" + short, `entry 2: key "k2" is 16 bytes, must be 32`},
		{"k1:", `key "k1" is 0 bytes`},
		{"k1:" + b64(append(k1, 0)), "is 33 bytes"},
		{"k1:" + b64(k1) + ",k1:" + b64(k2), `entry 2: key id "k1" appears more than once`},
		{":" + b64(k1), "entry 1: empty key id"},
		{"k 1:" + b64(k1), "may only hold"},
	}
	for _, tc := range cases {
		_, err := codec.ParseKeyRing(tc.spec)
		if err == nil {
			t.Errorf("ParseKeyRing(%q): no error", tc.spec)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseKeyRing: error %q does not contain %q", err, tc.want)
		}
		for _, secret := range []string{b64(k1), b64(k2), short, "not*base64!"} {
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error %q shows key material", err)
			}
		}
	}

	// NewKeyRing checks the same rules.
	if _, err := codec.NewKeyRing("k3", map[string][]byte{"k1": k1}); err == nil {
		t.Error("NewKeyRing accepts a current id outside the ring")
	}
	if _, err := codec.NewKeyRing("k1", map[string][]byte{"k1": k1[:16]}); err == nil {
		t.Error("NewKeyRing accepts a 16-byte key")
	}
	nr, err := codec.NewKeyRing("k1", map[string][]byte{"k1": k1, "k0": k2})
	if err != nil || strings.Join(nr.IDs(), ",") != "k1,k0" {
		t.Fatalf("NewKeyRing: %v %v", nr, err)
	}
}

func TestConfiguredKeyRing(t *testing.T) {
	if _, err := codec.ConfiguredKeyRing(" "); !errors.Is(err, codec.ErrNoKeys) {
		t.Fatalf("unset: %v, want ErrNoKeys", err)
	}
	k := b64(newKey(t))
	_, err := codec.ConfiguredKeyRing("k1:" + k[:20])
	if err == nil || !strings.HasPrefix(err.Error(), codec.EnvKeys+": ") || errors.Is(err, codec.ErrNoKeys) || strings.Contains(err.Error(), k[:20]) {
		t.Fatalf("bad key: %v", err)
	}
	r, err := codec.ConfiguredKeyRing("k1:" + k)
	if err != nil || r.CurrentID() != "k1" {
		t.Fatalf("good key: %v", err)
	}
}

func TestKeyRingNeverPrintsKeys(t *testing.T) {
	key := newKey(t)
	r := mustRing(t, "k1:"+b64(key))
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("ring", "ring", r)
	outs := []string{fmt.Sprint(r), fmt.Sprintf("%+v", r), fmt.Sprintf("%#v", r), fmt.Sprintf("%v", *r), logged.String()}
	for _, o := range outs {
		// fmt.Sprint(key) is fmt's rendering of the bytes ("[12 34 ...]"), not string(key).
		if strings.Contains(o, b64(key)) || bytes.Contains([]byte(o), key) || strings.Contains(o, fmt.Sprint(key)) { //nolint:staticcheck // QF1010
			t.Fatalf("key material printed: %s", o)
		}
	}
	if !strings.Contains(logged.String(), `"current":"k1"`) {
		t.Fatalf("log value: %s", logged.String())
	}
}

func TestFailureConverterEncryptsMessages(t *testing.T) {
	ring := mustRing(t, "k1:"+b64(newKey(t)))
	m := marker(t)
	fc := codec.FailureConverter(ring)
	cause := temporal.NewApplicationError("smtp rejected "+m, "Bounce", m)
	f := fc.ErrorToFailure(fmt.Errorf("notify %s: %w", m, cause))
	raw, _ := proto.Marshal(f)
	if bytes.Contains(raw, []byte(m)) {
		t.Fatal("failure holds the marker in clear")
	}
	if f.Message != "Encoded failure" || f.Cause.Message != "Encoded failure" {
		t.Fatalf("messages not encoded: %q / %q", f.Message, f.Cause.Message)
	}
	if enc := string(f.EncodedAttributes.Metadata[converter.MetadataEncoding]); enc != codec.Encoding {
		t.Fatalf("encoded attributes not encrypted: %q", enc)
	}
	err := fc.FailureToError(f)
	if !strings.Contains(err.Error(), "notify "+m) {
		t.Fatalf("decoded: %v", err)
	}
	// The wrapping error comes back as an ApplicationError too; the cause is
	// the one with the details.
	var app *temporal.ApplicationError
	if !errors.As(errors.Unwrap(err), &app) || !strings.Contains(app.Error(), "smtp rejected "+m) {
		t.Fatalf("cause: %v", err)
	}
	var detail string
	if err := app.Details(&detail); err != nil || detail != m {
		t.Fatalf("details: %q, %v", detail, err)
	}
}

// --- codec server ---

func post(t *testing.T, url string, body []byte, hdr map[string]string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func TestHandlerRoundTrip(t *testing.T) {
	ring := mustRing(t, "k1:"+b64(newKey(t)))
	srv := httptest.NewServer(codec.Handler(ring, codec.HandlerOptions{}))
	defer srv.Close()
	m := marker(t)

	// The SDK's own remote codec client, as the CLI and other SDKs talk to it,
	// under a path prefix as behind a proxy.
	remote := converter.NewRemotePayloadCodec(converter.RemotePayloadCodecOptions{Endpoint: srv.URL + "/codec"})
	plain, _ := converter.GetDefaultDataConverter().ToPayload(event{Email: m})
	enc, err := remote.Encode([]*commonpb.Payload{plain})
	if err != nil {
		t.Fatal(err)
	}
	if string(enc[0].Metadata[converter.MetadataEncoding]) != codec.Encoding || bytes.Contains(enc[0].Data, []byte(m)) {
		t.Fatalf("/encode did not encrypt: %v", enc[0].Metadata)
	}
	// What the server encrypted, the in-process codec decrypts, and back.
	local, err := codec.New(ring).Decode(enc)
	if err != nil || !proto.Equal(local[0], plain) {
		t.Fatalf("in-process decode of /encode output: %v", err)
	}
	mine, _ := codec.New(ring).Encode([]*commonpb.Payload{plain})
	dec, err := remote.Decode(mine)
	if err != nil || !proto.Equal(dec[0], plain) {
		t.Fatalf("/decode: %v %v", dec, err)
	}

	// The raw JSON protocol the Temporal UI speaks.
	body, _ := protojson.Marshal(&commonpb.Payloads{Payloads: mine})
	resp := post(t, srv.URL+"/decode", body, map[string]string{"X-Namespace": "default"})
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !bytes.Contains(out, []byte(base64.StdEncoding.EncodeToString(plain.Data))) {
		t.Fatalf("/decode raw: %d %s", resp.StatusCode, out)
	}

	// A tampered payload is a 400 with the reason, not a 500 or garbage.
	bad := proto.Clone(mine[0]).(*commonpb.Payload)
	bad.Data[len(bad.Data)-1] ^= 1
	body, _ = protojson.Marshal(&commonpb.Payloads{Payloads: []*commonpb.Payload{bad}})
	resp = post(t, srv.URL+"/decode", body, nil)
	out, _ = io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(out), "authentication") {
		t.Fatalf("tampered: %d %s", resp.StatusCode, out)
	}

	// Wrong method and path.
	if r, _ := http.Get(srv.URL + "/decode"); r.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET: %d", r.StatusCode)
	}
	if r := post(t, srv.URL+"/other", body, nil); r.StatusCode != http.StatusNotFound {
		t.Fatalf("/other: %d", r.StatusCode)
	}
}

func TestHandlerCORS(t *testing.T) {
	ring := mustRing(t, "k1:"+b64(newKey(t)))
	srv := httptest.NewServer(codec.Handler(ring, codec.HandlerOptions{
		CORSOrigins: []string{"http://localhost:8233", "https://temporal.example.com/"},
		AuthToken:   "s3cret",
	}))
	defer srv.Close()

	preflight := func(origin string) *http.Response {
		req, _ := http.NewRequest(http.MethodOptions, srv.URL+"/decode", nil)
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		req.Header.Set("Access-Control-Request-Headers", "content-type,x-namespace,authorization")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	for _, origin := range []string{"http://localhost:8233", "https://temporal.example.com"} {
		resp := preflight(origin)
		h := resp.Header
		if resp.StatusCode != http.StatusNoContent ||
			h.Get("Access-Control-Allow-Origin") != origin ||
			h.Get("Access-Control-Allow-Credentials") != "true" ||
			!strings.Contains(h.Get("Access-Control-Allow-Methods"), "POST") {
			t.Fatalf("preflight %s: %d %v", origin, resp.StatusCode, h)
		}
		allowed := strings.ToLower(h.Get("Access-Control-Allow-Headers"))
		for _, want := range []string{"content-type", "x-namespace", "authorization"} {
			if !strings.Contains(allowed, want) {
				t.Fatalf("preflight does not allow header %s: %q", want, allowed)
			}
		}
	}
	if resp := preflight("https://evil.example"); resp.StatusCode != http.StatusForbidden || resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("foreign origin: %d %v", resp.StatusCode, resp.Header)
	}

	// The actual request from the UI carries the CORS headers too.
	body, _ := protojson.Marshal(&commonpb.Payloads{})
	resp := post(t, srv.URL+"/decode", body, map[string]string{"Origin": "http://localhost:8233", "Authorization": "Bearer s3cret"})
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Access-Control-Allow-Origin") != "http://localhost:8233" {
		t.Fatalf("UI request: %d %v", resp.StatusCode, resp.Header)
	}

	// "*" allows any origin, without credentials.
	wild := httptest.NewServer(codec.Handler(ring, codec.HandlerOptions{CORSOrigins: []string{"*"}}))
	defer wild.Close()
	req, _ := http.NewRequest(http.MethodOptions, wild.URL+"/decode", nil)
	req.Header.Set("Origin", "https://somewhere.example")
	r2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r2.Body.Close()
	if r2.StatusCode != http.StatusNoContent || r2.Header.Get("Access-Control-Allow-Origin") != "*" || r2.Header.Get("Access-Control-Allow-Credentials") != "" {
		t.Fatalf("wildcard: %d %v", r2.StatusCode, r2.Header)
	}
}

func TestHandlerBearerToken(t *testing.T) {
	ring := mustRing(t, "k1:"+b64(newKey(t)))
	srv := httptest.NewServer(codec.Handler(ring, codec.HandlerOptions{AuthToken: "s3cret"}))
	defer srv.Close()
	enc, _ := codec.New(ring).Encode([]*commonpb.Payload{{Data: []byte("x")}})
	body, _ := protojson.Marshal(&commonpb.Payloads{Payloads: enc})

	for _, path := range []string{"/decode", "/encode"} {
		for _, auth := range []string{"", "Bearer wrong", "s3cret", "Bearer s3cretx", "bearer s3cret", "Bearer  s3cret"} {
			hdr := map[string]string{}
			if auth != "" {
				hdr["Authorization"] = auth
			}
			resp := post(t, srv.URL+path, body, hdr)
			out, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") == "" || bytes.Contains(out, []byte("payloads")) {
				t.Fatalf("%s with %q: %d %s", path, auth, resp.StatusCode, out)
			}
		}
		resp := post(t, srv.URL+path, body, map[string]string{"Authorization": "Bearer s3cret"})
		if resp.StatusCode != http.StatusOK {
			out, _ := io.ReadAll(resp.Body)
			t.Fatalf("%s with the token: %d %s", path, resp.StatusCode, out)
		}
	}
	// The SDK client with the token (temporal CLI: --codec-auth).
	remote := converter.NewRemotePayloadCodec(converter.RemotePayloadCodecOptions{
		Endpoint: srv.URL,
		ModifyRequest: func(r *http.Request) error {
			r.Header.Set("Authorization", "Bearer s3cret")
			return nil
		},
	})
	if dec, err := remote.Decode(enc); err != nil || string(dec[0].Data) != "x" {
		t.Fatalf("remote with token: %v", err)
	}
	// Preflight needs no token: browsers never send credentials there.
	req, _ := http.NewRequest(http.MethodOptions, srv.URL+"/decode", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("preflight with token configured: %d", resp.StatusCode)
	}
}

// --- end to end against a real Temporal dev server ---

type probeInput struct {
	UserID int64
	Email  string
	Fail   bool
}

func probeWorkflow(ctx workflow.Context, in probeInput) (string, error) {
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 10 * time.Second,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval: 50 * time.Millisecond, BackoffCoefficient: 1, MaximumAttempts: 3,
		},
	})
	var sent string
	if err := workflow.ExecuteActivity(ctx, probeActivity, in).Get(ctx, &sent); err != nil {
		return "", err
	}
	if in.Fail {
		return "", temporal.NewNonRetryableApplicationError("cannot notify "+in.Email, "NotifyFailed", nil, in.Email)
	}
	return sent, nil
}

// probeActivity fails its first attempt with the e-mail in the error message.
func probeActivity(ctx context.Context, in probeInput) (string, error) {
	if activity.GetInfo(ctx).Attempt == 1 {
		return "", temporal.NewApplicationError("smtp 550 rejected "+in.Email, "Bounce", in.Email)
	}
	return "sent to " + in.Email, nil
}

type quietLogger struct{}

func (quietLogger) Debug(string, ...any) {}
func (quietLogger) Info(string, ...any)  {}
func (quietLogger) Warn(string, ...any)  {}
func (quietLogger) Error(string, ...any) {}

func startWorker(t *testing.T, c client.Client, queue string) {
	t.Helper()
	w := worker.New(c, queue, worker.Options{})
	w.RegisterWorkflow(probeWorkflow)
	w.RegisterActivity(probeActivity)
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
}

// rawHistory fetches a run's history with c and returns its events.
func rawHistory(t *testing.T, c client.Client, run client.WorkflowRun) []*historypb.HistoryEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	it := c.GetWorkflowHistory(ctx, run.GetID(), run.GetRunID(), false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	var events []*historypb.HistoryEvent
	for it.HasNext() {
		e, err := it.Next()
		if err != nil {
			t.Fatal(err)
		}
		events = append(events, e)
	}
	return events
}

func historyBytes(events []*historypb.HistoryEvent) []byte {
	var all []byte
	for _, e := range events {
		b, _ := proto.Marshal(e)
		all = append(all, b...)
		j, _ := protojson.Marshal(e)
		all = append(all, j...)
	}
	return all
}

// countEncrypted counts the encrypted payloads in the events.
func countEncrypted(events []*historypb.HistoryEvent) int {
	n := 0
	for _, e := range events {
		walkPayloads(e.ProtoReflect(), func(p *commonpb.Payload) {
			if string(p.Metadata[converter.MetadataEncoding]) == codec.Encoding {
				n++
			}
		})
	}
	return n
}

func walkPayloads(m protoreflect.Message, fn func(*commonpb.Payload)) {
	if p, ok := m.Interface().(*commonpb.Payload); ok {
		fn(p)
		return
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList():
			if fd.Message() != nil {
				l := v.List()
				for i := 0; i < l.Len(); i++ {
					walkPayloads(l.Get(i).Message(), fn)
				}
			}
		case fd.IsMap():
			if fd.MapValue().Message() != nil {
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
					walkPayloads(mv.Message(), fn)
					return true
				})
			}
		case fd.Message() != nil:
			walkPayloads(v.Message(), fn)
		}
		return true
	})
}

func findFailures(events []*historypb.HistoryEvent) (lastFailures []*failurepb.Failure, final *failurepb.Failure) {
	for _, e := range events {
		if a := e.GetActivityTaskStartedEventAttributes(); a != nil && a.LastFailure != nil {
			lastFailures = append(lastFailures, a.LastFailure)
		}
		if a := e.GetWorkflowExecutionFailedEventAttributes(); a != nil {
			final = a.Failure
		}
	}
	return lastFailures, final
}

func TestEndToEndHistoryIsEncrypted(t *testing.T) {
	srv := testenv.Temporal(t, "")
	ring := mustRing(t, "k2:"+b64(newKey(t))+",k1:"+b64(newKey(t)))
	m := marker(t)

	plainClient := srv.Client() // no codec: sees what Temporal stores
	encClient, err := client.Dial(client.Options{
		HostPort:         srv.FrontendHostPort(),
		Namespace:        "default",
		Logger:           quietLogger{},
		DataConverter:    codec.DataConverter(ring),
		FailureConverter: codec.FailureConverter(ring),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer encClient.Close()

	startWorker(t, encClient, "codec-e2e")
	startWorker(t, plainClient, "codec-e2e-plain")

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := func(c client.Client, queue, id string, in probeInput) client.WorkflowRun {
		t.Helper()
		run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: queue}, probeWorkflow, in)
		if err != nil {
			t.Fatal(err)
		}
		return run
	}

	// Control: without the codec the marker is in the history, so the checks
	// below would see it.
	ctrl := start(plainClient, "codec-e2e-plain", "codec-e2e-control", probeInput{UserID: 4242, Email: m})
	var got string
	if err := ctrl.Get(ctx, &got); err != nil {
		t.Fatal(err)
	}
	ctrlEvents := rawHistory(t, plainClient, ctrl)
	if !bytes.Contains(historyBytes(ctrlEvents), []byte(m)) {
		t.Fatal("control: marker not found in a clear history; the leak check would prove nothing")
	}
	if lf, _ := findFailures(ctrlEvents); len(lf) == 0 || !strings.Contains(lf[0].Message, m) {
		t.Fatalf("control: first attempt's failure not in history: %v", lf)
	}

	// A run that succeeds after an activity attempt failed with the marker in
	// its message, and a run that fails with the marker in its message.
	okRun := start(encClient, "codec-e2e", "codec-e2e-ok", probeInput{UserID: 4242, Email: m})
	failRun := start(encClient, "codec-e2e", "codec-e2e-fail", probeInput{UserID: 4242, Email: m, Fail: true})

	if err := okRun.Get(ctx, &got); err != nil || got != "sent to "+m {
		t.Fatalf("ok run through the codec client: %q, %v", got, err)
	}
	err = failRun.Get(ctx, nil)
	var app *temporal.ApplicationError
	if !errors.As(err, &app) || !strings.Contains(app.Error(), "cannot notify "+m) {
		t.Fatalf("failing run through the codec client: %v", err)
	}
	var detail string
	if err := app.Details(&detail); err != nil || detail != m {
		t.Fatalf("failure details through the codec client: %q, %v", detail, err)
	}

	fc := codec.FailureConverter(ring)
	for _, run := range []client.WorkflowRun{okRun, failRun} {
		events := rawHistory(t, plainClient, run)
		if bytes.Contains(historyBytes(events), []byte(m)) {
			t.Fatalf("%s: marker in the stored history", run.GetID())
		}
		// input, activity input, and activity result or failure details at least
		if n := countEncrypted(events); n < 3 {
			t.Fatalf("%s: only %d encrypted payloads in history", run.GetID(), n)
		}
		lf, _ := findFailures(events)
		if len(lf) == 0 {
			t.Fatalf("%s: first attempt's failure not in history", run.GetID())
		}
		if lf[0].Message != "Encoded failure" {
			t.Fatalf("%s: activity failure message stored as %q", run.GetID(), lf[0].Message)
		}
		// The codec decodes what is stored.
		if err := fc.FailureToError(lf[0]); !strings.Contains(err.Error(), "smtp 550 rejected "+m) {
			t.Fatalf("%s: decoded activity failure: %v", run.GetID(), err)
		}
	}
	_, final := findFailures(rawHistory(t, plainClient, failRun))
	if final == nil || final.Message != "Encoded failure" {
		t.Fatalf("workflow failure stored as %v", final)
	}

	// Without the codec a reader sees neither the result nor the message.
	var inClear string
	if err := plainClient.GetWorkflow(ctx, okRun.GetID(), okRun.GetRunID()).Get(ctx, &inClear); err == nil || strings.Contains(inClear, m) {
		t.Fatalf("plain client decoded the result: %q, %v", inClear, err)
	}
	if err := plainClient.GetWorkflow(ctx, failRun.GetID(), failRun.GetRunID()).Get(ctx, nil); err == nil || strings.Contains(err.Error(), m) {
		t.Fatalf("plain client sees the failure message: %v", err)
	}

	// The codec server decodes stored payloads for the UI.
	hs := httptest.NewServer(codec.Handler(ring, codec.HandlerOptions{AuthToken: "t"}))
	defer hs.Close()
	body, _ := protojson.Marshal(&commonpb.Payloads{Payloads: []*commonpb.Payload{final.EncodedAttributes}})
	resp := post(t, hs.URL+"/decode", body, map[string]string{"Authorization": "Bearer t"})
	var out commonpb.Payloads
	raw, _ := io.ReadAll(resp.Body)
	if err := protojson.Unmarshal(raw, &out); err != nil || len(out.Payloads) != 1 || !bytes.Contains(out.Payloads[0].Data, []byte("cannot notify "+m)) {
		t.Fatalf("codec server on the stored failure: %d %s %v", resp.StatusCode, raw, err)
	}
}
