package mongo

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// fakeMongos is a protocol fake, not MongoDB: a TCP server that speaks the
// MongoDB wire protocol (the legacy OP_QUERY handshake the Go driver sends
// first, then OP_MSG), records the commands it receives, and answers the
// handful of commands partman sends the way a mongos answers them, after
// the server sources and manual cited beside each reply. It validates our
// requests and our error handling, not MongoDB's sharding semantics.
type fakeMongos struct {
	t  *testing.T
	ln net.Listener

	mu sync.Mutex
	// mongod makes hello answer like a standalone mongod (no "isdbgrid").
	mongod bool
	// cmds records every OP_MSG command except the driver's monitoring
	// hellos, with the session and cluster-time fields removed.
	cmds    []bson.D
	dbs     map[string]bool
	sharded map[string]fakeSharded // ns -> shard key
	colls   map[string]*fakeColl   // ns -> collection
	shards  []*fakeShard           // listShards
	tags    []Tag                  // config.tags
	conns   map[net.Conn]struct{}
	wg      sync.WaitGroup
}

type fakeSharded struct {
	key    bson.D
	unique bool
	// unsplittable marks an unsharded collection that 8.0 tracks in
	// config.collections (moveCollection; SERVER-78755).
	unsplittable bool
}

type fakeColl struct {
	collation bson.D
	indexes   []bson.D // listIndexes documents, _id_ first
}

type fakeShard struct {
	id   string
	tags []string
}

// newFakeMongos starts a fake with two shards, shard1 and shard2, and no
// user data. It stops when the test ends.
func newFakeMongos(t *testing.T) *fakeMongos {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeMongos{
		t: t, ln: ln,
		dbs:     map[string]bool{},
		sharded: map[string]fakeSharded{},
		colls:   map[string]*fakeColl{},
		shards:  []*fakeShard{{id: "shard1"}, {id: "shard2"}},
		conns:   map[net.Conn]struct{}{},
	}
	f.wg.Add(1)
	go f.serve()
	t.Cleanup(f.close)
	return f
}

// setMongod makes hello answer like a standalone mongod (or a mongos).
func (f *fakeMongos) setMongod(v bool) {
	f.mu.Lock()
	f.mongod = v
	f.mu.Unlock()
}

// URI is a connection string for the fake.
func (f *fakeMongos) URI() string { return "mongodb://" + f.ln.Addr().String() + "/" }

func (f *fakeMongos) close() {
	f.ln.Close()
	f.mu.Lock()
	for c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}

// commands returns and forgets the commands recorded so far.
func (f *fakeMongos) commands() []bson.D {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := f.cmds
	f.cmds = nil
	return out
}

func (f *fakeMongos) serve() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.mu.Lock()
		f.conns[c] = struct{}{}
		f.mu.Unlock()
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			defer func() {
				f.mu.Lock()
				delete(f.conns, c)
				f.mu.Unlock()
				c.Close()
			}()
			if err := f.conn(c); err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				f.t.Logf("fake mongos: %v", err)
			}
		}()
	}
}

const (
	opReply = 1
	opQuery = 2004
	opMsg   = 2013
)

// conn serves one connection: a 16-byte header (length, requestID,
// responseTo, opCode) then the body, all little-endian.
func (f *fakeMongos) conn(c net.Conn) error {
	r := bufio.NewReader(c)
	for {
		var hdr [16]byte
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return err
		}
		size := int(binary.LittleEndian.Uint32(hdr[0:]))
		reqID := binary.LittleEndian.Uint32(hdr[4:])
		op := binary.LittleEndian.Uint32(hdr[12:])
		if size < 16 || size > 48<<20 {
			return fmt.Errorf("bad message length %d", size)
		}
		body := make([]byte, size-16)
		if _, err := io.ReadFull(r, body); err != nil {
			return err
		}
		var reply []byte
		switch op {
		case opQuery:
			// flags, cstring collection, skip, limit, query document.
			i := bytes.IndexByte(body[4:], 0)
			if i < 0 {
				return errors.New("OP_QUERY without collection name")
			}
			doc, err := toD(body[4+i+1+8:])
			if err != nil {
				return fmt.Errorf("OP_QUERY: %w", err)
			}
			ns := string(body[4 : 4+i])
			doc = append(doc, bson.E{Key: "$db", Value: strings.TrimSuffix(ns, ".$cmd")})
			out, err := bson.Marshal(f.handle(doc))
			if err != nil {
				return err
			}
			// OP_REPLY: flags, cursorID, startingFrom, numberReturned, docs.
			reply = make([]byte, 20, 20+len(out))
			binary.LittleEndian.PutUint32(reply[16:], 1)
			reply = append(reply, out...)
			op = opReply
		case opMsg:
			flags := binary.LittleEndian.Uint32(body)
			if flags&1 != 0 { // checksumPresent
				body = body[:len(body)-4]
			}
			doc, err := opMsgDoc(body[4:])
			if err != nil {
				return fmt.Errorf("OP_MSG: %w", err)
			}
			out, err := bson.Marshal(f.handle(doc))
			if err != nil {
				return err
			}
			reply = append([]byte{0, 0, 0, 0, 0}, out...) // flags, section kind 0
		default:
			return fmt.Errorf("unexpected opcode %d", op)
		}
		msg := make([]byte, 16, 16+len(reply))
		binary.LittleEndian.PutUint32(msg[0:], uint32(16+len(reply)))
		binary.LittleEndian.PutUint32(msg[8:], reqID)
		binary.LittleEndian.PutUint32(msg[12:], op)
		if _, err := c.Write(append(msg, reply...)); err != nil {
			return err
		}
	}
}

