package proxy

import (
	"net"
	"strconv"
)

// initServers tells the router which shards share a Postgres server (the
// host and port their pools dial), so that statements on roles, databases
// and tablespaces run once per server (router.SetServers).
func (s *Server) initServers() {
	servers := make([]string, len(s.pools))
	for i, p := range s.pools {
		c := p.config()
		servers[i] = net.JoinHostPort(c.Host, strconv.Itoa(int(c.Port)))
	}
	s.router.SetServers(servers)
}
