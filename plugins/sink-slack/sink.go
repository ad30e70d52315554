// Package sinkslack is the built-in `sink "slack"`: one Slack message per
// record, posted to an incoming webhook (webhook_url) or through the Web
// API's chat.postMessage (token and channel). Deliveries go through the
// engine's outbox (sdk/delivery), as the webhook sink's do: they are stored
// before the batch is acked and retried on a schedule, across restarts,
// until delivered or dead. Sends are paced at one message per second per
// channel (per webhook URL in incoming-webhook mode), Slack's own limit.
//
// Slack's secrets never leave the sink's memory: the token and the webhook
// URL (whose path is itself a credential) are read from the configuration
// when a message is sent, never stored in the outbox, and scrubbed from
// every error, log line and logged response body.
package sinkslack

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/delivery"
	"github.com/pipelinehq/pipeline/sdk/delivery/policy"
	"github.com/pipelinehq/pipeline/sdk/netguard"
)

// Version is the plugin's version.
const Version = "0.1.0"

// DefaultAPIURL is the base of Slack's Web API.
const DefaultAPIURL = "https://slack.com/api"

// MaxBlocks is the most blocks Slack takes in one message.
const MaxBlocks = 50

// maxLogged is how much of a response body the delivery log keeps.
const maxLogged = 4096

var (
	_ sdk.Sink           = (*Sink)(nil)
	_ sdk.SinkCloser     = (*Sink)(nil)
	_ delivery.Transport = (*Sink)(nil)
)

type config struct {
	WebhookURL   string                    `json:"webhook_url"`
	Token        string                    `json:"token"`
	Channel      string                    `json:"channel"`
	Text         string                    `json:"text"`
	Blocks       string                    `json:"blocks"`
	APIURL       string                    `json:"api_url"`
	Timeout      string                    `json:"timeout"`
	Concurrency  int                       `json:"concurrency"`
	RateLimit    string                    `json:"rate_limit"`
	RateScope    string                    `json:"rate_limit_scope"`
	Retry        *policy.RetryConfig       `json:"retry"`
	Breaker      *policy.BreakerConfig     `json:"circuit_breaker"`
	Retention    *delivery.RetentionConfig `json:"retention"`
	AllowPrivate bool                      `json:"allow_private_networks"`
	HTTPSOnly    bool                      `json:"https_only"`
}

type mode int

const (
	modeWebhook mode = iota + 1 // incoming webhook: POST to webhook_url
	modeAPI                     // Web API: chat.postMessage with a bot token
)

// Sink posts one Slack message per record.
type Sink struct {
	cfg     config
	name    string
	mode    mode
	noWait  bool
	timeout time.Duration
	client  *http.Client
	guard   netguard.Options
	postURL string          // chat.postMessage under api_url (Web API mode)
	hook    string          // the webhook URL, redacted, as its endpoint
	blocks  json.RawMessage // blocks without placeholders, checked and compacted
	secrets []string        // strings scrubbed from every message, longest first
	limiter *policy.Limiter
	d       *delivery.Deliverer
	log     *slog.Logger // nil: sdk.Logger(); tests capture it
	// now and sleep are the clock the sends are paced by (the Deliverer's
	// Options.Now and Options.Sleep); tests set them before Configure.
	// nil: time.Now and a real wait.
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) bool
}