// opMsgDoc reads OP_MSG sections: kind 0 is the command body; kind 1 is a
// document sequence (size, identifier, documents) that becomes an array
// field of the command.
func opMsgDoc(b []byte) (bson.D, error) {
	var doc bson.D
	var seqs []bson.E
	for len(b) > 0 {
		kind := b[0]
		b = b[1:]
		switch kind {
		case 0:
			n := int(binary.LittleEndian.Uint32(b))
			d, err := toD(b[:n])
			if err != nil {
				return nil, err
			}
			doc, b = d, b[n:]
		case 1:
			n := int(binary.LittleEndian.Uint32(b))
			sec := b[4:n]
			i := bytes.IndexByte(sec, 0)
			id, docs := string(sec[:i]), sec[i+1:]
			var arr bson.A
			for len(docs) > 0 {
				m := int(binary.LittleEndian.Uint32(docs))
				d, err := toD(docs[:m])
				if err != nil {
					return nil, err
				}
				arr, docs = append(arr, d), docs[m:]
			}
			seqs, b = append(seqs, bson.E{Key: id, Value: arr}), b[n:]
		default:
			return nil, fmt.Errorf("unknown section kind %d", kind)
		}
	}
	return append(doc, seqs...), nil
}

func toD(b []byte) (bson.D, error) {
	var d bson.D
	err := bson.Unmarshal(b, &d)
	return d, err
}

// handle answers one command, recording it unless it is a monitoring or
// handshake hello (those carry no session).
func (f *fakeMongos) handle(cmd bson.D) bson.D {
	f.mu.Lock()
	defer f.mu.Unlock()
	name := cmd[0].Key
	hasSession := lookup(cmd, "lsid") != nil
	switch name {
	case "hello", "isMaster", "ismaster":
		if hasSession {
			f.record(cmd)
		}
		return f.hello(cmd)
	case "endSessions", "killCursors":
		return bson.D{{Key: "ok", Value: 1.0}}
	}
	f.record(cmd)
	db, _ := lookup(cmd, "$db").(string)
	if f.mongod && db == "config" {
		return fail(13, "Unauthorized", "not authorized on config") // never reached: partman stops at hello
	}
	switch name {
	case "find":
		return f.find(db, cmd)
	case "listCollections":
		return f.listCollections(db, cmd)
	case "listIndexes":
		return f.listIndexes(db, cmd)
	case "listShards":
		return f.listShards()
	case "enableSharding":
		f.dbs[cmd[0].Value.(string)] = true
		return ok()
	case "shardCollection":
		return f.shardCollection(cmd)
	case "addShardToZone":
		return f.addShardToZone(cmd)
	case "updateZoneKeyRange":
		return f.updateZoneKeyRange(cmd)
	case "createIndexes":
		return f.createIndexes(db, cmd)
	case "removeShardFromZone":
		return f.removeShardFromZone(cmd)
	case "dropDatabase":
		for ns := range f.colls {
			if strings.HasPrefix(ns, db+".") {
				delete(f.colls, ns)
				delete(f.sharded, ns)
			}
		}
		delete(f.dbs, db)
		return ok()
	}
	return fail(59, "CommandNotFound", fmt.Sprintf("no such command: '%s'", name))
}

