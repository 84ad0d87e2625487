package codec

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"go.temporal.io/sdk/converter"
)

// EnvAuthToken names the environment variable holding the codec server's
// bearer token.
const EnvAuthToken = "SETFLOW_CODEC_AUTH_TOKEN"

// DefaultMaxBody bounds a codec request body.
const DefaultMaxBody = 16 << 20

// HandlerOptions configures Handler.
type HandlerOptions struct {
	// CORSOrigins are the browser origins allowed to call the server, e.g. the
	// Temporal UI at "http://localhost:8233"; listed origins may send
	// credentials. "*" allows any other origin, without credentials. Empty
	// allows none (the CLI, which sends no Origin, still works).
	CORSOrigins []string
	// AuthToken, when set, is required as "Authorization: Bearer <token>" on
	// /encode and /decode (temporal CLI: --codec-auth "Bearer <token>").
	AuthToken string
	// MaxBody bounds the request body; 0 means DefaultMaxBody.
	MaxBody int64
}

// Handler serves the Temporal remote codec protocol: POST /encode and
// POST /decode with a JSON {"payloads": […]} body (any path prefix, so it can
// sit behind /codec or /{namespace}). It answers CORS preflights from the
// allowed origins without authentication, as browsers send no credentials
// there.
func Handler(ring *KeyRing, opts HandlerOptions) http.Handler {
	h := &handler{
		codec:   converter.NewPayloadCodecHTTPHandler(New(ring)),
		origins: slices.Clone(opts.CORSOrigins),
		maxBody: opts.MaxBody,
	}
	if h.maxBody <= 0 {
		h.maxBody = DefaultMaxBody
	}
	if opts.AuthToken != "" {
		sum := sha256.Sum256([]byte("Bearer " + opts.AuthToken))
		h.authSum = sum[:]
	}
	return h
}

type handler struct {
	codec   http.Handler
	origins []string
	authSum []byte // sha256 of the expected Authorization header; nil: no check
	maxBody int64
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	origin := r.Header.Get("Origin")
	if origin != "" {
		hd := w.Header()
		hd.Add("Vary", "Origin")
		switch {
		case h.originListed(origin):
			// The UI may send credentials (its "include cross-origin
			// credentials" setting), so listed origins get them allowed.
			hd.Set("Access-Control-Allow-Origin", origin)
			hd.Set("Access-Control-Allow-Credentials", "true")
		case slices.Contains(h.origins, "*"):
			hd.Set("Access-Control-Allow-Origin", "*")
		default:
			http.Error(w, "origin not allowed", http.StatusForbidden)
			return
		}
	}
	if r.Method == http.MethodOptions {
		hd := w.Header()
		hd.Set("Access-Control-Allow-Methods", "POST, OPTIONS")
		hd.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, X-Namespace")
		hd.Set("Access-Control-Max-Age", strconv.Itoa(600))
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST, OPTIONS")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if !strings.HasSuffix(r.URL.Path, "/encode") && !strings.HasSuffix(r.URL.Path, "/decode") {
		http.NotFound(w, r)
		return
	}
	if h.authSum != nil {
		got := sha256.Sum256([]byte(r.Header.Get("Authorization")))
		if subtle.ConstantTimeCompare(got[:], h.authSum) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="setflow-codec"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
	}
	r.Body = http.MaxBytesReader(w, r.Body, h.maxBody)
	h.codec.ServeHTTP(w, r)
}

func (h *handler) originListed(origin string) bool {
	for _, o := range h.origins {
		if strings.EqualFold(strings.TrimRight(o, "/"), origin) {
			return true
		}
	}
	return false
}
