// Initiates the three single-member replica sets of the compose MongoDB
// cluster (config servers, shard1, shard2) and waits for their primaries.
// Safe to run again: a set that is already initiated is left alone.
const sets = [
  { _id: "cfgrs", configsvr: true, members: [{ _id: 0, host: "mongo-cfg:27019" }] },
  { _id: "shard1", members: [{ _id: 0, host: "mongo-shard1:27018" }] },
  { _id: "shard2", members: [{ _id: 0, host: "mongo-shard2:27018" }] },
];
for (const rs of sets) {
  const admin = new Mongo(`mongodb://${rs.members[0].host}/?directConnection=true`).getDB("admin");
  // mongosh throws on ok: 0; older shells return the reply. Handle both.
  let status;
  try {
    status = admin.runCommand({ replSetGetStatus: 1 });
  } catch (e) {
    status = { ok: 0, code: e.code, errmsg: e.message };
  }
  if (status.ok === 1) {
    print(`${rs._id}: already initiated`);
  } else if (status.code === 94 /* NotYetInitialized */) {
    const res = admin.runCommand({ replSetInitiate: rs });
    if (res.ok !== 1) throw new Error(`${rs._id}: replSetInitiate: ${tojson(res)}`);
    print(`${rs._id}: initiated`);
  } else {
    throw new Error(`${rs._id}: replSetGetStatus: ${tojson(status)}`);
  }
  for (let i = 0; !admin.runCommand({ hello: 1 }).isWritablePrimary; i++) {
    // a new set takes a few seconds to elect itself
    if (i > 120) throw new Error(`${rs._id}: no primary after 60s`);
    sleep(500);
  }
  print(`${rs._id}: primary is up`);
}
