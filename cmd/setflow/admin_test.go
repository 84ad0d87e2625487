package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/setflow/setflow/config"
	"github.com/setflow/setflow/internal/testenv"
)

type testCert struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	der  []byte
}

func newTestCert(t *testing.T, cn string, parent *testCert, server bool) *testCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	signer, signerKey := tmpl, key
	switch {
	case parent == nil:
		tmpl.IsCA, tmpl.BasicConstraintsValid, tmpl.KeyUsage = true, true, x509.KeyUsageCertSign
	case server:
		tmpl.ExtKeyUsage, tmpl.IPAddresses = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, []net.IP{net.ParseIP("127.0.0.1")}
	default:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	if parent != nil {
		signer, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &testCert{cert: c, key: key, der: der}
}

func (c *testCert) write(t *testing.T, dir, name string) (certFile, keyFile string) {
	t.Helper()
	kder, _ := x509.MarshalECPrivateKey(c.key)
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	_ = os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.der}), 0o600)
	_ = os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	return certFile, keyFile
}

func (c *testCert) tls() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{c.der}, PrivateKey: c.key}
}

// With a client CA and no token, the status API answers only clients that
// present a certificate the CA signed; with a token, only that token.
func TestAdminPortStatusAPIWithMTLSAndToken(t *testing.T) {
	db, _ := testenv.Database(t)
	dir := t.TempDir()
	ca := newTestCert(t, "ca", nil, false)
	caFile, _ := ca.write(t, dir, "ca")
	srvCert, srvKey := newTestCert(t, "server", ca, true).write(t, dir, "server")
	client := newTestCert(t, "client", ca, false)
	stranger := newTestCert(t, "stranger", newTestCert(t, "other-ca", nil, false), false)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := slog.New(slog.DiscardHandler)

	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	adm := config.Admin{Listen: addr, TLSCert: srvCert, TLSKey: srvKey, TLSClientCA: caFile, Issuer: "iss"}
	if err := startAdmin(ctx, log, db, adm, config.Identity{Mode: "identity"}, config.AuditKey{}); err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	get := func(certs []tls.Certificate, url, token string) (int, error) {
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: certs}}}
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := c.Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	url := "https://" + addr + "/v1/subjects/1234"
	if code, err := get([]tls.Certificate{client.tls()}, url, ""); err != nil || code != http.StatusOK {
		t.Fatalf("client certificate: %d %v", code, err)
	}
	if code, err := get(nil, url, ""); err == nil {
		t.Fatalf("no client certificate answered %d", code)
	}
	if code, err := get([]tls.Certificate{stranger.tls()}, url, ""); err == nil {
		t.Fatalf("a certificate of another CA answered %d", code)
	}

	plain := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	if err := startAdmin(ctx, log, db, config.Admin{Listen: plain, Tokens: []string{"t1"}, Issuer: "iss"}, config.Identity{}, config.AuditKey{}); err != nil {
		t.Fatal(err)
	}
	if code, _ := get(nil, "http://"+plain+"/v1/accounts/42", "t1"); code != http.StatusOK {
		t.Fatalf("token: %d", code)
	}
	if code, _ := get(nil, "http://"+plain+"/v1/accounts/42", "t2"); code != http.StatusUnauthorized {
		t.Fatalf("wrong token: %d", code)
	}
	if err := startAdmin(ctx, log, db, config.Admin{Listen: "127.0.0.1:0", Issuer: "iss"}, config.Identity{}, config.AuditKey{}); err == nil {
		t.Fatal("an admin port without token or mTLS started")
	}
}
