// node-postgres with pg-copy-streams through shardproxy: COPY FROM STDIN of
// CSV rows (quoted fields with newlines, written in small pieces that cut
// rows apart) into the sharded order_items, then COPY TO STDOUT back.
// Usage: node node_copy.js URL BASE_USER_ID
const { Client } = require('pg');
const { from: copyFrom, to: copyTo } = require('pg-copy-streams');
const { pipeline } = require('stream/promises');
const { Readable, Writable } = require('stream');

const [url, baseArg] = process.argv.slice(2);
const base = Number(baseArg);

(async () => {
  const c = new Client({ connectionString: url });
  await c.connect();
  let csv = 'id,order_id,user_id,name,quantity,price\n';
  for (let i = 1; i <= 300; i++) {
    csv += `${i},${i},${base + (i % 40)},"js ""${i}""\nline two, with comma",${i % 5},2.50\n`;
  }
  // pieces of 7 bytes: rows, quotes and newlines fall across CopyData messages
  const pieces = [];
  for (let i = 0; i < csv.length; i += 7) pieces.push(Buffer.from(csv.slice(i, i + 7)));
  const ingest = c.query(copyFrom('COPY order_items FROM STDIN (FORMAT csv, HEADER)'));
  await pipeline(Readable.from(pieces), ingest);
  if (ingest.rowCount !== 300) throw new Error(`COPY FROM rowCount ${ingest.rowCount}`);
  const chunks = [];
  const out = c.query(copyTo(`COPY (SELECT id, name FROM order_items WHERE user_id >= ${base} AND user_id < ${base + 1000}) TO STDOUT (FORMAT csv)`));
  await pipeline(out, new Writable({ write(chunk, _enc, cb) { chunks.push(chunk); cb(); } }));
  const text = Buffer.concat(chunks).toString();
  const n = (text.match(/line two, with comma/g) || []).length;
  if (n !== 300) throw new Error(`COPY TO gave ${n} rows`);
  const r = await c.query('SELECT count(*)::int AS n FROM order_items WHERE user_id >= $1 AND user_id < $2', [base, base + 1000]);
  if (r.rows[0].n !== 300) throw new Error(`count ${r.rows[0].n}`);
  await c.end();
  console.log('OK');
})().catch((e) => { console.error(e); process.exit(1); });
