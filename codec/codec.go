// Package codec encrypts setflow's Temporal payloads with AES-256-GCM.
//
// Workflow inputs and results carry Kakao user ids, event payloads and
// sometimes e-mail addresses; Temporal stores them in its history. The Codec
// encrypts every payload before it leaves the process, the FailureConverter
// moves failure messages and stack traces into an encrypted payload, and the
// codec server (Handler) lets the Temporal UI and CLI decrypt them for people
// allowed to see them.
//
// An encrypted payload has the metadata
//
//	encoding:          binary/encrypted
//	encryption-key-id: <id of the key in the KeyRing>
//
// and the data nonce(12 bytes) || AES-256-GCM(proto-encoded original payload).
// Keys rotate by putting a new key first in SETFLOW_CODEC_KEYS and keeping the
// old ones behind it until no retained history uses them.
package codec

import (
	"crypto/rand"
	"errors"
	"fmt"
	"strings"

	commonpb "go.temporal.io/api/common/v1"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"google.golang.org/protobuf/proto"
)

const (
	// Encoding is the metadata encoding of an encrypted payload.
	Encoding = "binary/encrypted"
	// MetadataKeyID is the metadata key naming the encryption key.
	MetadataKeyID = "encryption-key-id"

	nonceSize = 12
)

var (
	// ErrUnknownKey means a payload names a key id that is not in the ring.
	ErrUnknownKey = errors.New("unknown encryption key id")
	// ErrDecrypt means a payload failed authentication: it was altered, or
	// encrypted with different key material under the same id.
	ErrDecrypt = errors.New("payload decryption failed")
)

// Codec is a converter.PayloadCodec encrypting with the ring's current key and
// decrypting with whichever key a payload names.
type Codec struct {
	ring *KeyRing
}

var _ converter.PayloadCodec = (*Codec)(nil)

// New returns a Codec for the ring.
func New(ring *KeyRing) *Codec {
	if ring == nil {
		panic("codec: nil KeyRing")
	}
	return &Codec{ring: ring}
}

// Encode encrypts every payload with the current key.
func (c *Codec) Encode(payloads []*commonpb.Payload) ([]*commonpb.Payload, error) {
	id := c.ring.current
	aead := c.ring.aeads[id]
	out := make([]*commonpb.Payload, len(payloads))
	for i, p := range payloads {
		plain, err := proto.Marshal(p)
		if err != nil {
			return payloads, fmt.Errorf("codec: marshal payload: %w", err)
		}
		buf := make([]byte, nonceSize, nonceSize+len(plain)+aead.Overhead())
		if _, err := rand.Read(buf); err != nil {
			return payloads, fmt.Errorf("codec: nonce: %w", err)
		}
		out[i] = &commonpb.Payload{
			Metadata: map[string][]byte{
				converter.MetadataEncoding: []byte(Encoding),
				MetadataKeyID:              []byte(id),
			},
			Data: aead.Seal(buf, buf, plain, nil),
		}
	}
	return out, nil
}

// Decode decrypts the payloads encrypted by a Codec and passes every other
// payload through unchanged, so that histories written before encryption was
// turned on stay readable.
func (c *Codec) Decode(payloads []*commonpb.Payload) ([]*commonpb.Payload, error) {
	out := make([]*commonpb.Payload, len(payloads))
	for i, p := range payloads {
		if string(p.GetMetadata()[converter.MetadataEncoding]) != Encoding {
			out[i] = p
			continue
		}
		d, err := c.decrypt(p)
		if err != nil {
			return payloads, err
		}
		out[i] = d
	}
	return out, nil
}

func (c *Codec) decrypt(p *commonpb.Payload) (*commonpb.Payload, error) {
	id := string(p.Metadata[MetadataKeyID])
	if id == "" {
		return nil, fmt.Errorf("codec: encrypted payload has no %s metadata", MetadataKeyID)
	}
	aead, ok := c.ring.aeads[id]
	if !ok {
		return nil, fmt.Errorf("codec: payload encrypted with key id %q, which is not in the key ring (%s): %w",
			id, strings.Join(c.ring.ids, ", "), ErrUnknownKey)
	}
	if len(p.Data) < nonceSize+aead.Overhead() {
		return nil, fmt.Errorf("codec: encrypted payload (key id %q) is truncated: %w", id, ErrDecrypt)
	}
	plain, err := aead.Open(nil, p.Data[:nonceSize], p.Data[nonceSize:], nil)
	if err != nil {
		return nil, fmt.Errorf("codec: payload with key id %q failed authentication (altered, or different key material under that id): %w", id, ErrDecrypt)
	}
	var d commonpb.Payload
	if err := proto.Unmarshal(plain, &d); err != nil {
		return nil, fmt.Errorf("codec: decrypted payload (key id %q) is not a payload: %w", id, err)
	}
	return &d, nil
}

// DataConverter is the SDK's default data converter with payloads encrypted.
// Set it as client.Options.DataConverter on every client and worker.
func DataConverter(ring *KeyRing) converter.DataConverter {
	return converter.NewCodecDataConverter(converter.GetDefaultDataConverter(), New(ring))
}

// FailureConverter moves failure messages and stack traces into an encrypted
// payload (EncodeCommonAttributes), so that error texts, which may quote user
// data, are encrypted too; failure details are encrypted as well. Set it as
// client.Options.FailureConverter next to DataConverter. It takes the ring
// because the SDK's failure converter encodes with its own data converter, not
// the client's.
func FailureConverter(ring *KeyRing) converter.FailureConverter {
	return temporal.NewDefaultFailureConverter(temporal.DefaultFailureConverterOptions{
		DataConverter:          DataConverter(ring),
		EncodeCommonAttributes: true,
	})
}