// record keeps cmd without the fields that change from run to run: the
// session, the cluster time, and maxTimeMS (the driver derives it from the
// context deadline).
func (f *fakeMongos) record(cmd bson.D) {
	out := bson.D{}
	for _, e := range cmd {
		switch e.Key {
		case "lsid", "$clusterTime", "txnNumber", "maxTimeMS":
		default:
			out = append(out, e)
		}
	}
	f.cmds = append(f.cmds, out)
}

func ok(fields ...bson.E) bson.D { return append(bson.D(fields), bson.E{Key: "ok", Value: 1.0}) }

func fail(code int32, name, msg string) bson.D {
	return bson.D{{Key: "ok", Value: 0.0}, {Key: "errmsg", Value: msg}, {Key: "code", Value: code}, {Key: "codeName", Value: name}}
}

// hello: a mongos says msg "isdbgrid" (manual, hello command); both kinds
// report the session timeout, which makes the driver send lsid.
func (f *fakeMongos) hello(cmd bson.D) bson.D {
	primary := "isWritablePrimary"
	if cmd[0].Key != "hello" {
		primary = "ismaster"
	}
	d := bson.D{
		{Key: primary, Value: true},
		{Key: "maxBsonObjectSize", Value: int32(16 << 20)},
		{Key: "maxMessageSizeBytes", Value: int32(48000000)},
		{Key: "maxWriteBatchSize", Value: int32(100000)},
		{Key: "localTime", Value: bson.NewDateTimeFromTime(time.Now())},
		{Key: "logicalSessionTimeoutMinutes", Value: int32(30)},
		{Key: "connectionId", Value: int32(1)},
		{Key: "minWireVersion", Value: int32(0)},
		{Key: "maxWireVersion", Value: int32(25)},
		{Key: "readOnly", Value: false},
	}
	if lookup(cmd, "helloOk") == true {
		d = append(d, bson.E{Key: "helloOk", Value: true})
	}
	if !f.mongod {
		d = append(d, bson.E{Key: "msg", Value: "isdbgrid"})
	}
	return ok(d...)
}

func cursor(ns string, docs []bson.D) bson.D {
	batch := bson.A{}
	for _, d := range docs {
		batch = append(batch, d)
	}
	return ok(bson.E{Key: "cursor", Value: bson.D{{Key: "firstBatch", Value: batch}, {Key: "id", Value: int64(0)}, {Key: "ns", Value: ns}}})
}

// matches supports the filters partman sends: field equality and $in.
func matches(doc, filter bson.D) bool {
	for _, cond := range filter {
		v := lookup(doc, cond.Key)
		if in, isOp := cond.Value.(bson.D); isOp && len(in) == 1 && in[0].Key == "$in" {
			found := false
			for _, x := range in[0].Value.(bson.A) {
				found = found || (v != nil && compareValues(v, x) == 0)
			}
			if !found {
				return false
			}
		} else if v == nil || compareValues(v, cond.Value) != 0 {
			return false
		}
	}
	return true
}

// find serves config.databases, config.collections (the 5.0+ format of
// DOCS-14450) and config.tags ({ns, min, max, tag}).
func (f *fakeMongos) find(db string, cmd bson.D) bson.D {
	coll, _ := cmd[0].Value.(string)
	filter, _ := lookup(cmd, "filter").(bson.D)
	var all []bson.D
	switch db + "." + coll {
	case "config.databases":
		for name := range f.dbs {
			all = append(all, bson.D{{Key: "_id", Value: name}, {Key: "primary", Value: "shard1"}})
		}
	case "config.collections":
		for ns, s := range f.sharded {
			d := bson.D{{Key: "_id", Value: ns}, {Key: "lastmodEpoch", Value: bson.NewObjectID()}, {Key: "key", Value: s.key}, {Key: "unique", Value: s.unique}}
			if s.unsplittable {
				d = append(d, bson.E{Key: "unsplittable", Value: true})
			}
			all = append(all, d)
		}
	case "config.tags":
		for _, t := range f.tags {
			all = append(all, bson.D{{Key: "_id", Value: bson.NewObjectID()}, {Key: "ns", Value: t.NS}, {Key: "min", Value: t.Min}, {Key: "max", Value: t.Max}, {Key: "tag", Value: t.Zone}})
		}
	}
	var out []bson.D
	for _, d := range all {
		if matches(d, filter) {
			out = append(out, d)
		}
	}
	return cursor(db+"."+coll, out)
}

