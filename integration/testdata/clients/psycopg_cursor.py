"""psycopg 3 named (server-side) cursors over cross-shard queries: prints
the rows it reads; the test compares the output through shardproxy with
the output against one Postgres. Usage: psycopg_cursor.py CONNINFO"""
import sys

import psycopg

conninfo = sys.argv[1]
with psycopg.connect(conninfo) as conn:  # not autocommit: in a transaction
    with conn.cursor(name="orders_by_total") as cur:
        cur.itersize = 40
        cur.execute("SELECT id, total FROM orders WHERE id BETWEEN %s AND %s ORDER BY total DESC, id",
                    (960000, 960299))
        print("first", cur.fetchmany(5))
        print("one", cur.fetchone())
        rest = [r for r in cur]
        print("rest", len(rest), rest[:3], rest[-3:])
    with conn.cursor(name="by_status") as cur:
        cur.execute("SELECT status, count(*), sum(total) FROM orders WHERE id BETWEEN 960000 AND 960299 GROUP BY status ORDER BY status")
        print("grouped", cur.fetchall())
    conn.commit()
    with conn.cursor(name="limited") as cur:
        cur.execute("SELECT id FROM orders WHERE id BETWEEN 960000 AND 960299 ORDER BY id DESC LIMIT %s", (12,))
        print("limited", cur.fetchmany(4), cur.fetchall())
        # A keyed read on the same connection while the cursor is open.
        with conn.cursor() as plain:
            plain.execute("SELECT id FROM orders WHERE user_id = %s", (960011,))
            print("keyed", plain.fetchone())
    conn.rollback()
print("OK")
