package cluster

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// The names of one action sink's outbox in JetStream. For a cluster of
// prefix P, a pipeline p and a sink s (T is Token):
//
//	stream P_outbox_T(p)~T(s)   subjects P.outbox.T(p).T(s).u      (no order key)
//	                                     P.outbox.T(p).T(s).k.<lane> (order keys, hashed into lanes)
//	stream P_dead_T(p)~T(s)     subject  P.outbox-dead.T(p).T(s).<id token> (one per delivery id)
//	stream P_log_T(p)~T(s)      subjects P.outbox-log.T(p).T(s).<outcome> (delivered, retry, dead)
//	KV     P_attempts           key      T(p).T(s).<outbox stream sequence>
//	KV     P_paused             key      T(p).T(s)
//
// '~' separates the pipeline from the sink in stream names: Token never
// writes it (it keeps only letters, digits, '-', '_' and its '=XX'
// escapes), so two pipeline/sink pairs never share a stream, and stream
// names allow it ('.', '*', '>', '/', '\' and white space are what they
// forbid).
type outboxNames struct {
	stream, dead, log string // stream names
	subject           string // P.outbox.T(p).T(s): the outbox's subjects start with it
	deadSubject       string // P.outbox-dead.T(p).T(s)
	logSubject        string
	key               string // T(p).T(s): the outbox's keys in the KV buckets
	attemptsBucket    string
	pausedBucket      string
}

// maxStreamName bounds the stream names made here (servers refuse names
// longer than 255 bytes, and they are directory names on disk): a longer
// one is cut and ends with a hash of the whole.
const maxStreamName = 200

func streamName(s string) string {
	if len(s) <= maxStreamName {
		return s
	}
	h := sha256.Sum256([]byte(s))
	return s[:maxStreamName-17] + "~" + hex.EncodeToString(h[:8])
}

func (c *Cluster) outboxNames(pipeline, sink string) outboxNames {
	p, s := Token(pipeline), Token(sink)
	pre := c.opts.Prefix
	return outboxNames{
		stream:         streamName(pre + "_outbox_" + p + "~" + s),
		dead:           streamName(pre + "_dead_" + p + "~" + s),
		log:            streamName(pre + "_log_" + p + "~" + s),
		subject:        pre + ".outbox." + p + "." + s,
		deadSubject:    pre + ".outbox-dead." + p + "." + s,
		logSubject:     pre + ".outbox-log." + p + "." + s,
		key:            p + "." + s,
		attemptsBucket: pre + "_attempts",
		pausedBucket:   pre + "_paused",
	}
}

// unorderedSubject is where deliveries without an order key go.
func (n outboxNames) unorderedSubject() string { return n.subject + ".u" }

// laneSubject is where deliveries whose order key hashes to lane go.
func (n outboxNames) laneSubject(lane int) string { return n.subject + ".k." + strconv.Itoa(lane) }

// deadLetterSubject is the subject of one delivery's dead letter.
func (n outboxNames) deadLetterSubject(id string) string { return n.deadSubject + "." + idToken(id) }

// attemptsKey is the key of a stored delivery's attempt count: by its
// sequence in the outbox stream, so that a delivery enqueued again or
// replayed (a new message) starts from its own count.
func (n outboxNames) attemptsKey(seq uint64) string { return n.key + "." + strconv.FormatUint(seq, 10) }

// idToken is a delivery id as one subject token: Token(id), or for a long
// id "=H" and a hash of it ('=' is always followed by two hex digits in
// Token's output, so the two never meet).
func idToken(id string) string {
	t := Token(id)
	if len(t) <= 128 {
		return t
	}
	h := sha256.Sum256([]byte(id))
	return "=H" + hex.EncodeToString(h[:16])
}

// lane is the lane of an order key: FNV-1a of the key, modulo lanes.
func lane(key string, lanes int) int {
	h := uint32(2166136261)
	for i := 0; i < len(key); i++ {
		h ^= uint32(key[i])
		h *= 16777619
	}
	return int(h % uint32(lanes))
}

// laneConsumer names the durable consumer of a lane; unorderedConsumer the
// one of the deliveries without an order key. Every worker uses the same.
func laneConsumer(lane int) string { return "lane-" + strconv.Itoa(lane) }

const unorderedConsumer = "deliver"

// Headers of the outbox's messages (and of dead letters). Values are
// escaped with hdrEscape: an order key or an error may hold anything.
const (
	hdrMsgID      = "Nats-Msg-Id"
	hdrID         = "Pipeline-Id"
	hdrEndpoint   = "Pipeline-Endpoint"
	hdrOrderKey   = "Pipeline-Order-Key"
	hdrNotBefore  = "Pipeline-Not-Before" // unix ms
	hdrAttempts   = "Pipeline-Attempts"
	hdrError      = "Pipeline-Error"
	hdrStatus     = "Pipeline-Status"
	hdrDeadAt     = "Pipeline-Dead-At"     // unix ms
	hdrEnqueuedAt = "Pipeline-Enqueued-At" // unix ms
	hdrWorker     = "Pipeline-Worker"
)

// hdrEscape percent-encodes what a NATS header value cannot carry as it is
// (control bytes, white space, which is trimmed, and bytes past ASCII) and
// '%' itself; hdrUnescape undoes it.
func hdrEscape(s string) string {
	clean := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || c == '%' {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || c == '%' {
			fmt.Fprintf(&b, "%%%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

func hdrUnescape(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	if u, err := url.PathUnescape(s); err == nil {
		return u
	}
	return s
}

// lanesDescription is written in the outbox stream's description, so that
// every worker (and Replay) hashes order keys into the same lanes.
func lanesDescription(pipeline, sink string, lanes int) string {
	return fmt.Sprintf("pipeline: outbox of %s/%s (lanes=%d)", pipeline, sink, lanes)
}

// lanesOf reads the lane count back from a stream description (0 if none).
func lanesOf(description string) int {
	i := strings.LastIndex(description, "(lanes=")
	if i < 0 {
		return 0
	}
	rest := description[i+len("(lanes="):]
	j := strings.IndexByte(rest, ')')
	if j < 0 {
		return 0
	}
	n, err := strconv.Atoi(rest[:j])
	if err != nil {
		return 0
	}
	return n
}