// Info describes the plugin.
func (s *Sink) Info() sdk.Info {
	return sdk.Info{
		Kind:        sdk.KindSink,
		Type:        "slack",
		Version:     Version,
		Description: "Posts a Slack message per record, through an incoming webhook or chat.postMessage, from a durable outbox with retries and per-channel pacing.",
		Config: []sdk.Attribute{
			{Name: "webhook_url", Type: sdk.String, Description: "Incoming-webhook URL (https://hooks.slack.com/services/...). It is a secret: use env(). Set this, or token and channel."},
			{Name: "token", Type: sdk.String, Description: "Bot token (xoxb-...) for chat.postMessage, with the chat:write scope. A secret: use env()."},
			{Name: "channel", Type: sdk.String, Template: true, Description: `Channel for chat.postMessage: an ID such as "C0123456789" (or "#name"); may hold {{ }} placeholders. Only with token.`},
			{Name: "text", Type: sdk.String, Required: true, Template: true, Description: "Message text (mrkdwn), with {{ }} placeholders; the notification fallback when blocks are set."},
			{Name: "blocks", Type: sdk.String, Template: true, Description: "Block Kit blocks: a JSON array, as a string, with {{ }} placeholders; each record's rendering must be valid JSON (use {{ toJSON(field) }} for free text)."},
			{Name: "api_url", Type: sdk.String, Default: DefaultAPIURL, Description: "Base URL of Slack's Web API; chat.postMessage is under it."},
			{Name: "timeout", Type: sdk.Duration, Default: "10s", Description: "Per-request timeout."},
			{Name: "concurrency", Type: sdk.Number, Default: 1, Description: "Requests in flight at once per channel (per webhook URL); 1 keeps a channel's messages in order."},
			{Name: "rate_limit", Type: sdk.String, Default: "1/s", Description: `Most messages per channel (per webhook URL), e.g. "1/s" (Slack's limit) or "20/m".`},
			delivery.ScopeAttribute(),
			delivery.RetryAttribute(),
			delivery.BreakerAttribute("a channel (a webhook)"),
			delivery.RetentionAttribute(),
			{Name: "allow_private_networks", Type: sdk.Bool, Default: false, Description: "Allow loopback, private and link-local addresses (off by default: SSRF guard). PIPELINE_ALLOW_PRIVATE_NETWORKS=1 does the same."},
			{Name: "https_only", Type: sdk.Bool, Default: false, Description: "Refuse plain http URLs."},
		},
	}
}

// Configure checks the block. Its errors never repeat the token or the
// webhook URL.
func (s *Sink) Configure(_ context.Context, cfg sdk.Config) error {
	if err := cfg.Decode(&s.cfg); err != nil {
		return err // type errors name the field, never the value
	}
	s.name, s.noWait = cfg.Name, cfg.NoWait
	c := &s.cfg
	// Values read with env() or file() often end in a newline.
	c.WebhookURL = strings.TrimSpace(c.WebhookURL)
	c.Token = strings.TrimSpace(c.Token)
	s.secrets = secretStrings(c.WebhookURL, c.Token)
	if err := s.configure(cfg); err != nil {
		return errors.New(s.scrub(err.Error()))
	}
	return nil
}

func (s *Sink) configure(cfg sdk.Config) error {
	c := &s.cfg
	if !cfg.HasTemplate("channel") {
		c.Channel = strings.TrimSpace(c.Channel)
	}
	hasChannel := c.Channel != "" || cfg.HasTemplate("channel")
	switch {
	case c.WebhookURL != "" && c.Token != "":
		return errors.New("webhook_url and token are both set: configure one mode, webhook_url for an incoming webhook or token and channel for chat.postMessage")
	case c.WebhookURL == "" && c.Token == "":
		return errors.New("neither webhook_url nor token is set: configure webhook_url for an incoming webhook, or token and channel for chat.postMessage")
	case c.WebhookURL != "" && hasChannel:
		return errors.New("channel: an incoming webhook posts to the channel it was created for; channel goes with token (chat.postMessage)")
	case c.Token != "" && !hasChannel:
		return errors.New(`channel: required with token, e.g. channel = "C0123456789"`)
	case c.WebhookURL != "":
		s.mode = modeWebhook
	default:
		s.mode = modeAPI
	}
	s.guard = netguard.Options{AllowPrivate: c.AllowPrivate, HTTPSOnly: c.HTTPSOnly}.WithEnv()

	if s.mode == modeWebhook {
		if err := s.guard.CheckURL(c.WebhookURL); err != nil {
			return fmt.Errorf("webhook_url: %w", err)
		}
		s.hook = redactURL(c.WebhookURL)
	}
	if s.mode == modeAPI {
		if strings.Contains(c.Token, "://") {
			return errors.New("token: looks like a URL; an incoming-webhook URL goes in webhook_url")
		}
		if strings.ContainsFunc(c.Token, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
			return errors.New("token: contains spaces or control characters")
		}
	}
	post, err := s.checkAPIURL(c.APIURL)
	if err != nil {
		return fmt.Errorf("api_url: %w", err)
	}
	s.postURL = post

	if strings.TrimSpace(c.Text) == "" && strings.TrimSpace(c.Blocks) == "" {
		return errors.New("text: must not be empty")
	}
	if !cfg.HasTemplate("blocks") {
		if s.blocks, err = parseBlocks(c.Blocks); err != nil {
			return fmt.Errorf("blocks: %w", err)
		}
	}

	d, err := time.ParseDuration(c.Timeout)
	if err != nil || d <= 0 {
		return fmt.Errorf("timeout %q is not a duration such as \"10s\"", c.Timeout)
	}
	s.timeout = d
	if c.Concurrency < 1 {
		return errors.New("concurrency must be at least 1")
	}
	log := s.log
	if log == nil {
		log = sdk.Logger()
	}
	if s.now == nil {
		s.now = time.Now
	}
	opts := delivery.Options{Concurrency: c.Concurrency, Log: log.With("sink", s.name), Now: s.now, Sleep: s.sleep}
	if opts.Retry, opts.Breaker, err = delivery.Policies(c.Retry, c.Breaker); err != nil {
		return err
	}
	if opts.Retention, err = delivery.ParseRetention(c.Retention); err != nil {
		return err
	}
	rate := policy.SlackPerChannel
	if c.RateLimit != "" {
		if rate, err = policy.ParseRate(c.RateLimit); err != nil {
			return fmt.Errorf("rate_limit: %w", err)
		}
	}
	if err := delivery.CheckScope(c.RateScope); err != nil {
		return err
	}
	s.limiter = policy.NewLimiter(rate, 1)
	opts.Limiter = s.limiter
	if c.RateScope == delivery.ScopeCluster {
		// Slack's limit is per channel for the whole app: the workers of a
		// cluster keep it together (a Retry-After still pauses this one).
		opts.Limiter = delivery.SharedLimiter(cfg.Outbox, s.limiter, rate, 1, opts.Log)
	}
	transport := s.guard.Transport()
	// In Web API mode every channel's requests go to the one API host.
	transport.MaxIdleConnsPerHost = max(c.Concurrency, 16)
	s.client = &http.Client{
		Timeout:   s.timeout,
		Transport: transport,
		// Slack does not redirect its API; a redirect is a failure.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	s.d = delivery.New(s, cfg.Outbox, opts)
	return nil
}

// checkAPIURL checks api_url and returns chat.postMessage's URL under it.
func (s *Sink) checkAPIURL(raw string) (string, error) {
	if raw == "" {
		raw = DefaultAPIURL
	}
	if err := s.guard.CheckURL(raw); err != nil {
		return "", err
	}
	u, err := url.Parse(raw)
	if err != nil { // CheckURL parsed it already
		return "", errors.New("cannot parse URL")
	}
	if u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return "", errors.New("must be a base URL such as \"https://slack.com/api\", without credentials, query or fragment")
	}
	return u.JoinPath("chat.postMessage").String(), nil
}

