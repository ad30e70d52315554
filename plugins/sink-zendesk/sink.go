// Package sinkzendesk is the built-in `sink "zendesk"`: it updates the
// Zendesk ticket each record names: tags added or removed, group, priority,
// status, and an internal note. Deliveries go through the engine's outbox
// (sdk/delivery), as the webhook sink's do: they are stored before the batch
// is acked and retried on a schedule, across restarts, until delivered or
// dead.
//
// Tickets that get the same change go together through Update Many Tickets
// (PUT /api/v2/tickets/update_many.json?ids=…, at most 100 ids), and the
// background job that starts is polled (GET /api/v2/job_statuses/{id}.json)
// until Zendesk says how each ticket fared. Tag changes always go through
// update_many, even for one ticket: Zendesk documents additional_tags and
// remove_tags, the only way to change tags without replacing the ticket's
// other tags, for bulk updates only. A delivery with an internal note goes
// by itself, since notes differ per record and adding one is not
// idempotent: through update_many with that one id when it also changes
// tags, else through PUT /api/v2/tickets/{id}.json.
package sinkzendesk

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/delivery"
	"github.com/pipelinehq/pipeline/sdk/delivery/policy"
	"github.com/pipelinehq/pipeline/sdk/netguard"
)

// Version is the plugin's version.
const Version = "0.1.0"

// MaxBatch is the most ticket ids Zendesk takes in one update_many call.
const MaxBatch = 100

const (
	// logBody is how much of a response the delivery log keeps.
	logBody = 4096
	// maxBody is how much of a response is read: a job status with 100
	// results is well within it.
	maxBody = 1 << 20
)

var (
	_ sdk.Sink                = (*Sink)(nil)
	_ sdk.SinkCloser          = (*Sink)(nil)
	_ delivery.BatchTransport = (*Sink)(nil)
)

var (
	priorities  = []string{"low", "normal", "high", "urgent"}
	statuses    = []string{"new", "open", "pending", "hold", "solved", "closed"}
	subdomainRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
)

type config struct {
	Subdomain    string                    `json:"subdomain"`
	APIURL       string                    `json:"api_url"`
	Email        string                    `json:"email"`
	APIToken     string                    `json:"api_token"`
	TicketID     string                    `json:"ticket_id"`
	AddTags      []string                  `json:"add_tags"`
	RemoveTags   []string                  `json:"remove_tags"`
	GroupID      *json.Number              `json:"group_id"`
	Priority     string                    `json:"priority"`
	Status       string                    `json:"status"`
	Comment      string                    `json:"comment"`
	Timeout      string                    `json:"timeout"`
	Concurrency  int                       `json:"concurrency"`
	RateLimit    string                    `json:"rate_limit"`
	PollInterval string                    `json:"poll_interval"`
	PollTimeout  string                    `json:"poll_timeout"`
	Retry        *policy.RetryConfig       `json:"retry"`
	Breaker      *policy.BreakerConfig     `json:"circuit_breaker"`
	Retention    *delivery.RetentionConfig `json:"retention"`
	AllowPrivate bool                      `json:"allow_private_networks"`
	HTTPSOnly    bool                      `json:"https_only"`
}

// change is the ticket object of an update request: what a delivery does to
// its ticket. Tags are only ever added or removed (additional_tags,
// remove_tags), never set: a ticket's other tags stay as they are.
type change struct {
	AdditionalTags []string `json:"additional_tags,omitempty"`
	RemoveTags     []string `json:"remove_tags,omitempty"`
	GroupID        int64    `json:"group_id,omitempty"`
	Priority       string   `json:"priority,omitempty"`
	Status         string   `json:"status,omitempty"`
	Comment        *note    `json:"comment,omitempty"`
}

// note is an internal note: a comment only agents see.
type note struct {
	Body   string `json:"body"`
	Public bool   `json:"public"`
}

func (c change) hasTags() bool { return len(c.AdditionalTags) > 0 || len(c.RemoveTags) > 0 }

// payload is what the outbox keeps for one delivery: everything needed to
// send it again from a later run or a replay, except the credentials, which
// come from the block.
type payload struct {
	Base     string `json:"base"` // the account's API base URL
	TicketID int64  `json:"ticket_id"`
	Ticket   change `json:"ticket"`
}

// body is the JSON of an update request.
type body struct {
	Ticket change `json:"ticket"`
}

