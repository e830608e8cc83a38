package proxy

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/xdg-go/scram"
)

// AuthQueryConfig looks up users not listed in users on the first shard,
// as PgBouncer's auth_query: the query returns the user's name and SCRAM
// verifier (rolpassword), the client authenticates against it, and the
// proxy logs into the shards as that user by SCRAM pass-through (the
// client's ClientKey, recovered from its proof). Empty Query: off.
type AuthQueryConfig struct {
	// Query takes the user name as $1 and returns one row (name,
	// verifier), none for an unknown user. Run by User on the first
	// shard's database, once per login.
	Query string `yaml:"query"`
	// User and Password are the dedicated role that runs Query (the
	// shard DSN's host, port, database and TLS settings are used).
	User     string `yaml:"user"`
	Password string `yaml:"password"`
}

func (a AuthQueryConfig) validate() error {
	if a.Query == "" {
		if a.User != "" || a.Password != "" {
			return errors.New("auth_query: user and password without query")
		}
		return nil
	}
	if a.User == "" {
		return errors.New("auth_query: user is required (a role that may run the query, not the DSN's)")
	}
	if !strings.Contains(a.Query, "$1") {
		return errors.New("auth_query: the query must take the user name as $1")
	}
	return nil
}

// scramKeys are what SCRAM pass-through logs into a shard with: the
// verifier's salt and iterations and the client's ClientKey. Strings, so
// that backendRole stays comparable (a map key).
type scramKeys struct {
	salt      string
	iters     int
	clientKey string
	serverKey string
}

// lookupCredential runs the auth query for user. nil, nil: no such user.
func (s *Server) lookupCredential(ctx context.Context, aq AuthQueryConfig, user string) (*credential, error) {
	cfg := s.pools[0].config().Copy()
	cfg.User, cfg.Password = aq.User, aq.Password
	cfg.AfterNetConnect = nil
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("auth_query: connect as %s: %w", aq.User, err)
	}
	defer conn.Close(context.Background())
	res := conn.ExecParams(ctx, aq.Query, [][]byte{[]byte(user)}, nil, nil, nil).Read()
	if res.Err != nil {
		return nil, fmt.Errorf("auth_query: %w", res.Err)
	}
	if len(res.Rows) == 0 || len(res.Rows[0]) < 2 || res.Rows[0][1] == nil {
		return nil, nil
	}
	stored, err := parseVerifier(string(res.Rows[0][1]))
	if err != nil {
		return nil, fmt.Errorf("auth_query: user %s: %w", user, err)
	}
	c := &credential{name: user, stored: stored, authQuery: true}
	return c, nil
}

// parseVerifier reads Postgres's SCRAM-SHA-256$iters:salt$StoredKey:ServerKey.
func parseVerifier(v string) (scram.StoredCredentials, error) {
	var sc scram.StoredCredentials
	bad := errors.New("the password is not a SCRAM-SHA-256 verifier (password_encryption = scram-sha-256 on the shards)")
	rest, ok := strings.CutPrefix(v, "SCRAM-SHA-256$")
	if !ok {
		return sc, bad
	}
	iterSalt, keys, ok := strings.Cut(rest, "$")
	if !ok {
		return sc, bad
	}
	iter, salt64, ok1 := strings.Cut(iterSalt, ":")
	stored64, server64, ok2 := strings.Cut(keys, ":")
	iters, err := strconv.Atoi(iter)
	if !ok1 || !ok2 || err != nil {
		return sc, bad
	}
	salt, err1 := base64.StdEncoding.DecodeString(salt64)
	stored, err2 := base64.StdEncoding.DecodeString(stored64)
	server, err3 := base64.StdEncoding.DecodeString(server64)
	if err1 != nil || err2 != nil || err3 != nil || len(stored) != sha256.Size || len(server) != sha256.Size {
		return sc, bad
	}
	sc.KeyFactors = scram.KeyFactors{Salt: string(salt), Iters: iters}
	sc.StoredKey, sc.ServerKey = stored, server
	return sc, nil
}

// passThrough recovers the client's ClientKey from its SCRAM exchange
// (ClientProof XOR HMAC(StoredKey, AuthMessage); RFC 5802) once the
// conversation is valid, and returns the backend role that logs into the
// shards with it.
func passThrough(c *credential, clientFirst, serverFirst, clientFinal string) (*backendRole, error) {
	_, bare, ok := strings.Cut(clientFirst, ",")
	if ok {
		_, bare, ok = strings.Cut(bare, ",") // after the gs2 header "n,," / "p=...,,"
	}
	i := strings.LastIndex(clientFinal, ",p=")
	if !ok || i < 0 {
		return nil, protocolErr("malformed SCRAM message")
	}
	proof, err := base64.StdEncoding.DecodeString(clientFinal[i+3:])
	if err != nil || len(proof) != sha256.Size {
		return nil, protocolErr("malformed SCRAM message")
	}
	authMsg := bare + "," + serverFirst + "," + clientFinal[:i]
	sig := hmacSHA256(c.stored.StoredKey, authMsg)
	key := make([]byte, sha256.Size)
	for j := range key {
		key[j] = proof[j] ^ sig[j]
	}
	return &backendRole{user: c.name, scram: scramKeys{salt: c.stored.Salt, iters: c.stored.Iters,
		clientKey: string(key), serverKey: string(c.stored.ServerKey)}}, nil
}