// Write stores the batch's deliveries in the outbox; the batch is acked
// once they are durable there.
func (s *Sink) Write(ctx context.Context, b sdk.Batch) error {
	if err := s.d.Enqueue(ctx, b); err != nil {
		return sdk.Redact(err, s.secrets...)
	}
	return nil
}

// Close waits until every delivery has succeeded or is dead, unless the run
// asked not to wait.
func (s *Sink) Close(ctx context.Context) error { return s.d.Close(ctx, !s.noWait) }

// message is a chat.postMessage or incoming-webhook request body.
type message struct {
	Channel string          `json:"channel,omitempty"`
	Text    string          `json:"text"`
	Blocks  json.RawMessage `json:"blocks,omitempty"`
}

// Prepare implements delivery.Transport. The payload is the request body,
// exactly as it is sent on every attempt; it holds no secret. The endpoint,
// which pacing, concurrency and the breaker go by, is the channel, or the
// redacted webhook URL.
//
// Rendered blocks that are not a JSON array of blocks are an error: the
// template (or the data it draws on) needs fixing. A channel that renders
// empty is not: that record's delivery goes to the dead letter.
func (s *Sink) Prepare(b sdk.Batch, i int) (sdk.Delivery, error) {
	m := message{Text: s.cfg.Text, Blocks: s.blocks}
	if t, ok := b.Template("text", i); ok {
		m.Text = t
	}
	if raw, ok := b.Template("blocks", i); ok {
		blocks, err := parseBlocks(raw)
		if err != nil {
			return sdk.Delivery{}, fmt.Errorf("blocks: %w", err)
		}
		m.Blocks = blocks
	}
	endpoint := s.hook
	if s.mode == modeAPI {
		m.Channel = strings.TrimSpace(s.cfg.Channel)
		if ch, ok := b.Template("channel", i); ok {
			m.Channel = strings.TrimSpace(ch)
		}
		endpoint = m.Channel
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // Slack's mrkdwn links are <url|text>
	if err := enc.Encode(m); err != nil {
		return sdk.Delivery{}, err
	}
	return sdk.Delivery{ID: b.ID(i), Endpoint: endpoint, Payload: bytes.TrimSuffix(buf.Bytes(), []byte("\n"))}, nil
}

// apiResponse is what chat.postMessage answers (and, on some failures, an
// incoming webhook).
type apiResponse struct {
	OK    bool   `json:"ok"`
	Error string `json:"error"`
}

// Send implements delivery.Transport: one POST, classified with
// policy.ClassifySlack. A failure's Err carries Slack's error string, so
// that the delivery log shows it.
func (s *Sink) Send(ctx context.Context, d sdk.Delivery) delivery.Result {
	res := s.send(ctx, d)
	if res.Err != nil {
		res.Err = sdk.Redact(res.Err, s.secrets...)
	}
	return res
}

func (s *Sink) send(ctx context.Context, d sdk.Delivery) delivery.Result {
	fail := func(err error) delivery.Result {
		o := policy.ClassifySlack(0, false, "", err)
		return delivery.Result{Err: err, Outcome: &o}
	}
	if !json.Valid(d.Payload) {
		return fail(policy.Permanent(errors.New("unreadable outbox entry: the stored message is not JSON")))
	}
	target, what := s.cfg.WebhookURL, "incoming webhook"
	if s.mode == modeAPI {
		target, what = s.postURL, "chat.postMessage"
		if d.Endpoint == "" {
			return fail(policy.Permanent(errors.New("chat.postMessage: the channel rendered empty for this record")))
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(d.Payload))
	if err != nil {
		return fail(policy.Permanent(fmt.Errorf("%s: cannot build the request", what)))
	}
	req.Header.Set("User-Agent", "pipeline-slack/"+Version)
	if s.mode == modeAPI {
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
		req.Header.Set("Authorization", "Bearer "+s.cfg.Token)
	} else {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return fail(s.describe(err, target))
	}
	defer resp.Body.Close()
	body := s.readBody(resp.Body)
	res := delivery.Result{Status: resp.StatusCode, Header: resp.Header, Body: body}

	var ok bool
	var slackErr string
	var parseErr error
	switch {
	case s.mode == modeWebhook && resp.StatusCode == http.StatusOK:
		ok = true // Slack answers "ok"
	case s.mode == modeWebhook:
		slackErr = errorString(body)
	case resp.StatusCode == http.StatusOK:
		var ar apiResponse
		if err := json.Unmarshal(body, &ar); err != nil {
			// Not Slack speaking (a proxy, a captive portal): try again.
			parseErr = fmt.Errorf("%s: 200 with a body that is not Slack's JSON answer", what)
		}
		ok, slackErr = ar.OK, ar.Error
	default:
		slackErr = errorString(body)
	}
	outcome := policy.ClassifySlack(resp.StatusCode, ok, slackErr, parseErr)
	res.Outcome = &outcome
	if outcome == policy.Delivered {
		return res
	}
	if ra, ok := policy.ParseRetryAfter(resp.Header.Get("Retry-After"), s.now()); ok && outcome == policy.RetryLater {
		// Slack limits the channel, not just this message: hold back the
		// channel's other messages too.
		s.limiter.Pause(d.Endpoint, s.now().Add(ra))
	}
	switch {
	case parseErr != nil:
		res.Err = parseErr
	case resp.StatusCode == http.StatusOK && slackErr == "":
		res.Err = fmt.Errorf("%s: \"ok\": false without an error string", what)
	case resp.StatusCode == http.StatusOK:
		res.Err = fmt.Errorf("%s: %s", what, slackErr)
	case slackErr == "":
		res.Err = fmt.Errorf("%s: %d %s", what, resp.StatusCode, http.StatusText(resp.StatusCode))
	default:
		res.Err = fmt.Errorf("%s: %d %s", what, resp.StatusCode, slackErr)
	}
	return res
}

// readBody reads the start of a response body for the log, with the
// secrets replaced (a proxy may echo the request). It reads a little more
// than it keeps, so that a secret straddling the cut is replaced too.
func (s *Sink) readBody(r io.Reader) []byte {
	extra := 0
	if len(s.secrets) > 0 {
		extra = len(s.secrets[0])
	}
	body, _ := io.ReadAll(io.LimitReader(r, int64(maxLogged+extra)))
	io.Copy(io.Discard, io.LimitReader(r, 1<<20))
	body = []byte(s.scrub(string(body)))
	if len(body) > maxLogged {
		body = body[:maxLogged]
	}
	return body
}

// errorString is Slack's error string in a failed answer: the "error" of a
// JSON body, else the body's text (an incoming webhook's "no_service"),
// on one line and short.
func errorString(body []byte) string {
	var ar apiResponse
	if json.Unmarshal(body, &ar) == nil && ar.Error != "" {
		return oneLine(ar.Error, 200)
	}
	return oneLine(string(body), 200)
}

func oneLine(s string, limit int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) <= limit {
		return s
	}
	cut := limit
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// describe turns a client error into a message without the URL, keeping
// what Classify needs (timeouts, blocked addresses, cancellation).
func (s *Sink) describe(err error, target string) error {
	shown := redactURL(target)
	if s.mode == modeAPI {
		shown = target // api_url: checked to hold no credentials
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err // url.Error repeats the whole URL
	}
	if errors.Is(err, netguard.ErrBlocked) || errors.Is(err, netguard.ErrInvalidURL) {
		return policy.Permanent(fmt.Errorf("POST %s: %w", shown, err))
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("POST %s: timed out after %s: %w", shown, s.timeout, context.DeadlineExceeded)
	}
	return fmt.Errorf("POST %s: %w", shown, err)
}

// redactURL shows a URL without what may be secret: no credentials, query
// or fragment, and the last path segment (the secret of a Slack webhook
// URL, https://hooks.slack.com/services/T…/B…/<secret>) masked:
// "hooks.slack.com/services/T0001/B0002/***".
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "<webhook url>"
	}
	path := strings.TrimSuffix(u.EscapedPath(), "/")
	if i := strings.LastIndexByte(path, '/'); i >= 0 && i < len(path)-1 {
		path = path[:i+1] + "***"
	}
	return u.Host + path
}