// Sink updates Zendesk tickets.
type Sink struct {
	cfg          config
	name         string
	base         string
	change       change // the actions, without the note
	auth         string // the Authorization header value
	secrets      []string
	timeout      time.Duration
	pollInterval time.Duration
	pollTimeout  time.Duration
	client       *http.Client
	guard        netguard.Options
	limiter      *policy.Limiter
	noWait       bool
	d            *delivery.Deliverer
	// log is the plugin's logger; tests set it before Configure.
	log *slog.Logger
	// now and sleep are the clock that requests are paced and jobs polled
	// by, the Deliverer's too; tests set them before Configure. nil:
	// time.Now and a real wait.
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) error

	mu    sync.Mutex
	slots map[string]chan struct{} // requests in flight, by account
}

// Info describes the plugin.
func (s *Sink) Info() sdk.Info {
	return sdk.Info{
		Kind:        sdk.KindSink,
		Type:        "zendesk",
		Version:     Version,
		Description: "Updates the Zendesk ticket each record names (tags, group, priority, status, internal note), batching tickets through update_many, from a durable outbox with retries.",
		Config: []sdk.Attribute{
			{Name: "subdomain", Type: sdk.String, Description: `The account's subdomain: "acme" for https://acme.zendesk.com.`},
			{Name: "api_url", Type: sdk.String, Description: "Base URL of the API instead of https://{subdomain}.zendesk.com, e.g. a proxy, or a local server in tests."},
			{Name: "email", Type: sdk.String, Required: true, Description: `The agent's email; requests authenticate as "{email}/token" with api_token.`},
			{Name: "api_token", Type: sdk.String, Required: true, Description: `A Zendesk API token; use env("ZENDESK_API_TOKEN"). It never appears in logs or errors.`},
			{Name: "ticket_id", Type: sdk.String, Required: true, Template: true, Description: `The ticket to update, e.g. "{{ metadata.ticket_id }}"; it must render to a positive integer.`},
			{Name: "add_tags", Type: sdk.ListOf(sdk.String), Description: "Tags to add; the ticket's other tags are kept."},
			{Name: "remove_tags", Type: sdk.ListOf(sdk.String), Description: "Tags to remove; the ticket's other tags are kept."},
			{Name: "group_id", Type: sdk.Number, Description: "Assign the ticket to this group."},
			{Name: "priority", Type: sdk.String, Description: `Set the priority: "low", "normal", "high" or "urgent".`},
			{Name: "status", Type: sdk.String, Description: `Set the status: "new", "open", "pending", "hold", "solved" or "closed".`},
			{Name: "comment", Type: sdk.String, Template: true, Description: "Add an internal note (not visible to the requester); may hold {{ }} placeholders."},
			{Name: "timeout", Type: sdk.Duration, Default: "10s", Description: "Per-request timeout."},
			{Name: "concurrency", Type: sdk.Number, Default: 4, Description: "Requests in flight at once per account (a polled update_many job counts as one)."},
			{Name: "rate_limit", Type: sdk.String, Description: `Most requests per account, e.g. "200/m". Zendesk's rate-limit headers slow requests down in any case.`},
			{Name: "poll_interval", Type: sdk.String, Default: "1s", Description: "How often an update_many job's status is polled."},
			{Name: "poll_timeout", Type: sdk.Duration, Default: "5m", Description: "How long a job may stay queued or working before the attempt counts as failed and is retried."},
			delivery.RetryAttribute(),
			delivery.BreakerAttribute("the account"),
			delivery.RetentionAttribute(),
			{Name: "allow_private_networks", Type: sdk.Bool, Default: false, Description: "Allow an api_url on loopback, private and link-local addresses, and over plain http (off by default: SSRF guard). PIPELINE_ALLOW_PRIVATE_NETWORKS=1 does the same."},
			{Name: "https_only", Type: sdk.Bool, Default: false, Description: "Refuse a plain http api_url even with allow_private_networks."},
		},
	}
}

