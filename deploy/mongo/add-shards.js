// Adds the two shard replica sets to the cluster through mongos. addShard
// with the same set and host again is accepted, so this is safe to re-run.
for (const shard of ["shard1/mongo-shard1:27018", "shard2/mongo-shard2:27018"]) {
  const res = db.adminCommand({ addShard: shard });
  if (res.ok !== 1) throw new Error(`addShard ${shard}: ${tojson(res)}`);
  print(`added ${shard} as ${res.shardAdded}`);
}
printjson(db.adminCommand({ listShards: 1 }).shards.map((s) => s._id));