// secretStrings lists what must never be shown: the token, the webhook URL
// and the parts of it that are secret, longest first.
func secretStrings(webhookURL, token string) []string {
	var out []string
	add := func(v string, minLen int) {
		if len(v) >= minLen && !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	add(token, 1)
	if webhookURL != "" {
		add(webhookURL, 1)
		if u, err := url.Parse(webhookURL); err == nil {
			add(u.Path, 2)
			add(u.EscapedPath(), 2)
			add(u.RawQuery, 6)
			if u.User != nil {
				add(u.User.String(), 1)
			}
			// A Slack webhook's secret is its last segment, 24 characters;
			// shorter ones ("hook") are too common to replace in messages.
			p := strings.TrimSuffix(u.Path, "/")
			add(p[strings.LastIndexByte(p, '/')+1:], 12)
		}
	}
	slices.SortFunc(out, func(a, b string) int { return len(b) - len(a) })
	return out
}

// scrub replaces every secret in msg.
func (s *Sink) scrub(msg string) string { return sdk.RedactString(msg, s.secrets...) }

// parseBlocks checks that raw is a JSON array of Block Kit blocks (objects
// with a "type") and returns it compacted; nil for an empty string or an
// empty array.
func parseBlocks(raw string) (json.RawMessage, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return nil, nil
	}
	var v any
	if err := json.Unmarshal([]byte(raw), &v); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return nil, fmt.Errorf("not valid JSON: %s at offset %d, near %s (placeholders are inserted as they are: use {{ toJSON(field) }} for text that may hold quotes)", se.Error(), se.Offset, near(raw, int(se.Offset)))
		}
		return nil, fmt.Errorf("not valid JSON: %v", err)
	}
	list, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf(`must be a JSON array of Block Kit blocks, [{"type": "section", ...}], not %s`, jsonKind(v))
	}
	if len(list) > MaxBlocks {
		return nil, fmt.Errorf("has %d blocks; Slack takes at most %d in a message", len(list), MaxBlocks)
	}
	for i, el := range list {
		obj, ok := el.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("block %d is %s, not an object", i+1, jsonKind(el))
		}
		if t, _ := obj["type"].(string); t == "" {
			return nil, fmt.Errorf(`block %d has no "type"`, i+1)
		}
	}
	if len(list) == 0 {
		return nil, nil
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, []byte(raw)); err != nil {
		return nil, fmt.Errorf("not valid JSON: %v", err)
	}
	return buf.Bytes(), nil
}

// near quotes the text around byte offset off of s.
func near(s string, off int) string {
	from, to := max(0, off-24), min(len(s), off+8)
	for from > 0 && !utf8.RuneStart(s[from]) {
		from--
	}
	for to < len(s) && !utf8.RuneStart(s[to]) {
		to++
	}
	return fmt.Sprintf("%q", s[from:to])
}

func jsonKind(v any) string {
	switch v.(type) {
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	case string:
		return "a string"
	case float64:
		return "a number"
	case bool:
		return "a boolean"
	}
	return "null"
}