// Configure checks the block.
func (s *Sink) Configure(_ context.Context, cfg sdk.Config) error {
	if err := cfg.Decode(&s.cfg); err != nil {
		return err
	}
	c := &s.cfg
	s.name, s.noWait = cfg.Name, cfg.NoWait
	if s.log == nil {
		s.log = sdk.Logger()
	}
	s.log = s.log.With("sink", s.name)

	c.Email, c.APIToken = strings.TrimSpace(c.Email), strings.TrimSpace(c.APIToken)
	switch {
	case c.Email == "":
		return errors.New(`email: required: the Zendesk agent the API token belongs to (e.g. email = env("ZENDESK_EMAIL"))`)
	case !strings.Contains(c.Email, "@"):
		return errors.New("email: not an email address")
	case c.APIToken == "":
		return errors.New(`api_token: required: a Zendesk API token (e.g. api_token = env("ZENDESK_API_TOKEN"))`)
	}
	user := c.Email + "/token"
	encoded := base64.StdEncoding.EncodeToString([]byte(user + ":" + c.APIToken))
	s.auth = "Basic " + encoded
	s.secrets = []string{encoded, c.APIToken, user, c.Email}

	s.guard = netguard.Options{AllowPrivate: c.AllowPrivate, HTTPSOnly: c.HTTPSOnly}.WithEnv()
	base, err := s.baseURL()
	if err != nil {
		return err
	}
	s.base = base

	if strings.TrimSpace(c.TicketID) == "" {
		return errors.New(`ticket_id: required, e.g. ticket_id = "{{ metadata.ticket_id }}"`)
	}
	if !cfg.HasTemplate("ticket_id") {
		if _, ok := parseTicketID(c.TicketID); !ok {
			return fmt.Errorf("ticket_id: %q is not a positive integer; use a placeholder such as \"{{ metadata.ticket_id }}\"", clip(c.TicketID, 40))
		}
	}
	if err := s.actions(cfg); err != nil {
		return err
	}

	if c.Timeout == "" {
		c.Timeout = "10s"
	}
	if s.timeout, err = positiveDuration("timeout", c.Timeout); err != nil {
		return err
	}
	if c.PollInterval == "" {
		c.PollInterval = "1s"
	}
	if s.pollInterval, err = positiveDuration("poll_interval", c.PollInterval); err != nil {
		return err
	}
	if c.PollTimeout == "" {
		c.PollTimeout = "5m"
	}
	if s.pollTimeout, err = positiveDuration("poll_timeout", c.PollTimeout); err != nil {
		return err
	}
	if s.pollTimeout < s.pollInterval {
		return fmt.Errorf("poll_timeout: %s is shorter than poll_interval (%s)", s.pollTimeout, s.pollInterval)
	}
	if c.Concurrency < 1 {
		return errors.New("concurrency: must be at least 1")
	}

	if s.now == nil {
		s.now = time.Now
	}
	if s.sleep == nil {
		s.sleep = delivery.Sleep
	}
	opts := delivery.Options{Concurrency: c.Concurrency, Log: s.log, Now: s.now,
		Sleep: func(ctx context.Context, d time.Duration) bool { return s.sleep(ctx, d) == nil }}
	if opts.Retry, opts.Breaker, err = delivery.Policies(c.Retry, c.Breaker); err != nil {
		return err
	}
	if opts.Retention, err = delivery.ParseRetention(c.Retention); err != nil {
		return err
	}
	// The limiter always exists: Zendesk's rate-limit headers and 429s
	// pause it for the whole account even without a rate_limit.
	var rate policy.Rate
	if c.RateLimit != "" {
		if rate, err = policy.ParseRate(c.RateLimit); err != nil {
			return fmt.Errorf("rate_limit: %w", err)
		}
	}
	s.limiter = policy.NewLimiter(rate, 1)
	opts.Limiter = s.limiter

	transport := s.guard.Transport()
	transport.MaxIdleConnsPerHost = c.Concurrency
	s.client = &http.Client{
		Timeout:   s.timeout,
		Transport: transport,
		// Never follow a redirect: it would carry the credentials elsewhere.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	s.slots = map[string]chan struct{}{}
	s.d = delivery.New(s, cfg.Outbox, opts)
	return nil
}

// baseURL is the account's API base URL: api_url, or the subdomain's.
func (s *Sink) baseURL() (string, error) {
	c := &s.cfg
	if c.APIURL == "" {
		sub := strings.ToLower(strings.TrimSpace(c.Subdomain))
		if sub == "" {
			return "", errors.New(`subdomain: required (e.g. subdomain = "acme" for https://acme.zendesk.com), unless api_url is set`)
		}
		if !subdomainRE.MatchString(sub) {
			return "", fmt.Errorf(`subdomain: %q is not a Zendesk subdomain; for https://acme.zendesk.com write subdomain = "acme"`, clip(c.Subdomain, 80))
		}
		return "https://" + sub + ".zendesk.com", nil
	}
	if err := s.guard.CheckURL(c.APIURL); err != nil {
		return "", fmt.Errorf("api_url: %w", err)
	}
	u, err := url.Parse(c.APIURL)
	if err != nil { // CheckURL parsed it already
		return "", errors.New("api_url: cannot parse the URL")
	}
	switch {
	case u.User != nil:
		return "", errors.New("api_url: must not hold credentials; set email and api_token")
	case u.RawQuery != "" || u.Fragment != "":
		return "", errors.New("api_url: must not have a query or fragment")
	case u.Scheme == "http" && !s.guard.AllowPrivate:
		return "", errors.New("api_url: plain http would send the API token unencrypted; use https (http is accepted with allow_private_networks = true, for local tests)")
	}
	return strings.TrimSuffix(u.Scheme+"://"+u.Host+u.EscapedPath(), "/"), nil
}

// actions checks the actions and builds the change they make.
func (s *Sink) actions(cfg sdk.Config) error {
	c := &s.cfg
	ch := change{}
	var err error
	if ch.AdditionalTags, err = tags("add_tags", c.AddTags); err != nil {
		return err
	}
	if ch.RemoveTags, err = tags("remove_tags", c.RemoveTags); err != nil {
		return err
	}
	for _, t := range ch.AdditionalTags {
		if slices.Contains(ch.RemoveTags, t) {
			return fmt.Errorf("remove_tags: %q is in add_tags too", t)
		}
	}
	if c.GroupID != nil {
		id, err := strconv.ParseInt(c.GroupID.String(), 10, 64)
		if err != nil || id <= 0 {
			return fmt.Errorf("group_id: %s is not a Zendesk group id (a positive integer)", c.GroupID.String())
		}
		ch.GroupID = id
	}
	if c.Priority != "" {
		if !slices.Contains(priorities, c.Priority) {
			return fmt.Errorf("priority: %q is not one of %s", clip(c.Priority, 40), strings.Join(priorities, ", "))
		}
		ch.Priority = c.Priority
	}
	if c.Status != "" {
		if !slices.Contains(statuses, c.Status) {
			return fmt.Errorf("status: %q is not one of %s", clip(c.Status, 40), strings.Join(statuses, ", "))
		}
		ch.Status = c.Status
	}
	if !cfg.HasTemplate("comment") && c.Comment != "" && strings.TrimSpace(c.Comment) == "" {
		return errors.New("comment: is blank")
	}
	if !ch.hasTags() && ch.GroupID == 0 && ch.Priority == "" && ch.Status == "" && c.Comment == "" {
		return errors.New("no action: set at least one of add_tags, remove_tags, group_id, priority, status or comment")
	}
	s.change = ch
	return nil
}

// tags checks a tag list: Zendesk splits a tag at spaces, so a tag with one
// would silently become several.
func tags(attr string, list []string) ([]string, error) {
	var out []string
	for i, t := range list {
		switch {
		case t == "":
			return nil, fmt.Errorf("%s[%d]: empty tag", attr, i)
		case strings.IndexFunc(t, unicode.IsSpace) >= 0:
			return nil, fmt.Errorf("%s[%d]: %q holds a space, and Zendesk would split it into several tags; use e.g. %q", attr, i, clip(t, 40), strings.Join(strings.Fields(t), "_"))
		case !slices.Contains(out, t):
			out = append(out, t)
		}
	}
	return out, nil
}

func positiveDuration(attr, v string) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(v))
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%s: %q is not a positive duration such as \"10s\"", attr, clip(v, 40))
	}
	return d, nil
}

