"""psycopg 3's cursor.copy() through shardproxy: rows written in text and in
binary (with types set) into the sharded order_items, then copied out and
compared. Usage: psycopg_copy.py CONNINFO BASE_USER_ID"""
import sys
from decimal import Decimal

import psycopg

conninfo, base = sys.argv[1], int(sys.argv[2])
rows = [(i, i, base + i % 50, "name\t%d\n\"q\"" % i, i % 7, Decimal("1.50")) for i in range(1, 401)]
with psycopg.connect(conninfo, autocommit=True) as conn:
    with conn.cursor() as cur:
        with cur.copy("COPY order_items (id, order_id, user_id, name, quantity, price) FROM STDIN") as copy:
            for r in rows[:200]:
                copy.write_row(r)
        assert cur.rowcount == 200, cur.rowcount
        with cur.copy("COPY order_items (id, order_id, user_id, name, quantity, price) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["int8", "int8", "int8", "text", "int4", "numeric"])
            for r in rows[200:]:
                copy.write_row(r)
        assert cur.rowcount == 200, cur.rowcount
        got = []
        with cur.copy("COPY (SELECT id, order_id, user_id, name, quantity, price FROM order_items"
                      " WHERE user_id >= %s AND user_id < %s) TO STDOUT (FORMAT BINARY)", (base, base + 1000)) as copy:
            copy.set_types(["int8", "int8", "int8", "text", "int4", "numeric"])
            got = list(copy.rows())
        assert sorted(got) == rows, (len(got), got[:3])
print("OK")
