package proxy

import (
	"crypto/rand"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/xdg-go/scram"
)

// credential is a user's login, with the SCRAM verifier derived once at
// start (the clear-text password is not kept).
type credential struct {
	name  string
	trust bool
	// cert: a verified client certificate whose CN is the user logs in,
	// with no password (tls.go).
	cert bool
	// maxConns and queryTimeout are the user's own limits (limits.go).
	maxConns     int
	queryTimeout time.Duration
	// role is the backend role on the shards, nil for the DSN's user.
	role   *backendRole
	stored scram.StoredCredentials
	// authQuery: looked up by the auth query; the session's backend role
	// is made from the client's SCRAM exchange (authquery.go).
	authQuery bool
}

func newCredential(u User, roles string) (*credential, error) {
	c := &credential{name: u.Name, trust: u.Auth == "trust", cert: u.Auth == "cert",
		maxConns: u.MaxClientConnections, queryTimeout: u.QueryTimeout, role: roleOf(u, roles)}
	if c.trust || c.cert {
		return c, nil
	}
	client, err := scram.SHA256.NewClient(u.Name, u.Password, "")
	if err != nil {
		return nil, fmt.Errorf("user %s: %w", u.Name, err)
	}
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return nil, err
	}
	c.stored = client.GetStoredCredentials(scram.KeyFactors{Salt: string(salt), Iters: 4096})
	return c, nil
}

// errAuthFailed ends the startup with 28P01.
type errAuthFailed struct{ user string }

func (e errAuthFailed) Error() string {
	return fmt.Sprintf("password authentication failed for user \"%s\"", e.user)
}

// authenticate runs SCRAM-SHA-256 (or trust, or cert once checkTransport
// has checked the certificate) with the client. Postgres's SCRAM exchange
// leaves the username in the client-first message empty: the startup
// packet's user is the one checked. On TLS, SCRAM-SHA-256-PLUS is offered
// first, with tls-server-end-point channel binding.
func (s *session) authenticate(c *credential) error {
	if c.trust || c.cert {
		return nil
	}
	server, err := scram.SHA256.NewServer(func(string) (scram.StoredCredentials, error) { return c.stored, nil })
	if err != nil {
		return err
	}
	conv := server.NewConversation()
	mechs := []string{"SCRAM-SHA-256"}
	if s.tls != nil && s.tls.m.endPoint != nil {
		mechs = []string{"SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"}
		conv = server.NewConversationWithChannelBinding(scram.ChannelBinding{
			Type: scram.ChannelBindingTLSServerEndpoint, Data: s.tls.m.endPoint})
	}
	s.out = appendMsg(s.out, &pgproto3.AuthenticationSASL{AuthMechanisms: mechs})
	if err := s.flush(); err != nil {
		return err
	}
	typ, body, _, err := s.rd.next()
	if err != nil {
		return err
	}
	if typ != 'p' {
		return protocolErr("expected SASLInitialResponse, got message type %q", typ)
	}
	var initial pgproto3.SASLInitialResponse
	if err := initial.Decode(body); err != nil {
		return protocolErr("malformed SASLInitialResponse")
	}
	switch plus := len(initial.Data) > 0 && initial.Data[0] == 'p'; {
	case initial.AuthMechanism == "SCRAM-SHA-256-PLUS" && len(mechs) == 2 && plus:
	case initial.AuthMechanism == "SCRAM-SHA-256" && !plus:
	case initial.AuthMechanism == "SCRAM-SHA-256" || initial.AuthMechanism == "SCRAM-SHA-256-PLUS" && len(mechs) == 2:
		// Postgres's words for a channel-binding flag that contradicts
		// the mechanism.
		return protocolErr("malformed SCRAM message")
	default:
		return protocolErr("unsupported SASL mechanism %q", initial.AuthMechanism)
	}
	clientFirst := string(initial.Data) // the reader's buffer is reused below
	first, err := conv.Step(clientFirst)
	if err != nil {
		return errAuthFailed{c.name}
	}
	s.out = appendMsg(s.out, &pgproto3.AuthenticationSASLContinue{Data: []byte(first)})
	if err := s.flush(); err != nil {
		return err
	}
	if typ, body, _, err = s.rd.next(); err != nil {
		return err
	}
	if typ != 'p' {
		return protocolErr("expected SASLResponse, got message type %q", typ)
	}
	var resp pgproto3.SASLResponse
	if err := resp.Decode(body); err != nil {
		return protocolErr("malformed SASLResponse")
	}
	final, err := conv.Step(string(resp.Data))
	if err != nil || !conv.Valid() {
		return errAuthFailed{c.name}
	}
	if c.authQuery {
		if s.role, err = passThrough(c, clientFirst, first, string(resp.Data)); err != nil {
			return err
		}
	}
	s.out = appendMsg(s.out, &pgproto3.AuthenticationSASLFinal{Data: []byte(final)})
	return nil
}