// parseTicketID reads a positive decimal ticket id.
func parseTicketID(v string) (int64, bool) {
	v = strings.TrimSpace(v)
	if v == "" || v[0] < '0' || v[0] > '9' {
		return 0, false
	}
	n, err := strconv.ParseInt(v, 10, 64)
	return n, err == nil && n > 0
}

// Write stores the batch's deliveries in the outbox; the batch is acked
// once they are durable there.
func (s *Sink) Write(ctx context.Context, b sdk.Batch) error {
	return s.d.Enqueue(ctx, b)
}

// Close waits until every delivery has succeeded or is dead, unless the run
// asked not to wait.
func (s *Sink) Close(ctx context.Context) error { return s.d.Close(ctx, !s.noWait) }

// Prepare implements delivery.Transport: record i's ticket and change. The
// endpoint is the account, so concurrency, rate limits and the breaker are
// per account; the order key is the ticket, so that two records for one
// ticket update it one after the other, in source order.
func (s *Sink) Prepare(b sdk.Batch, i int) (sdk.Delivery, error) {
	record := b.ID(i)
	if record == "" {
		record = strconv.Itoa(i + 1)
	}
	raw := s.cfg.TicketID
	if v, ok := b.Template("ticket_id", i); ok {
		raw = v
	}
	id, ok := parseTicketID(raw)
	if !ok {
		return sdk.Delivery{}, fmt.Errorf("ticket_id: record %s has %q, not a positive integer ticket id; leave such records out with the sink's when condition", record, clip(raw, 40))
	}
	ch := s.change
	if s.cfg.Comment != "" {
		text := s.cfg.Comment
		if v, ok := b.Template("comment", i); ok {
			text = v
		}
		if strings.TrimSpace(text) == "" {
			return sdk.Delivery{}, fmt.Errorf("comment: record %s renders an empty note; leave such records out with the sink's when condition", record)
		}
		ch.Comment = &note{Body: text, Public: false}
	}
	data, err := json.Marshal(payload{Base: s.base, TicketID: id, Ticket: ch})
	if err != nil {
		return sdk.Delivery{}, err
	}
	return sdk.Delivery{
		ID:       b.ID(i),
		Endpoint: s.base,
		OrderKey: "ticket " + strconv.FormatInt(id, 10),
		Payload:  data,
	}, nil
}

