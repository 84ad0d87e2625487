package ingress_test

// A hostile-input table for the three admin-key webhooks (unlink, Talk Share,
// Talk Channel), sent as raw bytes over TCP to the ingress behind the
// production HTTP server settings (ingress.HTTPServer), so that what a Go
// client would clean up (trailing spaces, repeated or non-UTF-8 headers)
// reaches the server as written. Each row states the exact status, that a
// refused request stored nothing, and that an accepted one stored exactly one
// row whose raw bytes are what was sent.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/setflow/setflow/event"
	"github.com/setflow/setflow/ingress"
)

type rawResponse struct {
	status int
	header http.Header
	body   string
}

// rawDo writes req to the server as it is and reads one response.
func rawDo(t *testing.T, addr, req string) rawResponse {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("reading the response: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return rawResponse{status: resp.StatusCode, header: resp.Header, body: string(b)}
}

// rawRequest builds an HTTP/1.1 request; headers are written exactly as
// given ("Name: value" lines, repeats allowed).
func rawRequest(method, target string, headers []string, body string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: setflow.test\r\nConnection: close\r\n", method, target)
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	if body != "" || method == http.MethodPost {
		fmt.Fprintf(&b, "Content-Length: %d\r\n", len(body))
	}
	b.WriteString("\r\n")
	b.WriteString(body)
	return b.String()
}

type hostileRow struct {
	name    string
	method  string
	target  string
	headers []string
	body    string
	status  int
	// code is the JSON error code; empty for answers net/http gives itself
	// before the handler runs (431, a malformed header).
	code     string
	descPart string
	// raw is the raw bytes an accepted delivery must be stored with; the
	// body, or the query string for a GET (the default).
	raw string
}

const (
	jsonCT = "Content-Type: application/json"
	formCT = "Content-Type: application/x-www-form-urlencoded"
)

// kakaoHostileRows builds the table; n makes every id unique per row, so that
// no accepted row is a duplicate of another.
func kakaoHostileRows() []func(n int) hostileRow {
	auth := "Authorization: KakaoAK " + adminKey
	uid := func(n int) string { return fmt.Sprint(880000 + n) }
	rid := func(n int) string { return fmt.Sprintf("X-Kakao-Resource-ID: rid-%d", n) }
	unlinkQ := func(n int, extra string) string {
		return ingress.PathUnlink + "?app_id=" + appID + "&user_id=" + uid(n) + "&referrer_type=UNLINK_FROM_APPS" + extra
	}
	unlinkForm := func(n int) string {
		return "app_id=" + appID + "&user_id=" + uid(n) + "&referrer_type=UNLINK_FROM_APPS"
	}
	unlinkJSON := func(n int) string {
		return `{"app_id":"` + appID + `","user_id":"` + uid(n) + `","referrer_type":"UNLINK_FROM_APPS"}`
	}
	shareQ := ingress.PathTalkShare + "?CHAT_TYPE=MemoChat&HASH_CHAT_ID=h-1&campaign=spring"
	shareJSON := `{"CHAT_TYPE":"MemoChat","HASH_CHAT_ID":"h-1","campaign":"spring"}`
	channelJSON := func(n int) string {
		return `{"event":"added","id":"` + uid(n) + `","channel_public_id":"_ZeUTxl","updated_at":"2025-04-16T07:53:17Z"}`
	}
	const (
		ok        = http.StatusOK
		bad       = http.StatusBadRequest
		unauth    = http.StatusUnauthorized
		tooLarge  = http.StatusRequestEntityTooLarge
		mediaType = http.StatusUnsupportedMediaType
		req       = "invalid_request"
		authFail  = "authentication_failed"
	)
	get := func(name, target string, headers []string, status int, code, desc string) func(int) hostileRow {
		return func(int) hostileRow {
			return hostileRow{name: name, method: http.MethodGet, target: target, headers: headers, status: status, code: code, descPart: desc}
		}
	}
	// Each route's baseline, with the Authorization header replaced.
	withAuth := func(name, authLine string, status int, code string) []func(int) hostileRow {
		h := func(n int, more ...string) []string {
			out := []string{rid(n)}
			if authLine != "" {
				out = append(out, authLine)
			}
			return append(out, more...)
		}
		return []func(int) hostileRow{
			func(n int) hostileRow {
				return hostileRow{name: "unlink: " + name, method: http.MethodGet, target: unlinkQ(n, ""), headers: h(n), status: status, code: code}
			},
			func(n int) hostileRow {
				return hostileRow{name: "talk-share: " + name, method: http.MethodGet, target: shareQ, headers: h(n), status: status, code: code}
			},
			func(n int) hostileRow {
				return hostileRow{name: "talk-channel: " + name, method: http.MethodPost, target: ingress.PathTalkChannel,
					headers: h(n, jsonCT), body: channelJSON(n), status: status, code: code}
			},
		}
	}

	var rows []func(int) hostileRow
	add := func(fs ...func(int) hostileRow) { rows = append(rows, fs...) }

	// The baselines are accepted, so the table cannot pass because every
	// request is broken the same way.
	add(withAuth("baseline", auth, ok, "")...)

	// KakaoAK: the scheme is case-insensitive (RFC 9110 §11.1) and optional
	// whitespace around the field value is not part of it; the key is
	// compared exactly.
	add(withAuth("trailing spaces after the key", auth+"    ", ok, "")...)
	add(withAuth("trailing tab after the key", auth+"\t", ok, "")...)
	add(withAuth("lower-case scheme", "Authorization: kakaoak "+adminKey, ok, "")...)
	add(withAuth("upper-case scheme", "Authorization: KAKAOAK "+adminKey, ok, "")...)
	add(withAuth("two spaces after the scheme", "Authorization: KakaoAK  "+adminKey, ok, "")...)
	add(withAuth("key upper-cased", "Authorization: KakaoAK "+strings.ToUpper(adminKey), unauth, authFail)...)
	add(withAuth("key with a trailing word", auth+" extra", unauth, authFail)...)
	add(withAuth("key with a space inside", "Authorization: KakaoAK "+adminKey[:8]+" "+adminKey[8:], unauth, authFail)...)
	add(withAuth("no space after the scheme", "Authorization: KakaoAK"+adminKey, unauth, authFail)...)
	add(withAuth("Bearer scheme", "Authorization: Bearer "+adminKey, unauth, authFail)...)
	add(withAuth("key in a comma list", auth+", KakaoAK wrong-key-9", unauth, authFail)...)
	add(withAuth("8 KiB key", "Authorization: KakaoAK "+strings.Repeat("k", 8<<10), unauth, authFail)...)
	add(withAuth("non-UTF-8 key", "Authorization: KakaoAK \xff\xfe"+adminKey, unauth, authFail)...)
	add(withAuth("no Authorization", "", unauth, authFail)...)
	add(withAuth("Authorization twice, both valid", auth+"\r\n"+auth, unauth, authFail)...)
	add(withAuth("Authorization twice, valid first", auth+"\r\nAuthorization: KakaoAK wrong-key-7", unauth, authFail)...)
	add(withAuth("Authorization twice, valid second", "Authorization: KakaoAK wrong-key-7\r\n"+auth, unauth, authFail)...)

	// Oversized and repeated headers. The production server caps the header
	// block at 64 KiB (net/http answers 431 itself).
	add(withAuth("70 KiB header", auth+"\r\nX-Pad: "+strings.Repeat("p", 70<<10), http.StatusRequestHeaderFieldsTooLarge, "")...)
	add(withAuth("500 unknown headers (50 KiB)", auth+strings.Repeat("\r\nX-Pad: "+strings.Repeat("p", 90), 500), ok, "")...)
	add(withAuth("control character in a header", auth+"\r\nX-Note: a\x01b", bad, "")...)
	add(
		func(n int) hostileRow {
			return hostileRow{name: "talk-share: X-Kakao-Resource-ID twice, same value", method: http.MethodGet, target: shareQ,
				headers: []string{auth, rid(n), rid(n)}, status: bad, code: req, descPart: "once"}
		},
		func(n int) hostileRow {
			return hostileRow{name: "talk-channel: X-Kakao-Resource-ID twice, different values", method: http.MethodPost,
				target: ingress.PathTalkChannel, headers: []string{auth, rid(n), rid(n + 1000), jsonCT}, body: channelJSON(n),
				status: bad, code: req, descPart: "once"}
		},
		get("talk-share: X-Kakao-Resource-ID of 201 bytes", shareQ, []string{auth, "X-Kakao-Resource-ID: " + strings.Repeat("r", 201)}, bad, req, "printable"),
		get("talk-share: X-Kakao-Resource-ID of 8 KiB", shareQ, []string{auth, "X-Kakao-Resource-ID: " + strings.Repeat("r", 8<<10)}, bad, req, "printable"),
		get("talk-share: non-UTF-8 X-Kakao-Resource-ID", shareQ, []string{auth, "X-Kakao-Resource-ID: r\xff\xfe"}, bad, req, "printable"),
		get("talk-share: empty X-Kakao-Resource-ID", shareQ, []string{auth, "X-Kakao-Resource-ID: "}, bad, req, "required"),
		func(n int) hostileRow {
			return hostileRow{name: "talk-channel: Content-Type twice", method: http.MethodPost, target: ingress.PathTalkChannel,
				headers: []string{auth, rid(n), jsonCT, formCT}, body: channelJSON(n), status: bad, code: req, descPart: "Content-Type"}
		},
		func(n int) hostileRow {
			return hostileRow{name: "unlink: Content-Type twice, both JSON", method: http.MethodPost, target: ingress.PathUnlink,
				headers: []string{auth, jsonCT, jsonCT}, body: unlinkJSON(n), status: bad, code: req, descPart: "Content-Type"}
		},
		func(n int) hostileRow {
			return hostileRow{name: "unlink: gzip Content-Encoding", method: http.MethodPost, target: ingress.PathUnlink,
				headers: []string{auth, formCT, "Content-Encoding: gzip"}, body: unlinkForm(n), status: mediaType, code: req, descPart: "Content-Encoding"}
		},
		func(n int) hostileRow {
			return hostileRow{name: "unlink: identity Content-Encoding", method: http.MethodPost, target: ingress.PathUnlink,
				headers: []string{auth, formCT, "Content-Encoding: identity"}, body: unlinkForm(n), status: ok}
		},
	)

	// Duplicate members: refused, never one of them silently taken. A key the
	// route does not define (a serverCallbackArg) may repeat: it is kept as a list.
	add(
		get("unlink: user_id twice, different values", ingress.PathUnlink+"?app_id="+appID+"&user_id=1&user_id=2", []string{auth}, bad, req, "user_id"),
		get("unlink: user_id twice, same value", ingress.PathUnlink+"?app_id="+appID+"&user_id=1&user_id=1", []string{auth}, bad, req, "user_id"),
		func(n int) hostileRow {
			return hostileRow{name: "unlink: app_id twice in a form", method: http.MethodPost, target: ingress.PathUnlink,
				headers: []string{auth, formCT}, body: unlinkForm(n) + "&app_id=999", status: bad, code: req, descPart: "app_id"}
		},
		func(n int) hostileRow {
			return hostileRow{name: "unlink: referrer_type twice", method: http.MethodPost, target: ingress.PathUnlink,
				headers: []string{auth, formCT}, body: unlinkForm(n) + "&referrer_type=ACCOUNT_DELETE", status: bad, code: req, descPart: "referrer_type"}
		},
		func(n int) hostileRow {
			return hostileRow{name: "unlink: user_id twice in JSON", method: http.MethodPost, target: ingress.PathUnlink,
				headers: []string{auth, jsonCT}, body: `{"app_id":"` + appID + `","user_id":"1","user_id":"` + uid(n) + `"}`,
				status: bad, code: req, descPart: "twice"}
		},
		func(n int) hostileRow {
			return hostileRow{name: "unlink: user_id twice in JSON, one escaped", method: http.MethodPost, target: ingress.PathUnlink,
				headers: []string{auth, jsonCT}, body: `{"app_id":"` + appID + `","user_id":"1","user\u005fid":"` + uid(n) + `"}`,
				status: bad, code: req, descPart: "twice"}
		},
		get("talk-share: CHAT_TYPE twice", shareQ+"&CHAT_TYPE=OpenChat", []string{auth, "X-Kakao-Resource-ID: r-dup"}, bad, req, "CHAT_TYPE"),
		func(n int) hostileRow {
			return hostileRow{name: "talk-share: an arg twice (kept as a list)", method: http.MethodGet, target: shareQ + "&ref=a&ref=b",
				headers: []string{auth, rid(n)}, status: ok}
		},
		func(n int) hostileRow {
			return hostileRow{name: "talk-share: member twice in a nested arg", method: http.MethodPost, target: ingress.PathTalkShare,
				headers: []string{auth, rid(n), jsonCT}, body: `{"CHAT_TYPE":"MemoChat","HASH_CHAT_ID":"h","x":{"a":1,"a":2}}`,
				status: bad, code: req, descPart: "twice"}
		},
		func(n int) hostileRow {
			return hostileRow{name: "talk-channel: event twice", method: http.MethodPost, target: ingress.PathTalkChannel,
				headers: []string{auth, rid(n), jsonCT}, body: `{"event":"added","event":"blocked","id":"1","channel_public_id":"_c"}`,
				status: bad, code: req, descPart: "twice"}
		},
	)

	// Mixed encodings: members come from one place. A POST body wins only
	// when the query string does not also carry one of the route's fields or
	// a member of the body; other query members are ignored.
	add(
		func(n int) hostileRow {
			return hostileRow{name: "unlink: JSON body and user_id in the query", method: http.MethodPost,
				target: ingress.PathUnlink + "?user_id=2", headers: []string{auth, jsonCT}, body: unlinkJSON(n), status: bad, code: req, descPart: "user_id"}
		},
		func(n int) hostileRow {
			return hostileRow{name: "unlink: form body and app_id in the query", method: http.MethodPost,
				target: ingress.PathUnlink + "?app_id=" + appID, headers: []string{auth, formCT}, body: unlinkForm(n), status: bad, code: req, descPart: "app_id"}
		},
		func(n int) hostileRow {
			return hostileRow{name: "unlink: form body and group_user_token in the query", method: http.MethodPost,
				target: ingress.PathUnlink + "?group_user_token=g", headers: []string{auth, formCT}, body: unlinkForm(n), status: bad, code: req, descPart: "group_user_token"}
		},
		func(n int) hostileRow {
			return hostileRow{name: "unlink: form body and an unrelated query member", method: http.MethodPost,
				target: ingress.PathUnlink + "?tenant=a", headers: []string{auth, formCT}, body: unlinkForm(n), status: ok}
		},
		func(n int) hostileRow {
			return hostileRow{name: "unlink: GET with a JSON body", method: http.MethodGet, target: unlinkQ(n, ""),
				headers: []string{auth, jsonCT}, body: unlinkJSON(n + 1000), status: bad, code: req, descPart: "GET"}
		},
		func(n int) hostileRow {
			return hostileRow{name: "unlink: form body labelled JSON", method: http.MethodPost, target: ingress.PathUnlink,
				headers: []string{auth, jsonCT}, body: unlinkForm(n), status: bad, code: req, descPart: "JSON"}
		},
		func(n int) hostileRow {
			return hostileRow{name: "unlink: JSON body labelled form", method: http.MethodPost, target: ingress.PathUnlink,
				headers: []string{auth, formCT}, body: unlinkJSON(n), status: bad, code: req, descPart: "missing"}
		},
		func(n int) hostileRow {
			return hostileRow{name: "unlink: multipart body", method: http.MethodPost, target: ingress.PathUnlink,
				headers: []string{auth, "Content-Type: multipart/form-data; boundary=x"},
				body:    "--x\r\nContent-Disposition: form-data; name=\"user_id\"\r\n\r\n" + uid(n) + "\r\n--x--\r\n", status: mediaType, code: req, descPart: "Content-Type"}
		},
		func(n int) hostileRow {
			return hostileRow{name: "unlink: JSON with a charset", method: http.MethodPost, target: ingress.PathUnlink,
				headers: []string{auth, "Content-Type: application/json; charset=utf-8"}, body: unlinkJSON(n), status: ok}
		},
		func(n int) hostileRow {
			return hostileRow{name: "unlink: empty POST body, members in the query", method: http.MethodPost, target: unlinkQ(n, ""),
				headers: []string{auth, formCT}, status: ok, raw: strings.SplitN(unlinkQ(n, ""), "?", 2)[1]}
		},
		get("unlink: semicolon-separated query", ingress.PathUnlink+"?app_id="+appID+";user_id=1", []string{auth}, bad, req, "malformed"),
		func(n int) hostileRow {
			return hostileRow{name: "talk-share: JSON body and CHAT_TYPE in the query", method: http.MethodPost,
				target: ingress.PathTalkShare + "?CHAT_TYPE=OpenChat", headers: []string{auth, rid(n), jsonCT}, body: shareJSON, status: bad, code: req, descPart: "CHAT_TYPE"}
		},
		func(n int) hostileRow {
			return hostileRow{name: "talk-share: form body and an arg of the body in the query", method: http.MethodPost,
				target: ingress.PathTalkShare + "?campaign=autumn", headers: []string{auth, rid(n), formCT},
				body: "CHAT_TYPE=MemoChat&HASH_CHAT_ID=h&campaign=spring", status: bad, code: req, descPart: "campaign"}
		},
		func(n int) hostileRow {
			return hostileRow{name: "talk-channel: form body", method: http.MethodPost, target: ingress.PathTalkChannel,
				headers: []string{auth, rid(n), formCT}, body: "event=added&id=1&channel_public_id=_c", status: mediaType, code: req, descPart: "application/json"}
		},
		func(n int) hostileRow {
			return hostileRow{name: "talk-channel: JSON body and id in the query", method: http.MethodPost,
				target: ingress.PathTalkChannel + "?id=2", headers: []string{auth, rid(n), jsonCT}, body: channelJSON(n), status: bad, code: req, descPart: "id"}
		},
	)

	// Very long ids: ids and channel ids are printable text of at most 200
	// bytes; a request line beyond the header cap is refused by net/http.
	add(
		func(n int) hostileRow {
			id := fmt.Sprintf("%0200d", n)
			return hostileRow{name: "unlink: 200-byte user_id", method: http.MethodGet,
				target: ingress.PathUnlink + "?app_id=" + appID + "&user_id=" + id, headers: []string{auth}, status: ok}
		},
		get("unlink: 201-byte user_id", ingress.PathUnlink+"?app_id="+appID+"&user_id="+strings.Repeat("9", 201), []string{auth}, bad, req, "user_id"),
		get("unlink: 8 KiB user_id", ingress.PathUnlink+"?app_id="+appID+"&user_id="+strings.Repeat("9", 8<<10), []string{auth}, bad, req, "user_id"),
		get("unlink: 70 KiB query string", ingress.PathUnlink+"?app_id="+appID+"&user_id="+strings.Repeat("9", 70<<10), []string{auth}, http.StatusRequestHeaderFieldsTooLarge, "", ""),
		get("unlink: 8 KiB app_id", ingress.PathUnlink+"?user_id=1&app_id="+strings.Repeat("7", 8<<10), []string{auth}, unauth, authFail, "app_id"),
		func(n int) hostileRow {
			return hostileRow{name: "unlink: 40-digit JSON number user_id", method: http.MethodPost, target: ingress.PathUnlink,
				headers: []string{auth, jsonCT}, body: `{"app_id":` + appID + `,"user_id":` + strings.Repeat("9", 30) + fmt.Sprintf("%010d", n) + `}`, status: ok}
		},
		func(n int) hostileRow {
			return hostileRow{name: "talk-channel: 1 KiB id", method: http.MethodPost, target: ingress.PathTalkChannel,
				headers: []string{auth, rid(n), jsonCT}, body: `{"event":"added","id":"` + strings.Repeat("1", 1024) + `","channel_public_id":"_c"}`,
				status: bad, code: req, descPart: "id"}
		},
		func(n int) hostileRow {
			return hostileRow{name: "talk-channel: 1 KiB channel_uuid", method: http.MethodPost, target: ingress.PathTalkChannel,
				headers: []string{auth, rid(n), jsonCT}, body: `{"event":"added","id":"1","channel_uuid":"@` + strings.Repeat("c", 1024) + `"}`,
				status: bad, code: req, descPart: "channel_uuid"}
		},
		func(n int) hostileRow {
			return hostileRow{name: "talk-channel: 1 KiB legacy plus_friend_public_id", method: http.MethodPost, target: ingress.PathTalkChannel,
				headers: []string{auth, rid(n), jsonCT}, body: `{"event":"added","id":"1","plus_friend_public_id":"_` + strings.Repeat("c", 1024) + `"}`,
				status: bad, code: req, descPart: "channel_public_id"}
		},
		func(n int) hostileRow {
			return hostileRow{name: "talk-channel: id with a tab", method: http.MethodPost, target: ingress.PathTalkChannel,
				headers: []string{auth, rid(n), jsonCT}, body: `{"event":"added","id":"1\t2","channel_public_id":"_c"}`,
				status: bad, code: req, descPart: "id"}
		},
		func(n int) hostileRow {
			return hostileRow{name: "talk-share: body over MaxBody", method: http.MethodPost, target: ingress.PathTalkShare,
				headers: []string{auth, rid(n), jsonCT}, body: `{"CHAT_TYPE":"MemoChat","HASH_CHAT_ID":"h","pad":"` + strings.Repeat("x", 64<<10) + `"}`,
				status: tooLarge, code: req, descPart: "too large"}
		},
	)

	// Non-UTF-8 bytes: refused anywhere in the members (Kakao sends UTF-8),
	// never stored garbled.
	add(
		get("unlink: %ff in user_id", ingress.PathUnlink+"?app_id="+appID+"&user_id=1%ff", []string{auth}, bad, req, "UTF-8"),
		get("unlink: %ff in referrer_type", ingress.PathUnlink+"?app_id="+appID+"&user_id=1&referrer_type=%c0%af", []string{auth}, bad, req, "UTF-8"),
		get("unlink: %ff in a parameter name", ingress.PathUnlink+"?app_id="+appID+"&user_id=1&x%ff=1", []string{auth}, bad, req, "UTF-8"),
		get("unlink: raw \\xff in the query", ingress.PathUnlink+"?app_id="+appID+"&user_id=1&referrer_type=\xff", []string{auth}, bad, "", ""),
		func(n int) hostileRow {
			return hostileRow{name: "unlink: raw \\xff in a form body", method: http.MethodPost, target: ingress.PathUnlink,
				headers: []string{auth, formCT}, body: unlinkForm(n) + "&x=\xff", status: bad, code: req, descPart: "UTF-8"}
		},
		func(n int) hostileRow {
			return hostileRow{name: "talk-share: raw \\xff in a JSON string", method: http.MethodPost, target: ingress.PathTalkShare,
				headers: []string{auth, rid(n), jsonCT}, body: `{"CHAT_TYPE":"MemoChat","HASH_CHAT_ID":"h","x":"a` + "\xff" + `"}`,
				status: bad, code: req, descPart: "UTF-8"}
		},
		func(n int) hostileRow {
			return hostileRow{name: "talk-channel: UTF-16 body", method: http.MethodPost, target: ingress.PathTalkChannel,
				headers: []string{auth, rid(n), jsonCT}, body: "\xff\xfe{\x00\"\x00}\x00", status: bad, code: req, descPart: "UTF-8"}
		},
		func(n int) hostileRow {
			return hostileRow{name: "talk-channel: UTF-8 BOM", method: http.MethodPost, target: ingress.PathTalkChannel,
				headers: []string{auth, rid(n), jsonCT}, body: "\xef\xbb\xbf" + channelJSON(n), status: bad, code: req, descPart: "JSON"}
		},
	)

	// Odd but valid: stored (normalised in the envelope, raw kept exactly).
	add(
		func(n int) hostileRow {
			return hostileRow{name: "unlink: %00 in referrer_type", method: http.MethodGet, target: unlinkQ(n, "%00"), headers: []string{auth}, status: ok}
		},
		get("unlink: %00 in user_id", ingress.PathUnlink+"?app_id="+appID+"&user_id=1%00", []string{auth}, bad, req, "user_id"),
		func(n int) hostileRow {
			return hostileRow{name: "unlink: NUL and lone surrogate in JSON group_user_token", method: http.MethodPost, target: ingress.PathUnlink,
				headers: []string{auth, jsonCT}, body: `{"app_id":"` + appID + `","user_id":"` + uid(n) + `","group_user_token":"\u0000\ud800"}`, status: ok}
		},
		func(n int) hostileRow {
			return hostileRow{name: "talk-share: NUL, lone surrogates, huge numbers, deep nesting", method: http.MethodPost, target: ingress.PathTalkShare,
				headers: []string{auth, rid(n), jsonCT}, body: `{"CHAT_TYPE":"Memo\u0000Chat","HASH_CHAT_ID":"\udfff","a\u0000":"\ud83d",` +
					`"big":1e999999,"tiny":-1e-99999,"deep":` + strings.Repeat("[", 5000) + strings.Repeat("]", 5000) + `,"unknown":{"x":[true,null]}}`, status: ok}
		},
		func(n int) hostileRow {
			return hostileRow{name: "talk-channel: NUL in event and extra", method: http.MethodPost, target: ingress.PathTalkChannel,
				headers: []string{auth, rid(n), jsonCT}, body: `{"event":"add\u0000ed","id":"` + uid(n) + `","channel_public_id":"_c","note":"\u0000","n":1e131072}`, status: ok}
		},
		func(n int) hostileRow {
			return hostileRow{name: "talk-channel: NUL in id", method: http.MethodPost, target: ingress.PathTalkChannel,
				headers: []string{auth, rid(n), jsonCT}, body: `{"event":"added","id":"1\u0000","channel_public_id":"_c"}`, status: bad, code: req, descPart: "id"}
		},
		func(n int) hostileRow {
			return hostileRow{name: "talk-channel: updated_at beyond year 9999 in UTC", method: http.MethodPost, target: ingress.PathTalkChannel,
				headers: []string{auth, rid(n), jsonCT}, body: `{"event":"added","id":"1","channel_public_id":"_c","updated_at":"9999-12-31T23:59:59-23:59"}`,
				status: bad, code: req, descPart: "updated_at"}
		},
		func(n int) hostileRow {
			return hostileRow{name: "talk-channel: updated_at before year 1 in UTC", method: http.MethodPost, target: ingress.PathTalkChannel,
				headers: []string{auth, rid(n), jsonCT}, body: `{"event":"added","id":"1","channel_public_id":"_c","updated_at":"0001-01-01T00:00:00+01:00"}`,
				status: bad, code: req, descPart: "updated_at"}
		},
	)
	return rows
}

func TestKakaoWebhooksHostile(t *testing.T) {
	e := newWebhookEnv(t)
	h := e.Srv.Handler()
	ts := httptest.NewUnstartedServer(h)
	ts.Config = ingress.HTTPServer("", h)
	ts.Start()
	t.Cleanup(ts.Close)
	addr := ts.Listener.Addr().String()

	rows := kakaoHostileRows()
	if len(rows) < 60 {
		t.Fatalf("only %d rows", len(rows))
	}
	seen := map[string]bool{}
	accepted := 0
	for i, build := range rows {
		c := build(i)
		if seen[c.name] {
			t.Fatalf("duplicate row %q", c.name)
		}
		seen[c.name] = true
		t.Run(c.name, func(t *testing.T) {
			before := e.rows()
			r := rawDo(t, addr, rawRequest(c.method, c.target, c.headers, c.body))
			if r.status != c.status {
				t.Fatalf("got %d %q, want %d", r.status, r.body, c.status)
			}
			after := e.rows()
			if c.status != http.StatusOK {
				if after != before {
					t.Fatalf("a refused request stored %d rows", after-before)
				}
				if c.code != "" {
					expectRefused(t, whResponse{Status: r.status, Header: r.header, Body: r.body}, c.status, c.code, c.descPart)
					if (c.status == http.StatusUnauthorized) != (r.header.Get("WWW-Authenticate") == "KakaoAK") {
						t.Fatalf("WWW-Authenticate %q on a %d", r.header.Get("WWW-Authenticate"), r.status)
					}
				}
				return
			}
			accepted++
			if r.body != "" || after != before+1 {
				t.Fatalf("accepted with body %q and %d new rows, want an empty body and exactly one row", r.body, after-before)
			}
			var raw []byte
			var env json.RawMessage
			if err := e.DB.QueryRow(`SELECT raw, envelope FROM setflow_inbox ORDER BY id DESC LIMIT 1`).Scan(&raw, &env); err != nil {
				t.Fatal(err)
			}
			want := c.raw
			if want == "" {
				want = c.body
				if c.method == http.MethodGet {
					want = strings.SplitN(c.target, "?", 2)[1]
				}
			}
			if string(raw) != want {
				t.Fatalf("raw %q, want %q", trunc(string(raw)), trunc(want))
			}
			var stored event.Envelope
			if err := json.Unmarshal(env, &stored); err != nil || len(stored.Events) != 1 || len(stored.Events[0].Payload) == 0 {
				t.Fatalf("stored envelope %s: %v", trunc(string(env)), err)
			}
		})
	}
	if accepted < 20 {
		t.Fatalf("only %d rows accepted; the baselines are broken", accepted)
	}
	logs := e.Logs.String()
	for _, secret := range []string{strings.ToUpper(adminKey), strings.Repeat("k", 64)} {
		if strings.Contains(logs, secret) {
			t.Fatalf("logs contain a presented key")
		}
	}
}

// The odd values of the accepted rows are stored normalised, and what the
// routes read is what was sent.
func TestKakaoWebhooksOddValuesStoredNormalised(t *testing.T) {
	e := newWebhookEnv(t)
	a := kakaoAuth(adminKey)
	body := `{"CHAT_TYPE":"Memo\u0000Chat","HASH_CHAT_ID":"\udfff","big":1e999999,"deep":` +
		strings.Repeat("[", 300) + strings.Repeat("]", 300) + `,"ok":"라이언"}`
	expectOK(t, e.do(http.MethodPost, ingress.PathTalkShare, "application/json", body, a, "X-Kakao-Resource-ID: odd"), "odd talk share")
	p := sharePayload(t, e, "odd")
	args := argsOf(t, p)
	if p.ChatType != "Memo\uFFFDChat" || p.HashChatID != "\uFFFD" || args["big"] != "1e999999" || args["ok"] != "라이언" {
		t.Fatalf("payload %+v args %v", p, args)
	}
	deep, ok := args["deep"].([]any)
	for d := 1; ok && d < event.MaxStoredDepth-2; d++ {
		deep, ok = deep[0].([]any)
	}
	if !ok {
		t.Fatalf("deep arg not kept as arrays down to the storage depth: %v", args["deep"])
	}
	if string(e.entry(ingress.TalkShareKey("odd")).Raw) != body {
		t.Fatal("raw body not kept byte-exact")
	}

	q := url.Values{"app_id": {appID}, "user_id": {"4711"}, "referrer_type": {"A\x00B"}}.Encode()
	expectOK(t, e.do(http.MethodGet, ingress.PathUnlink+"?"+q, "", "", a), "NUL in referrer_type")
	en := e.entry(unlinkKey(e, "4711", "A\x00B"))
	if pl := whPayload(t, en.Envelope.Events[0].Payload); pl["referrer_type"] != "A\uFFFDB" || string(en.Raw) != q {
		t.Fatalf("payload %v raw %q", pl, en.Raw)
	}
}

func trunc(s string) string {
	if len(s) > 300 {
		return s[:150] + "…" + s[len(s)-150:]
	}
	return s
}
