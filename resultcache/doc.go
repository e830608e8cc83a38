// Package resultcache shares the answers of reads between clients of the
// proxy, in two ways.
//
// Consolidation (on by default, no staleness): identical reads in flight at
// the same moment (same key: statement text, user, database, the session
// settings that change results) run once; the clients that arrive while the
// first one, the leader, is running wait and get a copy of its reply. A
// client joins a flight only when no write through the proxy has touched
// the flight's tables since it started, so a client never gets an answer
// older than its own committed write.
//
// The result cache (opt-in, by rules): statements selected by pg_query
// fingerprint or by the tables they read are kept for the rule's TTL, in
// memory (an LRU bounded by bytes) or in Redis (shared by every proxy).
// Every write through the proxy invalidates the entries of the tables it
// touches when it commits: each table has a generation counter, an entry
// records the generations it was filled under (read before the query ran),
// and a lookup serves an entry only while they are unchanged. With Redis the
// counters live in Redis and are read in the same round trip as the entry;
// invalidations are also published (pub/sub) so that every proxy's
// consolidation sees them. A miss is filled once per key (a local flight,
// plus SET NX PX in Redis across proxies); the others wait for the fill, for
// at most FillWait. An entry in the last RefreshAhead part of its TTL is
// refreshed by one client while the others still get it.
//
// The cache never fails a query: when Redis cannot be reached the proxy
// reads from Postgres, counts the error and logs it (rate-limited).
//
// The proxy decides what may be shared (parser.Statement.Shareable, outside
// transactions only) and captures the reply bytes (RowDescription through
// CommandComplete, without ReadyForQuery); this package never sees a
// connection.
package resultcache