// MaxBatch implements delivery.BatchTransport: update_many takes up to 100
// ids.
func (s *Sink) MaxBatch() int { return MaxBatch }

// Send implements delivery.Transport: one delivery on its own.
func (s *Sink) Send(ctx context.Context, d sdk.Delivery) delivery.Result {
	return s.SendBatch(ctx, []sdk.Delivery{d})[0]
}

// SendBatch implements delivery.BatchTransport. Deliveries without a note
// whose change is the same go together through update_many, in chunks of up
// to 100 distinct tickets; a delivery with a note, or whose change no other
// shares, goes by itself. The requests run in parallel up to the account's
// concurrency.
func (s *Sink) SendBatch(ctx context.Context, ds []sdk.Delivery) []delivery.Result {
	results := make([]delivery.Result, len(ds))
	ps := make([]payload, len(ds))
	var units [][]int
	groups := map[string][]int{}
	var keys []string
	for i, d := range ds {
		if err := json.Unmarshal(d.Payload, &ps[i]); err != nil || ps[i].Base == "" || ps[i].TicketID <= 0 {
			results[i] = delivery.Result{Err: policy.Permanent(errors.New("unreadable outbox entry"))}
			continue
		}
		if ps[i].Ticket.Comment != nil {
			units = append(units, []int{i})
			continue
		}
		key, _ := json.Marshal(ps[i].Ticket)
		k := ps[i].Base + "\x00" + string(key)
		if _, ok := groups[k]; !ok {
			keys = append(keys, k)
		}
		groups[k] = append(groups[k], i)
	}
	for _, k := range keys {
		units = append(units, chunk(groups[k], ps)...)
	}

	var wg sync.WaitGroup
	var started atomic.Bool
	for _, unit := range units {
		wg.Go(func() {
			ep := ds[unit[0]].Endpoint
			release, err := s.acquire(ctx, ep)
			if err != nil {
				for _, i := range unit {
					results[i] = delivery.Result{Err: err}
				}
				return
			}
			defer release()
			// The delivery loop took a rate-limit slot for the call's
			// first request; every other request takes its own, and so
			// waits while Zendesk's answers have paused the account.
			reserve := !started.CompareAndSwap(false, true)
			sub := make([]payload, len(unit))
			for j, i := range unit {
				sub[j] = ps[i]
			}
			for j, res := range s.sendUnit(ctx, ep, sub, reserve) {
				results[unit[j]] = res
			}
		})
	}
	wg.Wait()
	return results
}

// chunk splits deliveries with the same change into update_many calls of
// at most MaxBatch distinct tickets.
func chunk(idx []int, ps []payload) [][]int {
	var out [][]int
	var seen []map[int64]bool
	for _, i := range idx {
		id := ps[i].TicketID
		placed := false
		for c := range out {
			if len(out[c]) < MaxBatch && !seen[c][id] {
				out[c] = append(out[c], i)
				seen[c][id] = true
				placed = true
				break
			}
		}
		if !placed {
			out = append(out, []int{i})
			seen = append(seen, map[int64]bool{id: true})
		}
	}
	return out
}

