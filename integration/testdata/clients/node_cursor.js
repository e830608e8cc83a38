// pg-cursor and pg-query-stream over cross-shard queries: prints the rows
// it reads (the test compares the output through shardproxy with the output
// against one Postgres). Usage: node node_cursor.js URL
const { Client } = require('pg');
const Cursor = require('pg-cursor');
const QueryStream = require('pg-query-stream');

const where = 'WHERE id BETWEEN 960000 AND 960299';

async function main() {
  const client = new Client({ connectionString: process.argv[2] });
  await client.connect();
  // pg-cursor: Execute(n) + Flush until the rows run out, outside a transaction.
  const cursor = client.query(new Cursor(`SELECT id, total FROM orders ${where} ORDER BY created_at, id`));
  let batches = 0;
  for (;;) {
    const rows = await cursor.read(64);
    if (rows.length === 0) break;
    batches++;
    console.log('cursor', rows.map((r) => `${r.id}:${r.total}`).join(','));
  }
  await cursor.close();
  console.log('batches', batches);
  // A cursor with parameters, closed half-read, then a query on the same client.
  const half = client.query(new Cursor(`SELECT id FROM orders WHERE id BETWEEN $1 AND $2 ORDER BY id DESC LIMIT $3`, [960000, 960299, 50]));
  console.log('half', (await half.read(7)).map((r) => r.id).join(','));
  await half.close();
  const { rows } = await client.query(`SELECT status, count(*) AS n FROM orders ${where} GROUP BY status ORDER BY status`);
  console.log('after', JSON.stringify(rows));
  // pg-query-stream inside a transaction, with a keyed statement in between.
  await client.query('BEGIN');
  const stream = client.query(new QueryStream(`SELECT id, status FROM orders ${where} ORDER BY status, id`, [], { batchSize: 25 }));
  const seen = [];
  for await (const row of stream) {
    seen.push(`${row.id}:${row.status}`);
  }
  console.log('stream', seen.length, seen.join(','));
  const one = await client.query('SELECT id FROM orders WHERE user_id = $1', [960009]);
  console.log('keyed', one.rows[0].id);
  await client.query('COMMIT');
  await client.end();
  console.log('OK');
}

main().catch((e) => {
  console.error('FAIL', e);
  process.exit(1);
});
