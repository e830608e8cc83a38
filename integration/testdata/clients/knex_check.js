// knex (query builder over node-postgres) through shardproxy: prints what
// it reads, and the Go test compares the output through the proxy with the
// output against one Postgres holding the same rows. Usage:
//   node knex_check.js URL
// The rows 960000..960299 are the cursor tests' (read only here); the
// knex test writes its own ids, 961000..961099, one user per order.
const knex = require('knex');

const lo = 961000;
const ts = (i) => `2025-${String(1 + (i % 12)).padStart(2, '0')}-${String(1 + (i % 28)).padStart(2, '0')}T08:00:00Z`;
const row = (i) => ({ id: lo + i, user_id: lo + i, restaurant_id: i % 4, total: `${i}.50`, status: 'new', created_at: ts(i) });
const fmt = (rows) => rows.map((r) => Object.values(r).map((v) => (v instanceof Date ? v.toISOString() : v)).join(':')).join(',');

async function main() {
  // One connection in the pool, so every step runs on the same session:
  // what one step leaves behind (an open portal, an aborted transaction)
  // the next one would see.
  const db = knex({ client: 'pg', connection: process.argv[2], pool: { min: 1, max: 1 } });
  await db('orders').whereBetween('id', [lo, lo + 99]).del();

  // Inserts: one row by key, then many rows over every shard in one statement.
  const [first] = await db('orders').insert(row(0)).returning(['id', 'status']);
  console.log('insert one', first.id, first.status);
  const many = await db('orders').insert([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11].map(row)).returning('id');
  console.log('insert many', many.map((r) => r.id).sort().join(','));

  // Query builder selects: by key, IN over shards, ORDER BY with LIMIT and
  // OFFSET as bound parameters, aggregates.
  console.log('by key', fmt([await db('orders').where({ user_id: lo + 3 }).first('id', 'total', 'created_at')]));
  console.log('in', fmt(await db('orders').select('id', 'total').whereIn('user_id', [lo + 1, lo + 5, lo + 9]).orderBy('id')));
  console.log('page', fmt(await db('orders').select('id').whereBetween('id', [960000, 960299]).orderBy([{ column: 'created_at', order: 'desc' }, 'id']).limit(7).offset(11)));
  console.log('count', JSON.stringify(await db('orders').whereBetween('id', [lo, lo + 99]).count('* as n').sum('total as s')));
  console.log('group', fmt(await db('orders').select('status').count('* as n').whereBetween('id', [960000, 960299]).groupBy('status').orderBy('status')));

  // Update and delete by key.
  console.log('update', fmt(await db('orders').where({ user_id: lo + 2 }).update({ status: 'paid', total: 99.25 }, ['id', 'status', 'total'])));
  console.log('delete', await db('orders').where({ user_id: lo + 4 }).del());

  // A transaction over several shards, committed; then one rolled back by
  // an error thrown in the handler.
  await db.transaction(async (trx) => {
    await trx('orders').insert(row(20));
    await trx('orders').where({ user_id: lo + 1 }).update({ status: 'sent' });
    await trx('orders').where({ user_id: lo + 6 }).del();
    console.log('in tx', fmt(await trx('orders').select('id', 'status').whereBetween('id', [lo, lo + 99]).orderBy('id')));
  });
  try {
    await db.transaction(async (trx) => {
      await trx('orders').insert(row(21));
      await trx('orders').where({ user_id: lo + 7 }).update({ status: 'gone' });
      throw new Error('rollback please');
    });
  } catch (e) {
    console.log('rolled back:', e.message);
  }
  // A statement error inside a transaction: the transaction is rolled back.
  try {
    await db.transaction(async (trx) => {
      await trx('orders').insert(row(22));
      await trx.raw('SELECT 1/0');
    });
  } catch (e) {
    console.log('tx error:', e.code);
  }
  console.log('after tx', fmt(await db('orders').select('id', 'status', 'total').whereBetween('id', [lo, lo + 99]).orderBy('id')));

  // .stream() over a cross-shard query with ORDER BY, read to the end.
  const seen = [];
  for await (const r of db('orders').select('id', 'total', 'created_at').whereBetween('id', [960000, 960299]).orderBy(['created_at', 'id']).stream({ batchSize: 40 })) {
    seen.push(r);
  }
  console.log('stream', seen.length, fmt(seen));

  // .stream() closed early: the session stays usable (the pool has one
  // connection, so the next statements run on the same session).
  const early = [];
  const s = db('orders').select('id').whereBetween('id', [960000, 960299]).orderBy('total', 'desc').orderBy('id').stream({ batchSize: 10 });
  for await (const r of s) {
    early.push(r.id);
    if (early.length === 13) break; // destroys the stream
  }
  console.log('early', early.join(','));
  console.log('after early', fmt(await db('orders').select('id').where({ user_id: 960042 })));
  console.log('after early scatter', JSON.stringify(await db('orders').whereBetween('id', [960000, 960299]).count('* as n')));
  await db.transaction(async (trx) => {
    console.log('tx after early', fmt(await trx('orders').select('id').whereIn('user_id', [lo, lo + 3]).orderBy('id')));
  });
  // Early close inside a transaction, then more statements in it.
  await db.transaction(async (trx) => {
    const ids = [];
    for await (const r of trx('orders').select('id').whereBetween('id', [960000, 960299]).orderBy('id', 'desc').stream({ batchSize: 5 })) {
      ids.push(r.id);
      if (ids.length === 6) break;
    }
    console.log('tx early', ids.join(','));
    await trx('orders').where({ user_id: lo + 8 }).update({ status: 'paid' });
    console.log('tx after', fmt(await trx('orders').select('id', 'status').where({ user_id: lo + 8 })));
  });
  await db.destroy();
  console.log('OK');
}

main().catch((e) => {
  console.error('FAIL', e);
  process.exit(1);
});