// acquire takes one of the account's request slots.
func (s *Sink) acquire(ctx context.Context, ep string) (func(), error) {
	s.mu.Lock()
	ch := s.slots[ep]
	if ch == nil {
		ch = make(chan struct{}, s.cfg.Concurrency)
		s.slots[ep] = ch
	}
	s.mu.Unlock()
	select {
	case ch <- struct{}{}:
		return func() { <-ch }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// reserve waits for the account's next rate-limit slot.
func (s *Sink) reserve(ctx context.Context, ep string) error {
	return s.sleep(ctx, s.limiter.Reserve(ep, s.now()))
}

// sendUnit makes the request for one ticket, or for several with the same
// change, and returns a result per ticket.
func (s *Sink) sendUnit(ctx context.Context, ep string, ps []payload, reserve bool) []delivery.Result {
	if reserve {
		if err := s.reserve(ctx, ep); err != nil {
			return same(len(ps), delivery.Result{Err: err})
		}
	}
	if len(ps) > 1 || ps[0].Ticket.hasTags() {
		return s.updateMany(ctx, ep, ps)
	}
	p := ps[0]
	data, err := json.Marshal(body{Ticket: p.Ticket})
	if err != nil {
		return []delivery.Result{{Err: policy.Permanent(err)}}
	}
	r := s.do(ctx, ep, http.MethodPut, p.Base+"/api/v2/tickets/"+strconv.FormatInt(p.TicketID, 10)+".json", data)
	return []delivery.Result{s.result(r)}
}

// updateMany applies one change to several tickets (or to one, for tags)
// and follows the job to its end.
func (s *Sink) updateMany(ctx context.Context, ep string, ps []payload) []delivery.Result {
	ids := make([]string, len(ps))
	for i, p := range ps {
		ids[i] = strconv.FormatInt(p.TicketID, 10)
	}
	data, err := json.Marshal(body{Ticket: ps[0].Ticket})
	if err != nil {
		return same(len(ps), delivery.Result{Err: policy.Permanent(err)})
	}
	r := s.do(ctx, ep, http.MethodPut, ps[0].Base+"/api/v2/tickets/update_many.json?ids="+strings.Join(ids, ","), data)
	if r.err != nil || r.status < 200 || r.status > 299 {
		if r.err == nil && len(ps) > 1 && (r.status == http.StatusNotFound || r.status == http.StatusUnprocessableEntity) {
			// One bad ticket must not sink the others: find out which
			// it is by sending each alone (bulk changes are idempotent).
			s.log.Warn("update_many refused a batch; sending its tickets one by one", "endpoint", ep, "status", r.status, "tickets", len(ps))
			out := make([]delivery.Result, len(ps))
			for i, p := range ps {
				out[i] = s.sendUnit(ctx, ep, []payload{p}, true)[0]
			}
			return out
		}
		return same(len(ps), s.result(r))
	}
	var started struct {
		JobStatus *jobStatus `json:"job_status"`
	}
	if err := json.Unmarshal(r.body, &started); err != nil || started.JobStatus == nil || started.JobStatus.ID == "" {
		return same(len(ps), delivery.Result{Status: r.status, Header: r.header, Body: s.clean(r.body),
			Err: errors.New("update_many answered without a job_status id")})
	}
	job, jobBody := *started.JobStatus, r.body
	if !job.done() {
		job, jobBody, err = s.poll(ctx, ep, ps[0].Base, job.ID)
		if err != nil {
			// The change may or may not have been made; a bulk change is
			// idempotent, so the retry is safe.
			return same(len(ps), delivery.Result{Status: r.status, Body: s.clean(jobBody), Err: err})
		}
	}
	return s.jobResults(job, jobBody, ps)
}

// jobStatus is Zendesk's job status object.
type jobStatus struct {
	ID      string          `json:"id"`
	Status  string          `json:"status"` // queued, working, completed, failed, killed
	Message string          `json:"message"`
	Results json.RawMessage `json:"results"`
}

func (j jobStatus) done() bool {
	switch j.Status {
	case "completed", "failed", "killed":
		return true
	}
	return false
}

// poll asks for the job's status every poll_interval until it is done or
// poll_timeout has passed. Polls take rate-limit slots like any request.
func (s *Sink) poll(ctx context.Context, ep, base, id string) (jobStatus, []byte, error) {
	target := base + "/api/v2/job_statuses/" + url.PathEscape(id) + ".json"
	deadline := s.now().Add(s.pollTimeout)
	last := "queued"
	var lastBody []byte
	for {
		if err := s.sleep(ctx, s.pollInterval); err != nil {
			return jobStatus{}, lastBody, fmt.Errorf("job %s: %w", id, err)
		}
		if s.now().After(deadline) {
			return jobStatus{}, lastBody, fmt.Errorf("job %s still %s after poll_timeout (%s)", id, last, s.pollTimeout)
		}
		if err := s.reserve(ctx, ep); err != nil {
			return jobStatus{}, lastBody, fmt.Errorf("job %s: %w", id, err)
		}
		r := s.do(ctx, ep, http.MethodGet, target, nil)
		switch {
		case r.err != nil:
			if ctx.Err() != nil {
				return jobStatus{}, lastBody, fmt.Errorf("job %s: %w", id, r.err)
			}
			s.log.Warn("polling a Zendesk job failed; polling again", "endpoint", ep, "job", id, "error", r.err.Error())
			continue
		case r.status == http.StatusOK:
			lastBody = r.body
			var got struct {
				JobStatus *jobStatus `json:"job_status"`
			}
			if err := json.Unmarshal(r.body, &got); err != nil || got.JobStatus == nil {
				return jobStatus{}, lastBody, fmt.Errorf("job %s: unreadable job status", id)
			}
			if got.JobStatus.done() {
				return *got.JobStatus, r.body, nil
			}
			last = got.JobStatus.Status
		case policy.Classify(r.status, nil) == policy.RetryLater:
			continue // 429 and 5xx: do() has paused the limiter for Retry-After
		default:
			return jobStatus{}, r.body, fmt.Errorf("job %s: GET job status answered %d %s", id, r.status, http.StatusText(r.status))
		}
	}
}

// jobEntry is one ticket's entry in a finished job's results. Zendesk has
// spelt its fields in several ways over time, so they are read loosely.
type jobEntry struct {
	raw     json.RawMessage
	id      int64
	index   int
	failed  bool
	problem string
}

func parseEntries(results json.RawMessage) ([]jobEntry, bool) {
	var raws []json.RawMessage
	if json.Unmarshal(results, &raws) != nil || len(raws) == 0 {
		return nil, false // absent, null, empty, or not a list (other kinds of job)
	}
	var out []jobEntry
	for _, raw := range raws {
		var m map[string]json.RawMessage
		if json.Unmarshal(raw, &m) != nil {
			continue
		}
		e := jobEntry{raw: raw, id: -1, index: -1}
		if n, ok := number(m["id"]); ok {
			e.id = n
		}
		if n, ok := number(m["index"]); ok {
			e.index = int(n)
		}
		if v, ok := m["success"]; ok {
			switch strings.Trim(string(v), `" `) {
			case "false":
				e.failed = true
			}
		}
		// An entry failed when it says so, or names an error; "details"
		// only explains one.
		if text(m["error"]) != "" || text(m["errors"]) != "" {
			e.failed = true
		}
		if e.failed {
			var parts []string
			for _, f := range []string{"error", "errors", "details"} {
				if t := text(m[f]); t != "" {
					parts = append(parts, t)
				}
			}
			if len(parts) == 0 {
				parts = append(parts, "failed")
			}
			e.problem = strings.Join(parts, ": ")
		}
		out = append(out, e)
	}
	return out, true
}

// number reads a JSON number or a string holding one.
func number(v json.RawMessage) (int64, bool) {
	n, err := strconv.ParseInt(strings.Trim(string(v), `"`), 10, 64)
	return n, err == nil && len(v) > 0
}

// text is a JSON string's value, or compact JSON for anything else that is
// not empty.
func text(v json.RawMessage) string {
	if len(v) == 0 || string(v) == "null" {
		return ""
	}
	var s string
	if json.Unmarshal(v, &s) == nil {
		return strings.TrimSpace(s)
	}
	var buf bytes.Buffer
	if json.Compact(&buf, v) != nil {
		return ""
	}
	switch buf.String() {
	case "[]", "{}", `""`, "false":
		return ""
	}
	return buf.String()
}

// jobResults turns a finished job into a result per ticket: a ticket the job
// reports as failed is dead (Zendesk refused the change itself, e.g. on a
// closed ticket, and would again); one it reports as updated is delivered;
// one it does not mention is retried, unless the job completed without
// per-ticket results at all.
func (s *Sink) jobResults(job jobStatus, jobBody []byte, ps []payload) []delivery.Result {
	entries, listed := parseEntries(job.Results)
	byID := map[int64]jobEntry{}
	byIndex := map[int]jobEntry{}
	for _, e := range entries {
		if e.id > 0 {
			byID[e.id] = e
		} else if e.index >= 0 {
			byIndex[e.index] = e
		}
	}
	out := make([]delivery.Result, len(ps))
	for i, p := range ps {
		e, ok := byID[p.TicketID]
		if !ok {
			e, ok = byIndex[i]
		}
		switch {
		case ok && e.failed:
			out[i] = delivery.Result{Status: http.StatusOK, Body: s.clean(e.raw),
				Err: policy.Permanent(fmt.Errorf("ticket %d: job %s: %s", p.TicketID, job.ID, s.scrub(clip(e.problem, 300))))}
		case ok:
			out[i] = delivery.Result{Status: http.StatusOK, Body: s.clean(e.raw)}
		case job.Status == "completed" && !listed:
			out[i] = delivery.Result{Status: http.StatusOK, Body: s.clean(jobBody)}
		default:
			msg := ""
			if job.Message != "" {
				msg = ": " + s.scrub(clip(job.Message, 200))
			}
			out[i] = delivery.Result{Status: http.StatusOK, Body: s.clean(jobBody),
				Err: fmt.Errorf("ticket %d: job %s %s without a result for this ticket%s", p.TicketID, job.ID, job.Status, msg)}
		}
	}
	return out
}

// reply is one HTTP exchange.
type reply struct {
	status int
	header http.Header
	body   []byte
	err    error
}

// do makes one authenticated request and lets the account's limiter know
// what the answer says about Zendesk's rate limits.
func (s *Sink) do(ctx context.Context, ep, method, target string, data []byte) reply {
	var rd io.Reader
	if data != nil {
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, rd)
	if err != nil {
		return reply{err: policy.Permanent(fmt.Errorf("%s %s: cannot build the request", method, redact(target)))}
	}
	req.Header.Set("Authorization", s.auth)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "pipeline-zendesk/"+Version)
	if data != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return reply{err: s.describe(err, method, target)}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	io.Copy(io.Discard, io.LimitReader(resp.Body, maxBody))
	s.slowDown(ep, resp)
	return reply{status: resp.StatusCode, header: resp.Header, body: b}
}

// slowDown pauses the account's requests when Zendesk says so: before the
// limit, when its rate-limit headers show less than 10% of a quota left,
// and at it, for a 429's (or 503's) Retry-After.
func (s *Sink) slowDown(ep string, resp *http.Response) {
	now := s.now()
	pause, why := policy.RateLimitPause(resp.Header), "rate-limit headers"
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		if ra, ok := policy.ParseRetryAfter(resp.Header.Get("Retry-After"), now); ok && ra > pause {
			pause, why = ra, "Retry-After"
		}
	}
	if pause > 0 {
		s.limiter.Pause(ep, now.Add(pause))
		s.log.Info("Zendesk rate limit: pausing requests to the account", "endpoint", ep, "for", pause.String(), "from", why)
	}
}

