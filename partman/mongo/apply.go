package mongo

import (
	"context"
	"errors"
	"fmt"

	"go.mongodb.org/mongo-driver/v2/bson"
	mongodrv "go.mongodb.org/mongo-driver/v2/mongo"
)

// ErrNotMongos means the server is not a mongos, so it has no sharding.
var ErrNotMongos = errors.New("not a mongos")

// conflictCodes are the server errors that mean "exists with another
// spec": AlreadyInitialized (23, sharded with another key),
// IndexOptionsConflict (85), IndexKeySpecsConflict (86) and
// RangeOverlapConflict (178, a zone range overlapping another).
var conflictCodes = []int{23, 85, 86, 178}

// CheckMongos sends hello and insists on msg "isdbgrid", which only a mongos
// returns.
func CheckMongos(ctx context.Context, client *mongodrv.Client) error {
	var hello struct {
		Msg       string `bson:"msg"`
		SetName   string `bson:"setName"`
		IsPrimary bool   `bson:"isWritablePrimary"`
	}
	if err := client.Database("admin").RunCommand(ctx, bson.D{{Key: "hello", Value: 1}}).Decode(&hello); err != nil {
		return fmt.Errorf("hello: %w", err)
	}
	if hello.Msg != "isdbgrid" {
		kind := "a standalone mongod"
		if hello.SetName != "" {
			kind = fmt.Sprintf("a member of replica set %s", hello.SetName)
		}
		return fmt.Errorf("%w: the server is %s (hello.msg is %q, a mongos says \"isdbgrid\"); point mongo.uri at a mongos of a sharded cluster", ErrNotMongos, kind, hello.Msg)
	}
	return nil
}

// Read reads the parts of the cluster that l describes. It sends only
// reads: config.databases, config.collections, listCollections,
// listIndexes, and listShards and config.tags when l has zones.
func Read(ctx context.Context, client *mongodrv.Client, l *Layout) (*State, error) {
	s := &State{
		Sharded:     map[string]ShardedCollection{},
		Collections: map[string]bson.D{},
		Indexes:     map[string][]bson.D{},
		Shards:      map[string][]string{},
	}
	config := client.Database("config")
	var dbs []bson.D
	if err := findAll(ctx, config.Collection("databases"), bson.D{{Key: "_id", Value: l.Database}}, &dbs); err != nil {
		return nil, fmt.Errorf("read config.databases: %w", err)
	}
	s.DatabaseExists = len(dbs) > 0

	var nss, names bson.A
	zones := false
	for _, t := range l.Collections {
		nss = append(nss, l.Namespace(t))
		names = append(names, t.Name)
		zones = zones || len(t.Zones) > 0
	}
	var colls []struct {
		ID           string `bson:"_id"`
		Key          bson.D `bson:"key"`
		Unique       bool   `bson:"unique"`
		Unsplittable bool   `bson:"unsplittable"`
	}
	if err := findAll(ctx, config.Collection("collections"), bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: nss}}}}, &colls); err != nil {
		return nil, fmt.Errorf("read config.collections: %w", err)
	}
	for _, c := range colls {
		if !c.Unsplittable {
			s.Sharded[c.ID] = ShardedCollection{Key: c.Key, Unique: c.Unique}
		}
	}

	db := client.Database(l.Database)
	cur, err := db.ListCollections(ctx, bson.D{{Key: "name", Value: bson.D{{Key: "$in", Value: names}}}})
	if err != nil {
		return nil, fmt.Errorf("list collections of %s: %w", l.Database, err)
	}
	var specs []struct {
		Name    string `bson:"name"`
		Options struct {
			Collation bson.D `bson:"collation"`
		} `bson:"options"`
	}
	if err := cur.All(ctx, &specs); err != nil {
		return nil, fmt.Errorf("list collections of %s: %w", l.Database, err)
	}
	for _, sp := range specs {
		var coll bson.D
		if locale, _ := lookup(sp.Options.Collation, "locale").(string); locale != "" && locale != "simple" {
			coll = sp.Options.Collation
		}
		s.Collections[sp.Name] = coll
	}
	for _, t := range l.Collections {
		if _, exists := s.Collections[t.Name]; !exists {
			continue
		}
		cur, err := db.Collection(t.Name).Indexes().List(ctx)
		if err != nil {
			return nil, fmt.Errorf("list indexes of %s: %w", l.Namespace(t), err)
		}
		var ixs []bson.D
		if err := cur.All(ctx, &ixs); err != nil {
			return nil, fmt.Errorf("list indexes of %s: %w", l.Namespace(t), err)
		}
		s.Indexes[t.Name] = ixs
	}

	if !zones {
		return s, nil
	}
	var shards struct {
		Shards []struct {
			ID   string   `bson:"_id"`
			Tags []string `bson:"tags"`
		} `bson:"shards"`
	}
	if err := client.Database("admin").RunCommand(ctx, bson.D{{Key: "listShards", Value: 1}}).Decode(&shards); err != nil {
		return nil, fmt.Errorf("listShards: %w", err)
	}
	for _, sh := range shards.Shards {
		s.Shards[sh.ID] = append([]string{}, sh.Tags...)
	}
	var tags []struct {
		NS  string `bson:"ns"`
		Min bson.D `bson:"min"`
		Max bson.D `bson:"max"`
		Tag string `bson:"tag"`
	}
	if err := findAll(ctx, config.Collection("tags"), bson.D{{Key: "ns", Value: bson.D{{Key: "$in", Value: nss}}}}, &tags); err != nil {
		return nil, fmt.Errorf("read config.tags: %w", err)
	}
	for _, t := range tags {
		s.Tags = append(s.Tags, Tag{NS: t.NS, Min: t.Min, Max: t.Max, Zone: t.Tag})
	}
	return s, nil
}

func findAll(ctx context.Context, c *mongodrv.Collection, filter bson.D, out any) error {
	cur, err := c.Find(ctx, filter)
	if err != nil {
		return err
	}
	return cur.All(ctx, out)
}

// Result is what Apply did.
type Result struct {
	// Created lists the commands that ran (their What).
	Created []string
	// Conflicts are the plan's conflicts, or the one the server reported.
	Conflicts []string
}

// Apply runs the plan's commands in order on client. It runs nothing when
// p has conflicts. A server error meaning "exists with another spec" (23,
// 85, 86) stops it and is returned as a conflict, not an error; any other
// error stops it and is returned.
func Apply(ctx context.Context, client *mongodrv.Client, p *Plan) (*Result, error) {
	r := &Result{Conflicts: append([]string{}, p.Conflicts...)}
	if len(p.Conflicts) > 0 {
		return r, nil
	}
	for _, c := range p.Steps {
		err := client.Database(c.DB).RunCommand(ctx, c.Cmd).Err()
		var se mongodrv.ServerError
		switch {
		case err == nil:
			r.Created = append(r.Created, c.What)
		case errors.As(err, &se) && isConflict(se):
			r.Conflicts = append(r.Conflicts, fmt.Sprintf("%s: the server refused: %v", c.What, err))
			return r, nil
		default:
			return r, fmt.Errorf("%s: %w", c.What, err)
		}
	}
	return r, nil
}

func isConflict(se mongodrv.ServerError) bool {
	for _, code := range conflictCodes {
		if se.HasErrorCode(code) {
			return true
		}
	}
	return false
}
