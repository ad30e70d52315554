package natstest

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
)

// Trust is an operator of the test's own, for servers in operator mode
// (users authenticate with a JWT and an nkey, as production NATS
// deployments run): a system account, an account with JetStream, and a
// user of that account whose credentials file is what `pipeline serve
// --nats-creds` takes.
type Trust struct {
	// OperatorFile holds the operator's JWT.
	OperatorFile string
	// SystemAccount and Account are public account keys; JWTs holds each
	// account's JWT by its key.
	SystemAccount, Account string
	JWTs                   map[string]string
	// CredsFile is the user's credentials (its JWT and nkey seed).
	CredsFile string
}

// NewTrust makes an operator, its accounts and a user, and writes the
// operator's JWT and the user's credentials into a directory of the test.
func NewTrust(t testing.TB) *Trust {
	t.Helper()
	dir := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("natstest: making credentials: %v", err)
		}
	}
	op, err := nkeys.CreateOperator()
	must(err)
	opPub, err := op.PublicKey()
	must(err)
	tr := &Trust{JWTs: map[string]string{}}
	account := func(name string, jetStream bool) (string, nkeys.KeyPair) {
		kp, err := nkeys.CreateAccount()
		must(err)
		pub, err := kp.PublicKey()
		must(err)
		ac := jwt.NewAccountClaims(pub)
		ac.Name = name
		if jetStream {
			ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
		}
		tok, err := ac.Encode(op)
		must(err)
		tr.JWTs[pub] = tok
		return pub, kp
	}
	tr.SystemAccount, _ = account("SYS", false)
	var acc nkeys.KeyPair
	tr.Account, acc = account("APP", true)
	oc := jwt.NewOperatorClaims(opPub)
	oc.Name = "natstest"
	oc.SystemAccount = tr.SystemAccount
	opJWT, err := oc.Encode(op)
	must(err)
	tr.OperatorFile = filepath.Join(dir, "operator.jwt")
	must(os.WriteFile(tr.OperatorFile, []byte(opJWT), 0o600))
	user, err := nkeys.CreateUser()
	must(err)
	userPub, err := user.PublicKey()
	must(err)
	seed, err := user.Seed()
	must(err)
	uc := jwt.NewUserClaims(userPub)
	uc.Name = "pipeline"
	uc.IssuerAccount = tr.Account
	userJWT, err := uc.Encode(acc)
	must(err)
	creds, err := jwt.FormatUserConfig(userJWT, seed)
	must(err)
	tr.CredsFile = filepath.Join(dir, "pipeline.creds")
	must(os.WriteFile(tr.CredsFile, creds, 0o600))
	return tr
}

// Config is the part of a nats-server configuration file that puts the
// server in operator mode under this operator, with the accounts
// preloaded into a memory resolver.
func (tr *Trust) Config() string {
	var b strings.Builder
	fmt.Fprintf(&b, "operator: %q\nsystem_account: %s\nresolver: MEMORY\nresolver_preload: {\n", tr.OperatorFile, tr.SystemAccount)
	for pub, tok := range tr.JWTs {
		fmt.Fprintf(&b, "  %s: %q\n", pub, tok)
	}
	b.WriteString("}\n")
	return b.String()
}

// StartWithTrust starts a server with JetStream in operator mode: only
// the Trust's user (its CredsFile) may connect.
func StartWithTrust(t testing.TB) (*Server, *Trust) {
	t.Helper()
	tr := NewTrust(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "nats.conf")
	text := fmt.Sprintf("host: 127.0.0.1\nport: -1\njetstream: {store_dir: %q}\n", filepath.Join(dir, "js")) + tr.Config()
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	opts.NoLog, opts.NoSigs = true, true
	s := start(t, opts)
	opts.Port = s.Addr().(*net.TCPAddr).Port
	return s, tr
}