// result is a single request's result for the delivery log.
func (s *Sink) result(r reply) delivery.Result {
	if r.err != nil {
		return delivery.Result{Err: r.err}
	}
	res := delivery.Result{Status: r.status, Header: r.header, Body: s.clean(r.body)}
	if r.status == http.StatusConflict {
		// Zendesk answers 409 when another update of the ticket got there
		// first; it says to try again.
		o := policy.RetryLater
		res.Outcome = &o
	}
	return res
}

func same(n int, r delivery.Result) []delivery.Result {
	out := make([]delivery.Result, n)
	for i := range out {
		out[i] = r
	}
	return out
}

// describe turns a client error into a message without secrets, keeping
// what Classify needs (timeouts and blocked addresses).
func (s *Sink) describe(err error, method, target string) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	what := method + " " + redact(target)
	if errors.Is(err, netguard.ErrBlocked) || errors.Is(err, netguard.ErrInvalidURL) {
		return policy.Permanent(fmt.Errorf("%s: %w", what, err))
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("%s: timed out after %s: %w", what, s.timeout, context.DeadlineExceeded)
	}
	if containsAny(err.Error(), s.secrets) {
		return fmt.Errorf("%s: %s", what, s.scrub(err.Error()))
	}
	return fmt.Errorf("%s: %w", what, err)
}

func containsAny(v string, list []string) bool {
	for _, x := range list {
		if x != "" && strings.Contains(v, x) {
			return true
		}
	}
	return false
}

// scrub removes the credentials from text that came from elsewhere (a
// response, an error) before it is logged.
func (s *Sink) scrub(v string) string {
	for _, x := range s.secrets {
		if len(x) >= 4 {
			v = strings.ReplaceAll(v, x, "[redacted]")
		}
	}
	return v
}

// clean is the start of a response body for the delivery log, scrubbed.
func (s *Sink) clean(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	if containsAny(string(b), s.secrets) {
		b = []byte(s.scrub(string(b)))
	}
	if len(b) > logBody {
		b = b[:logBody]
	}
	return slices.Clone(b)
}

// redact drops credentials and the query (ticket ids) from a URL for
// messages.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "<invalid url>"
	}
	u.User = nil
	u.RawQuery = ""
	return strings.TrimSuffix(u.String(), "?")
}

// clip shortens v for a message.
func clip(v string, n int) string {
	if len(v) <= n {
		return v
	}
	r := []rune(v)
	if len(r) <= n {
		return v
	}
	return string(r[:n]) + "…"
}
