// Sequelize 6 with its default options through shardproxy on 4 shards:
// connect (its multi-statement SET string), sync of a model, create,
// update, destroy, a managed transaction writing on several shards (rolled
// back by an error, then committed) and upsert (ON CONFLICT ... SET id =
// EXCLUDED.id); findOrCreate fails cleanly (see below). Usage: node sequelize_check.js URL BASE_ID
const { Sequelize, DataTypes } = require('sequelize');

async function main() {
  const [url, baseArg] = process.argv.slice(2);
  const base = Number(baseArg);
  const sq = new Sequelize(url, { logging: false });
  const User = sq.define('User', {
    id: { type: DataTypes.BIGINT, primaryKey: true },
    name: { type: DataTypes.TEXT, allowNull: false },
    email: { type: DataTypes.TEXT, allowNull: false },
    city: { type: DataTypes.TEXT, allowNull: false },
  }, { tableName: 'users', timestamps: false });
  const Note = sq.define('Note', { body: DataTypes.TEXT }, { tableName: 'sq_notes' });
  await Note.sync({ force: true }); // DDL through the proxy: every shard
  await Note.create({ body: 'hello' });

  const ids = [0, 1, 2, 3, 4, 5].map((i) => base + i);
  for (const id of ids) await User.create({ id, name: 'n' + id, email: 'e', city: 'sq' });
  await User.update({ city: 'sq2' }, { where: { id: ids[0] } });
  // A managed transaction writing several users (several shards): an
  // error rolls all of it back.
  try {
    await sq.transaction(async (t) => {
      await User.update({ name: 'half' }, { where: { city: 'sq' }, transaction: t });
      throw new Error('undo');
    });
  } catch (e) {
    if (e.message !== 'undo') throw e;
  }
  if ((await User.count({ where: { name: 'half' } })) !== 0) throw new Error('rolled back writes visible');
  await sq.transaction(async (t) => {
    await User.update({ name: 'both' }, { where: { id: [ids[1], ids[2], ids[3]] }, transaction: t });
    await User.destroy({ where: { id: ids[4] }, transaction: t });
  });
  if ((await User.count({ where: { name: 'both' } })) !== 3) throw new Error('committed writes missing');
  // upsert: INSERT ... ON CONFLICT ("id") DO UPDATE SET "id"=EXCLUDED."id", ...
  await User.upsert({ id: ids[5], name: 'up1', email: 'e', city: 'sq' });
  await User.upsert({ id: ids[5], name: 'up2', email: 'e', city: 'sq' });
  if ((await User.findByPk(ids[5])).name !== 'up2') throw new Error('upsert');
  // findOrCreate inserts through a pg_temp function whose INSERT the proxy
  // cannot route: it fails (the shards refuse to PREPARE a transaction
  // with temporary objects) and leaves nothing behind.
  let failed = false;
  try {
    await User.findOrCreate({ where: { id: base + 9 }, defaults: { name: 'f', email: 'e', city: 'sq' } });
  } catch (e) {
    failed = true;
  }
  if (!failed || (await User.count({ where: { id: base + 9 } })) !== 0) throw new Error('findOrCreate did not fail cleanly');
  await User.destroy({ where: { city: ['sq', 'sq2'] } });
  await Note.drop();
  await sq.close();
  console.log('OK');
}

main().catch((e) => { console.error(e); process.exit(1); });
