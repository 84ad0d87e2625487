package config

import (
	"errors"
	"flag"
)

// Tracing configures OpenTelemetry traces over OTLP/HTTP (ingress, relay,
// worker, dev): from the webhook's receipt through the inbox into the
// workflow and its activities.
type Tracing struct {
	Endpoint    string
	SampleRatio float64
}

func (t *Tracing) settings() []Setting {
	return []Setting{
		{Env: "SETFLOW_OTLP_ENDPOINT", Flag: "otlp-endpoint", URL: true,
			Usage: "ingress, relay, worker: OTLP/HTTP `URL` that traces go to (e.g. http://otel-collector:4318), empty for none", ptr: &t.Endpoint},
		{Env: "SETFLOW_OTLP_SAMPLE_RATIO", Flag: "otlp-sample-ratio", Default: "1", Usage: "ingress, relay, worker: fraction of traces kept, 0 to 1", ptr: &t.SampleRatio},
	}
}

// Register adds the tracing flags.
func (t *Tracing) Register(fs *flag.FlagSet) { register(fs, t.settings()) }

// Validate reports impossible values by name.
func (t *Tracing) Validate() error {
	if t.SampleRatio < 0 || t.SampleRatio > 1 {
		return errors.New("SETFLOW_OTLP_SAMPLE_RATIO (-otlp-sample-ratio) must be from 0 to 1")
	}
	return nil
}

// codecKeysSetting is the payload key ring, which every process talking to
// the namespace and the codec server share.
func codecKeysSetting(p *string) Setting {
	return Setting{Env: EnvCodecKeys, Secret: true,
		Usage: "relay, worker, codec-server (required; dev: payloads in clear, with a warning): payload key ring id:base64(32 bytes), first = current, e.g. k1:$(openssl rand -base64 32)",
		ptr:   p}
}

// Codec configures `setflow codec-server`, which decrypts payloads for the
// Temporal UI and CLI.
type Codec struct {
	Keys        string
	AuthToken   string
	Listen      string
	CORSOrigins []string
}

func (c *Codec) settings() []Setting {
	return []Setting{
		codecKeysSetting(&c.Keys),
		{Env: EnvCodecAuthToken, Secret: true,
			Usage: "codec-server (required): bearer token clients send (Authorization: Bearer <token>)", ptr: &c.AuthToken},
		{Env: "SETFLOW_CODEC_LISTEN", Flag: "listen", Default: ":8081", Usage: "codec-server: HTTP listen address", ptr: &c.Listen},
		{Env: "SETFLOW_CODEC_CORS_ORIGINS", Flag: "cors-origin", Default: "http://localhost:8233",
			Usage: `codec-server: browser origins allowed to call it, comma-separated, e.g. the Temporal UI's; "*" for any`, ptr: &c.CORSOrigins},
	}
}

// Register adds the codec server's flags and reads its secrets.
func (c *Codec) Register(fs *flag.FlagSet) { register(fs, c.settings()) }
