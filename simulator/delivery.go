package simulator

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/setflow/setflow/ingress"
)

// Encodings a Delivery can use.
const (
	EncodingQuery = "query" // GET with a query string
	EncodingForm  = "form"  // POST application/x-www-form-urlencoded
	EncodingJSON  = "json"  // POST application/json
)

// Delivery is one admin-key webhook call shaped the way Kakao sends it to
// setflow's ingress, for `setflow send` and tests.
type Delivery struct {
	// Path is the route: ingress.PathUnlink, PathTalkShare or PathTalkChannel.
	Path       string
	Encoding   string
	AdminKey   string
	ResourceID string // sent as X-Kakao-Resource-ID when not empty
	Fields     map[string]any
}

// Request builds the HTTP request against baseURL (scheme://host[:port]).
func (d Delivery) Request(ctx context.Context, baseURL string) (*http.Request, error) {
	u := baseURL + d.Path
	var method, contentType string
	var body io.Reader
	switch d.Encoding {
	case EncodingQuery:
		method = http.MethodGet
		u += "?" + formOf(d.Fields).Encode()
	case EncodingForm:
		method, contentType = http.MethodPost, "application/x-www-form-urlencoded"
		body = bytes.NewBufferString(formOf(d.Fields).Encode())
	case EncodingJSON, "":
		b, err := json.Marshal(d.Fields)
		if err != nil {
			return nil, err
		}
		method, contentType, body = http.MethodPost, "application/json", bytes.NewReader(b)
	default:
		return nil, fmt.Errorf("unknown encoding %q (want query, form or json)", d.Encoding)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if d.AdminKey != "" {
		req.Header.Set("Authorization", "KakaoAK "+d.AdminKey)
	}
	if d.ResourceID != "" {
		req.Header.Set(ingress.ResourceIDHeader, d.ResourceID)
	}
	req.Header.Set("User-Agent", "KakaoOpenAPI/1.0")
	return req, nil
}

func formOf(fields map[string]any) url.Values {
	v := url.Values{}
	for k, f := range fields {
		v.Set(k, fmt.Sprint(f))
	}
	return v
}