func (f *fakeMongos) listCollections(db string, cmd bson.D) bson.D {
	filter, _ := lookup(cmd, "filter").(bson.D)
	var out []bson.D
	for _, ns := range sortedKeys(f.colls) {
		name, found := strings.CutPrefix(ns, db+".")
		if !found {
			continue
		}
		opts := bson.D{}
		if c := f.colls[ns].collation; c != nil {
			opts = append(opts, bson.E{Key: "collation", Value: c})
		}
		d := bson.D{{Key: "name", Value: name}, {Key: "type", Value: "collection"}, {Key: "options", Value: opts}}
		if matches(d, filter) {
			out = append(out, d)
		}
	}
	return cursor(db+".$cmd.listCollections", out)
}

// listIndexes on a missing collection fails with NamespaceNotFound (26).
func (f *fakeMongos) listIndexes(db string, cmd bson.D) bson.D {
	ns := db + "." + cmd[0].Value.(string)
	c, found := f.colls[ns]
	if !found {
		return fail(26, "NamespaceNotFound", "ns does not exist: "+ns)
	}
	return cursor(ns, c.indexes)
}

func (f *fakeMongos) listShards() bson.D {
	arr := bson.A{}
	for _, s := range f.shards {
		tags := bson.A{}
		for _, t := range s.tags {
			tags = append(tags, t)
		}
		arr = append(arr, bson.D{{Key: "_id", Value: s.id}, {Key: "host", Value: s.id + "/" + s.id + ":27018"}, {Key: "state", Value: int32(1)}, {Key: "tags", Value: tags}})
	}
	return ok(bson.E{Key: "shards", Value: arr})
}

func (f *fakeMongos) collection(ns string) *fakeColl {
	c, found := f.colls[ns]
	if !found {
		c = &fakeColl{indexes: []bson.D{{{Key: "v", Value: int32(2)}, {Key: "key", Value: bson.D{{Key: "_id", Value: int32(1)}}}, {Key: "name", Value: "_id_"}}}}
		f.colls[ns] = c
		f.dbs[strings.SplitN(ns, ".", 2)[0]] = true
	}
	return c
}

// shardCollection succeeds again for the same key and fails with
// AlreadyInitialized (23) for another (sharding_ddl_util.cpp
// checkIfCollectionAlreadySharded); on a new collection it builds the
// shard-key index.
func (f *fakeMongos) shardCollection(cmd bson.D) bson.D {
	ns := cmd[0].Value.(string)
	key, _ := lookup(cmd, "key").(bson.D)
	if s, found := f.sharded[ns]; found && !s.unsplittable {
		if keysEqual(s.key, key) && !s.unique {
			return ok(bson.E{Key: "collectionsharded", Value: ns})
		}
		return fail(23, "AlreadyInitialized", "sharding already enabled for collection "+ns)
	}
	c := f.collection(ns)
	if !hasIndexOn(c, key) {
		c.indexes = append(c.indexes, bson.D{{Key: "v", Value: int32(2)}, {Key: "key", Value: key}, {Key: "name", Value: Keys(key).DefaultName()}})
	}
	f.sharded[ns] = fakeSharded{key: key}
	return ok(bson.E{Key: "collectionsharded", Value: ns})
}

func hasIndexOn(c *fakeColl, key bson.D) bool {
	for _, ix := range c.indexes {
		if k, _ := lookup(ix, "key").(bson.D); keysEqual(k, key) {
			return true
		}
	}
	return false
}

// addShardToZone fails with ShardNotFound (70) for an unknown shard and is
// idempotent otherwise.
func (f *fakeMongos) addShardToZone(cmd bson.D) bson.D {
	id := cmd[0].Value.(string)
	zone, _ := lookup(cmd, "zone").(string)
	for _, s := range f.shards {
		if s.id == id {
			if !contains(s.tags, zone) {
				s.tags = append(s.tags, zone)
			}
			return ok()
		}
	}
	return fail(70, "ShardNotFound", "Shard "+id+" does not exist")
}

