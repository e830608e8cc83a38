package proxy

import (
	"bufio"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"hash"
	"net"
	"os"
	"time"

	"github.com/jackc/pgerrcode"
)

// TLSConfig is the client-facing TLS section (`tls:`). Every field is
// reloadable: a reload (SIGHUP, RELOAD) re-reads the files, and new
// handshakes use them while open sessions keep theirs.
type TLSConfig struct {
	// Cert and Key are PEM files: the server certificate (with its chain)
	// and its private key.
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// CA is a PEM bundle that client certificates must chain to. With it,
	// clients may present a certificate in every mode; verify-ca and
	// verify-full require one.
	CA string `yaml:"ca"`
	// Mode is disable (default: SSLRequest is answered 'N'), allow (TLS
	// offered, plaintext accepted), require (plaintext logins refused with
	// 28000), verify-ca (require, plus a client certificate that chains to
	// CA) or verify-full (verify-ca, plus the certificate's CN must be the
	// user name).
	Mode string `yaml:"mode"`
}

// TLS modes, weakest first.
const (
	tlsDisable = iota
	tlsAllow
	tlsRequire
	tlsVerifyCA
	tlsVerifyFull
)

var tlsModes = map[string]int{"": tlsDisable, "disable": tlsDisable, "allow": tlsAllow, "require": tlsRequire,
	"verify-ca": tlsVerifyCA, "verify-full": tlsVerifyFull}

// validate checks the section and loads its files, so that check-config
// and a reload catch a bad path or key before anything changes.
func (c TLSConfig) validate() error {
	_, err := loadTLS(c)
	return err
}

// tlsMaterial is one loaded generation of the TLS section, immutable; a
// reload builds a new one (liveConfig.tls).
type tlsMaterial struct {
	mode int
	conf *tls.Config
	// endPoint is the tls-server-end-point channel binding of the server
	// certificate (RFC 5929): its hash, for SCRAM-SHA-256-PLUS.
	endPoint []byte
}

// loadTLS reads the files of c. A disabled section loads to nil.
func loadTLS(c TLSConfig) (*tlsMaterial, error) {
	mode, ok := tlsModes[c.Mode]
	if !ok {
		return nil, fmt.Errorf("tls.mode %q is not disable, allow, require, verify-ca or verify-full", c.Mode)
	}
	if mode == tlsDisable {
		return nil, nil
	}
	if c.Cert == "" || c.Key == "" {
		return nil, fmt.Errorf("tls.mode %s needs tls.cert and tls.key", c.Mode)
	}
	if mode >= tlsVerifyCA && c.CA == "" {
		return nil, fmt.Errorf("tls.mode %s needs tls.ca (the CA of client certificates)", c.Mode)
	}
	cert, err := tls.LoadX509KeyPair(c.Cert, c.Key)
	if err != nil {
		return nil, fmt.Errorf("tls: load cert and key: %w", err)
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("tls: parse cert: %w", err)
		}
	}
	m := &tlsMaterial{mode: mode, endPoint: endPointHash(leaf)}
	m.conf = &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Postgres 17 clients offer ALPN "postgresql"; a client offering
		// only other protocols is refused in the handshake, as Postgres
		// does. Direct TLS additionally requires it (startTLS).
		NextProtos: []string{"postgresql"},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return &cert, nil
		},
	}
	if c.CA != "" {
		pem, err := os.ReadFile(c.CA)
		if err != nil {
			return nil, fmt.Errorf("tls: read ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls: ca %s holds no PEM certificate", c.CA)
		}
		m.conf.ClientCAs = pool
		m.conf.ClientAuth = tls.VerifyClientCertIfGiven
		if mode >= tlsVerifyCA {
			m.conf.ClientAuth = tls.RequireAndVerifyClientCert
		}
	}
	return m, nil
}

// endPointHash hashes cert as tls-server-end-point channel binding does:
// with the hash of its signature algorithm, SHA-256 for MD5 and SHA-1.
func endPointHash(cert *x509.Certificate) []byte {
	var h hash.Hash
	switch cert.SignatureAlgorithm {
	case x509.SHA384WithRSA, x509.SHA384WithRSAPSS, x509.ECDSAWithSHA384:
		h = sha512.New384()
	case x509.SHA512WithRSA, x509.SHA512WithRSAPSS, x509.ECDSAWithSHA512:
		h = sha512.New()
	case x509.PureEd25519:
		return nil // no defined hash: SCRAM-SHA-256-PLUS is not offered
	default:
		h = sha256.New()
	}
	h.Write(cert.Raw)
	return h.Sum(nil)
}

