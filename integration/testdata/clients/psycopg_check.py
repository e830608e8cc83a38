"""psycopg 3 through shardproxy: server-side prepared point queries, a
fan-out, a transaction rolled back, and an error followed by recovery.
Usage: psycopg_check.py CONNINFO BASE_ID"""
import sys

import psycopg
from psycopg import errors

conninfo, base = sys.argv[1], int(sys.argv[2])
with psycopg.connect(conninfo, autocommit=True) as conn:
    ids = list(range(base, base + 10))
    with conn.cursor() as cur:
        for i in ids:
            cur.execute(
                "INSERT INTO orders (id, user_id, restaurant_id, total, status) VALUES (%s, %s, 1, %s, 'py')",
                (i, i, 1), prepare=True)
        for _ in range(3):  # past the prepare threshold: server-side statements
            for i in ids:
                cur.execute("SELECT id, total FROM orders WHERE user_id = %s", (i,), prepare=True)
                row = cur.fetchone()
                assert row[0] == i, row
        cur.execute("SELECT count(*), sum(total) FROM orders WHERE id >= %s AND id < %s", (base, base + 10))
        n, total = cur.fetchone()
        assert n == 10 and float(total) == 10, (n, total)
    with conn.transaction(force_rollback=True):
        conn.execute("UPDATE orders SET status = 'gone' WHERE user_id = %s", (base,))
    st = conn.execute("SELECT status FROM orders WHERE user_id = %s", (base,)).fetchone()[0]
    assert st == "py", st
    try:
        conn.execute("SELECT 1/0 FROM orders WHERE user_id = %s", (base,))
        raise AssertionError("division by zero did not fail")
    except errors.DivisionByZero:
        pass
    # A GROUP BY across shards: each group once, counts adding up.
    total = conn.execute("SELECT count(*) FROM orders").fetchone()[0]
    groups = conn.execute("SELECT status, count(*), avg(total) FROM orders WHERE id > %s GROUP BY status", (-1,)).fetchall()
    assert len({g[0] for g in groups}) == len(groups), groups
    assert sum(g[1] for g in groups) == total, (groups, total)
    try:
        conn.execute("SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY total) FROM orders")
        raise AssertionError("cross-shard count(DISTINCT non-key) was not refused")
    except errors.FeatureNotSupported:
        pass
    assert conn.execute("SELECT count(*) FROM orders WHERE user_id = %s", (base + 1,)).fetchone()[0] == 1
print("OK")
