// node-postgres through shardproxy: named (prepared) point queries, a fan-out,
// a rolled-back transaction, and an error followed by recovery.
// Usage: node node_check.js CONNECTION_URL BASE_ID  (NODE_PATH must reach pg)
const { Client } = require('pg');

function check(ok, what) { if (!ok) throw new Error('check failed: ' + what); }

(async () => {
  const base = Number(process.argv[3]);
  const c = new Client({ connectionString: process.argv[2] });
  await c.connect();
  for (let i = base; i < base + 10; i++) {
    const r = await c.query({ name: 'ins', text: "INSERT INTO orders (id, user_id, restaurant_id, total, status) VALUES ($1, $2, 1, $3, 'node')", values: [i, i, '1.25'] });
    check(r.rowCount === 1, 'insert');
  }
  for (let round = 0; round < 3; round++) {
    for (let i = base; i < base + 10; i++) {
      const r = await c.query({ name: 'point', text: 'SELECT id, total FROM orders WHERE user_id = $1', values: [i] });
      check(r.rows.length === 1 && Number(r.rows[0].id) === i, 'point ' + i);
    }
  }
  const f = await c.query('SELECT count(*) AS n, sum(total) AS s FROM orders WHERE id >= $1 AND id < $2', [base, base + 10]);
  check(f.rows[0].n === '10' && f.rows[0].s === '12.50', 'fan-out ' + JSON.stringify(f.rows[0]));
  await c.query('BEGIN');
  await c.query("UPDATE orders SET status = 'gone' WHERE user_id = $1", [base]);
  await c.query('ROLLBACK');
  const s = await c.query('SELECT status FROM orders WHERE user_id = $1', [base]);
  check(s.rows[0].status === 'node', 'rollback');
  try { await c.query('SELECT 1/0'); throw new Error('no error'); } catch (e) { check(e.code === '22012', 'code ' + e.code); }
  const total = Number((await c.query('SELECT count(*) AS n FROM orders')).rows[0].n);
  const groups = (await c.query('SELECT status, count(*) AS n, avg(total) AS a FROM orders WHERE id > $1 GROUP BY status', [-1])).rows;
  check(new Set(groups.map((g) => g.status)).size === groups.length, 'groups unique');
  check(groups.reduce((acc, g) => acc + Number(g.n), 0) === total, 'group counts');
  try { await c.query('SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY total) FROM orders'); throw new Error('not refused'); } catch (e) { check(e.code === '0A000', 'code ' + e.code); }
  const r = await c.query('SELECT 42 AS x');
  check(r.rows[0].x === 42, 'recovery');
  await c.end();
  console.log('OK');
})().catch((e) => { console.error(e); process.exit(1); });