// tlsState is a session's TLS connection, once the handshake is done.
type tlsState struct {
	conn *tls.Conn
	m    *tlsMaterial
}

// prefixConn reads what a bufio.Reader already holds before the socket:
// the ClientHello bytes peeked to detect direct TLS.
type prefixConn struct {
	net.Conn
	r *bufio.Reader
}

func (c prefixConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// handshakeTimeout bounds a TLS handshake.
const handshakeTimeout = 30 * time.Second

// directTLS reports whether the client opened with a TLS ClientHello
// instead of a startup packet (Postgres 17's sslnegotiation=direct): a
// TLS handshake record starts with 0x16, a startup packet's length with 0.
func (s *session) directTLS() bool {
	b, err := s.rd.r.Peek(1)
	return err == nil && b[0] == 0x16
}

// startTLS runs the TLS handshake on the session's connection and reads
// the rest of the session through it. direct is true for direct TLS,
// which requires ALPN "postgresql" as Postgres does. Without TLS
// configured, a direct ClientHello is refused by closing.
func (s *session) startTLS(m *tlsMaterial, direct bool) error {
	var raw net.Conn = s.conn
	if direct {
		raw = prefixConn{s.conn, s.rd.r}
	} else if s.rd.buffered() > 0 {
		// Bytes sent after SSLRequest before our answer would be read as if
		// they came through TLS (CVE-2021-23214).
		return protocolErr("received unencrypted data after SSL request")
	}
	tc := tls.Server(raw, m.conf)
	tc.SetDeadline(time.Now().Add(handshakeTimeout))
	if err := tc.Handshake(); err != nil {
		s.srv.limits.hit(limitTLSHandshake)
		return fmt.Errorf("tls handshake: %w", err)
	}
	tc.SetDeadline(time.Time{})
	if direct && tc.ConnectionState().NegotiatedProtocol != "postgresql" {
		s.conn, s.rd = tc, newFrameReader(tc, clientReadBuffer)
		return protocolErr("received direct SSL connection request without ALPN protocol negotiation extension")
	}
	s.conn, s.rd = tc, newFrameReader(tc, clientReadBuffer)
	s.tls = &tlsState{conn: tc, m: m}
	return nil
}

// checkTransport enforces tls.mode at login, before any password is asked:
// plaintext is refused from require up, and under verify-full (or for
// auth: cert) the client certificate's CN must be the user.
func (s *session) checkTransport(c *credential) error {
	m := s.srv.live.Load().tls
	if s.tls == nil {
		if (m != nil && m.mode >= tlsRequire) || c.cert {
			return &pgError{code: pgerrcode.InvalidAuthorizationSpecification,
				msg: fmt.Sprintf("no pg_hba.conf entry for host \"%s\", user \"%s\", database \"%s\", no encryption",
					hostOf(s.conn.RemoteAddr()), s.user, s.database),
				hint: "This shardproxy requires TLS (sslmode=require or stronger)."}
		}
		return nil
	}
	if s.tls.m.mode < tlsVerifyFull && !c.cert {
		return nil
	}
	peers := s.tls.conn.ConnectionState().PeerCertificates
	if len(peers) == 0 {
		return &pgError{code: pgerrcode.InvalidAuthorizationSpecification,
			msg: "connection requires a valid client certificate"}
	}
	if cn := peers[0].Subject.CommonName; cn != s.user {
		return &pgError{code: pgerrcode.InvalidAuthorizationSpecification,
			msg:    fmt.Sprintf("certificate authentication failed for user \"%s\"", s.user),
			detail: fmt.Sprintf("The certificate's common name \"%s\" is not the user name.", cn)}
	}
	return nil
}

func hostOf(a net.Addr) string {
	if h, _, err := net.SplitHostPort(a.String()); err == nil {
		return h
	}
	return a.String()
}

// sslRequest answers an SSLRequest: 'S' and a handshake when TLS is on,
// else 'N' (the client then goes on in plaintext or gives up).
func (s *session) sslRequest() error {
	m := s.srv.live.Load().tls
	if m == nil || s.tls != nil {
		_, err := s.conn.Write([]byte{'N'})
		return err
	}
	if _, err := s.conn.Write([]byte{'S'}); err != nil {
		return err
	}
	return s.startTLS(m, false)
}

// acceptDirect starts a direct TLS connection; without TLS configured the
// connection is closed (the client cannot read a plaintext error).
func (s *session) acceptDirect() error {
	m := s.srv.live.Load().tls
	if m == nil {
		return errors.New("direct TLS connection, but tls is not configured")
	}
	return s.startTLS(m, true)
}