// updateZoneKeyRange needs a zone held by a shard (ZoneNotFound, 177) and a
// range that overlaps no other (RangeOverlapConflict, 178); adding the same
// range to the same zone again is fine (balancer zone_info).
func (f *fakeMongos) updateZoneKeyRange(cmd bson.D) bson.D {
	ns := cmd[0].Value.(string)
	minK, _ := lookup(cmd, "min").(bson.D)
	maxK, _ := lookup(cmd, "max").(bson.D)
	zone, isString := lookup(cmd, "zone").(string)
	if !isString { // zone: null removes exactly [min, max)
		for i, t := range f.tags {
			if t.NS == ns && keysEqual(t.Min, minK) && keysEqual(t.Max, maxK) {
				f.tags = append(f.tags[:i], f.tags[i+1:]...)
				break
			}
		}
		return ok()
	}
	held := false
	for _, s := range f.shards {
		held = held || contains(s.tags, zone)
	}
	if !held {
		return fail(177, "ZoneNotFound", "zone "+zone+" does not exist")
	}
	for _, t := range f.tags {
		if t.NS != ns || compareKeys(t.Min, maxK) >= 0 || compareKeys(minK, t.Max) >= 0 {
			continue
		}
		if keysEqual(t.Min, minK) && keysEqual(t.Max, maxK) && t.Zone == zone {
			return ok()
		}
		return fail(178, "RangeOverlapConflict", "Zone range: "+shell(minK)+" -->> "+shell(maxK)+" is overlapping with existing: "+shell(t.Min)+" -->> "+shell(t.Max)+" on "+t.Zone)
	}
	f.tags = append(f.tags, Tag{NS: ns, Min: minK, Max: maxK, Zone: zone})
	return ok()
}

// createIndexes follows index_catalog_impl.cpp: an identical index is
// success ("all indexes already exist"), the same name with another key is
// IndexKeySpecsConflict (86), the same name with other options or the same
// key under another name is IndexOptionsConflict (85). A mongos returns
// the shards' replies under raw.
func (f *fakeMongos) createIndexes(db string, cmd bson.D) bson.D {
	ns := db + "." + cmd[0].Value.(string)
	_, existed := f.colls[ns]
	var have []bson.D
	if existed {
		have = f.colls[ns].indexes
	}
	var add []bson.D
	for _, s := range lookup(cmd, "indexes").(bson.A) {
		spec := s.(bson.D)
		name, _ := lookup(spec, "name").(string)
		key, _ := lookup(spec, "key").(bson.D)
		dup := false
		for _, h := range have {
			hn, _ := lookup(h, "name").(string)
			hk, _ := lookup(h, "key").(bson.D)
			sameOpts := keysEqual(indexOptions(h), indexOptions(spec))
			switch {
			case hn == name && !keysEqual(hk, key):
				return fail(86, "IndexKeySpecsConflict", "An existing index has the same name as the requested index. Requested index: "+shell(spec)+", existing index: "+shell(h))
			case hn == name && !sameOpts:
				return fail(85, "IndexOptionsConflict", "An equivalent index already exists with the same name but different options. Requested index: "+shell(spec)+", existing index: "+shell(h))
			case hn == name:
				dup = true
			case keysEqual(hk, key) && sameOpts:
				return fail(85, "IndexOptionsConflict", "Index already exists with a different name: "+hn)
			}
		}
		if !dup {
			add = append(add, append(bson.D{{Key: "v", Value: int32(2)}}, spec...))
		}
	}
	c := f.collection(ns)
	before := int32(len(c.indexes))
	c.indexes = append(c.indexes, add...)
	shard := bson.D{{Key: "createdCollectionAutomatically", Value: !existed}, {Key: "numIndexesBefore", Value: before}, {Key: "numIndexesAfter", Value: int32(len(c.indexes))}}
	if len(add) == 0 {
		shard = append(shard, bson.E{Key: "note", Value: "all indexes already exist"})
	}
	return ok(bson.E{Key: "raw", Value: bson.D{{Key: "shard1/shard1:27018", Value: ok(shard...)}}})
}

// removeShardFromZone refuses while a range of the zone remains
// (ZoneStillInUse, 179), as the server does.
func (f *fakeMongos) removeShardFromZone(cmd bson.D) bson.D {
	id := cmd[0].Value.(string)
	zone, _ := lookup(cmd, "zone").(string)
	for _, t := range f.tags {
		if t.Zone == zone {
			return fail(179, "ZoneStillInUse", "zone "+zone+" is still in use")
		}
	}
	for _, s := range f.shards {
		if s.id == id {
			for i, z := range s.tags {
				if z == zone {
					s.tags = append(s.tags[:i], s.tags[i+1:]...)
					break
				}
			}
			return ok()
		}
	}
	return fail(70, "ShardNotFound", "Shard "+id+" does not exist")
}