func hmacSHA256(key []byte, msg string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(msg))
	return h.Sum(nil)
}

// scramConn logs into a shard by SCRAM pass-through under pgconn: it
// answers the server's AuthenticationSASL itself, with the client's keys,
// and hands pgconn the messages from AuthenticationOk on, as if the server
// had not asked for a password. Installed as pgconn's AfterNetConnect.
type scramConn struct {
	net.Conn
	keys    scramKeys
	done    bool
	pending []byte
}

func (k scramKeys) afterNetConnect(_ context.Context, _ *pgconn.Config, conn net.Conn) (net.Conn, error) {
	return &scramConn{Conn: conn, keys: k}, nil
}

func (c *scramConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	if c.done {
		return c.Conn.Read(p)
	}
	raw, err := readRaw(c.Conn)
	if err != nil {
		return 0, err
	}
	if raw[0] == 'R' && len(raw) >= 9 && binary.BigEndian.Uint32(raw[5:9]) == 10 {
		if err := c.exchange(raw[9:]); err != nil {
			return 0, err
		}
		if raw, err = readRaw(c.Conn); err != nil { // AuthenticationOk, or an error
			return 0, err
		}
	}
	c.done = true
	c.pending = raw
	return c.Read(p)
}

// readRaw reads one whole backend message, header included.
func readRaw(r io.Reader) ([]byte, error) {
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint32(hdr[1:]))
	if n < 4 || n > 1<<20 {
		return nil, fmt.Errorf("backend message of %d bytes during authentication", n)
	}
	msg := make([]byte, 1+n)
	copy(msg, hdr)
	_, err := io.ReadFull(r, msg[5:])
	return msg, err
}

// exchange runs SCRAM-SHA-256 (without channel binding) with the server
// whose AuthenticationSASL listed mechs.
func (c *scramConn) exchange(mechs []byte) error {
	if !strings.Contains(string(mechs), "SCRAM-SHA-256\x00") {
		return errors.New("scram pass-through: the shard does not offer SCRAM-SHA-256")
	}
	nonce := make([]byte, 18)
	if _, err := rand.Read(nonce); err != nil {
		return err
	}
	cnonce := base64.StdEncoding.EncodeToString(nonce)
	bare := "n=,r=" + cnonce
	if err := c.send(&pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: []byte("n,," + bare)}); err != nil {
		return err
	}
	first, err := c.saslData(11)
	if err != nil {
		return err
	}
	var snonce, salt64, iter string
	for _, f := range strings.Split(first, ",") {
		switch {
		case strings.HasPrefix(f, "r="):
			snonce = f[2:]
		case strings.HasPrefix(f, "s="):
			salt64 = f[2:]
		case strings.HasPrefix(f, "i="):
			iter = f[2:]
		}
	}
	salt, _ := base64.StdEncoding.DecodeString(salt64)
	if !strings.HasPrefix(snonce, cnonce) || string(salt) != c.keys.salt || iter != strconv.Itoa(c.keys.iters) {
		return &pgError{code: pgerrcode.InvalidPassword, msg: "scram pass-through: the role's SCRAM verifier on this shard differs from the auth query's",
			hint: "Give the role the same verifier on every shard (ALTER ROLE ... PASSWORD 'SCRAM-SHA-256$...' with the auth query's value)."}
	}
	final := "c=biws,r=" + snonce
	authMsg := bare + "," + first + "," + final
	storedKey := sha256.Sum256([]byte(c.keys.clientKey))
	sig := hmacSHA256(storedKey[:], authMsg)
	proof := make([]byte, sha256.Size)
	for i := range proof {
		proof[i] = c.keys.clientKey[i] ^ sig[i]
	}
	if err := c.send(&pgproto3.SASLResponse{Data: []byte(final + ",p=" + base64.StdEncoding.EncodeToString(proof))}); err != nil {
		return err
	}
	v, err := c.saslData(12)
	if err != nil {
		return err
	}
	want := "v=" + base64.StdEncoding.EncodeToString(hmacSHA256([]byte(c.keys.serverKey), authMsg))
	if !hmac.Equal([]byte(v), []byte(want)) {
		return errors.New("scram pass-through: the shard's signature does not match")
	}
	return nil
}

func (c *scramConn) send(m pgproto3.FrontendMessage) error {
	buf, err := m.Encode(nil)
	if err != nil {
		return err
	}
	_, err = c.Conn.Write(buf)
	return err
}

// saslData reads an AuthenticationSASLContinue (11) or Final (12); an
// ErrorResponse from the server becomes the error.
func (c *scramConn) saslData(code uint32) (string, error) {
	raw, err := readRaw(c.Conn)
	if err != nil {
		return "", err
	}
	if raw[0] == 'E' {
		var e pgproto3.ErrorResponse
		if err := e.Decode(raw[5:]); err != nil {
			return "", err
		}
		return "", &pgError{code: e.Code, msg: e.Message}
	}
	if raw[0] != 'R' || len(raw) < 9 || binary.BigEndian.Uint32(raw[5:9]) != code {
		return "", fmt.Errorf("scram pass-through: unexpected message %q during authentication", raw[0])
	}
	return string(raw[9:]), nil
}
