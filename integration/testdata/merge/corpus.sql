-- Cross-shard merging corpus of TestMergeOracle (issue #4).
--
-- No statement restricts a shard key to one shard: each fans out. Before
-- each statement, what a correct shard router MUST do:
--   -- ordered    answer exactly, row for row (the ORDER BY is total: it
--                 ends in a unique column, or the selected columns are the
--                 sort keys, or equal keys mean identical rows)
--   -- multiset   answer exactly, as a multiset of rows
--   -- refuse     SQLSTATE 0A000: no exact merge exists (ordered-set and
--                 ordered aggregates, window functions over a fan-out,
--                 DISTINCT ON a non-key, orderings the proxy cannot
--                 reproduce), or a join/subquery form docs/routing.md refuses.
-- Answerable forms the proxy does not merge yet are listed in pending.txt.
-- Text compares under collation C (the clusters' default), except
-- users.label, declared COLLATE "en-x-icu".
-- Statements end with ";" at the end of a line.

-- ===== Concatenation =====
-- multiset
SELECT id, user_id, total, status FROM orders;
-- multiset
SELECT * FROM orders;
-- multiset
SELECT * FROM order_items;
-- multiset
SELECT * FROM users;
-- multiset
SELECT * FROM events;
-- multiset: hash table with empty shards
SELECT * FROM refunds;
-- multiset
SELECT id, status FROM orders WHERE status IS NULL;
-- multiset
SELECT id, tip, qty FROM orders WHERE tip > 2 AND paid;
-- multiset
SELECT upper(status) AS s, total * 2 AS dbl, tip + 1 AS t1, weight / 2 AS w FROM orders WHERE total > 900;
-- multiset: join to the reference table
SELECT o.id, o.total, r.name, r.cuisine FROM orders o JOIN restaurants r ON r.id = o.restaurant_id;
-- multiset
SELECT e.id, e.kind, e.created_at FROM events e WHERE e.kind ILIKE 'click%';
-- multiset
SELECT id, token, signup, label FROM users WHERE vip;

-- ===== ORDER BY, every type =====
-- ordered: bigint with NULLs (the shard key)
SELECT id, user_id FROM orders ORDER BY user_id, id;
-- ordered
SELECT id FROM orders ORDER BY id DESC;
-- ordered: int
SELECT id, qty FROM orders ORDER BY qty, id;
-- ordered: smallint, DESC puts NULLs first
SELECT id, prio FROM orders ORDER BY prio DESC, id;
-- ordered: numeric(12,2)
SELECT id, total FROM orders ORDER BY total, id;
-- ordered: numeric of several scales
SELECT id, tip FROM orders ORDER BY tip DESC NULLS LAST, id;
-- ordered: float8 with -0
SELECT id, weight FROM orders ORDER BY weight NULLS FIRST, id;
-- ordered: float8 with NaN, Infinity, -Infinity, -0
SELECT id, score FROM users ORDER BY score DESC, id;
-- ordered
SELECT id, score FROM users ORDER BY score NULLS FIRST, id DESC;
-- ordered: text, mixed case, empty strings
SELECT id, status FROM orders ORDER BY status, id;
-- ordered
SELECT id, status FROM orders ORDER BY status DESC NULLS LAST, id DESC;
-- ordered: varchar
SELECT id, code FROM orders ORDER BY code NULLS FIRST, id;
-- ordered: bool
SELECT id, paid FROM orders ORDER BY paid, id;
-- ordered
SELECT id, paid FROM orders ORDER BY paid DESC NULLS LAST, id;
-- ordered: date
SELECT id, day FROM orders ORDER BY day, id;
-- ordered: timestamp
SELECT id, placed_at FROM orders ORDER BY placed_at DESC, id;
-- ordered: timestamptz
SELECT id, created_at FROM orders ORDER BY created_at, id;
-- ordered: uuid
SELECT id, ref FROM orders ORDER BY ref NULLS FIRST, id;
-- ordered: non-ASCII text (UTF-8 byte order under C)
SELECT id, name FROM users ORDER BY name, id;
-- ordered: three keys
SELECT name, city, id FROM users ORDER BY city DESC, name, id;
-- ordered: range table, one range shard empty
SELECT id, kind, created_at FROM events ORDER BY created_at DESC, id;
-- ordered: numeric with NaN
SELECT id, amount FROM events ORDER BY amount, id;
-- ordered: positions
SELECT status, total, id FROM orders ORDER BY 1 NULLS FIRST, 2 DESC, 3;
-- ordered: output names shadow the table's columns
SELECT id AS user_id, user_id AS id FROM orders ORDER BY id, user_id;
-- ordered
SELECT total AS id, id AS oid FROM orders ORDER BY id DESC, oid;
-- ordered
SELECT o.id, o.total FROM orders o ORDER BY o.total, o.id;
-- ordered: hash table with empty shards
SELECT * FROM refunds ORDER BY id;
-- ordered: ORDER BY a name under SELECT *
SELECT * FROM users ORDER BY name, id;
-- ordered: duplicate rows in order_items are identical, so the order is total
SELECT id, user_id, quantity FROM order_items ORDER BY quantity DESC, user_id, id;
-- ordered: equal keys are identical rows
SELECT status FROM orders ORDER BY status NULLS FIRST LIMIT 500;
-- ordered: COLLATE "C" is the byte order the merge uses
SELECT id, name FROM users ORDER BY name COLLATE "C", id;
-- refuse: the shards order users.label by ICU rules, which the proxy cannot reproduce
SELECT id, label FROM users ORDER BY label, id;
-- refuse: same, the collation given in the select list
SELECT id, name COLLATE "en-x-icu" AS n FROM users ORDER BY n, id;
-- refuse: min/max under an ICU collation
SELECT min(label), max(label) FROM users;
-- refuse: ORDER BY under an ICU collation
SELECT id, name FROM users ORDER BY name COLLATE "en-x-icu", id;
-- ordered: the ICU column under COLLATE "C"
SELECT id, label COLLATE "C" AS l FROM users ORDER BY l, id;
-- ordered: char(n) compares without its trailing spaces
SELECT id, grade FROM users ORDER BY grade, id;
-- multiset
SELECT min(grade), max(grade) FROM users;
-- ordered: an output name hides the table's column of that name
SELECT id, -total AS total FROM orders ORDER BY total, id;
-- ordered: a qualified name is the table's column, not an output name
SELECT o.status AS id, o.id AS n FROM orders o ORDER BY o.id;
-- ordered
SELECT status AS id, id AS n FROM orders ORDER BY id, n;
-- ordered: output names are case-sensitive
SELECT total AS "Id", id FROM orders ORDER BY id;
-- ordered: the qualified name of a selected column
SELECT id, total FROM orders ORDER BY orders.total, id;

-- ===== ORDER BY a hidden column or an expression =====
-- ordered
SELECT id FROM orders ORDER BY total, id;
-- ordered
SELECT id, status FROM orders ORDER BY created_at DESC, id;
-- ordered
SELECT id FROM orders ORDER BY lower(status) NULLS FIRST, id;
-- ordered
SELECT id, total FROM orders ORDER BY total * -1, id;
-- ordered
SELECT id, tip FROM orders ORDER BY coalesce(tip, 0) + total DESC, id;
-- ordered
SELECT user_id, id FROM orders ORDER BY abs(user_id - 200), id;
-- ordered: a position under SELECT *
SELECT * FROM orders ORDER BY 2, 1;
-- ordered
SELECT name FROM users ORDER BY id;
-- ordered: the same expression as a select-list entry
SELECT total * 2 AS t2, id FROM orders ORDER BY total * 2, id;
-- ordered
SELECT id, created_at FROM events ORDER BY date_trunc('month', created_at), id;

-- ===== LIMIT and OFFSET =====
-- ordered
SELECT id, total FROM orders ORDER BY total DESC, id LIMIT 10;
-- ordered
SELECT id, total FROM orders ORDER BY total, id LIMIT 10 OFFSET 25;
-- ordered
SELECT id FROM orders ORDER BY id OFFSET 2990;
-- ordered: OFFSET beyond the end
SELECT id, total FROM orders ORDER BY total, id LIMIT 5 OFFSET 100000;
-- ordered
SELECT id FROM orders ORDER BY id OFFSET 100000;
-- multiset
SELECT id FROM orders LIMIT 0;
-- ordered
SELECT id, total FROM orders ORDER BY total, id LIMIT 0;
-- ordered
SELECT id, status FROM orders ORDER BY status NULLS FIRST, id LIMIT 15;
-- ordered
SELECT id, day FROM orders ORDER BY day DESC NULLS LAST, id FETCH FIRST 7 ROWS ONLY;
-- ordered
SELECT id FROM events ORDER BY created_at, id LIMIT 20 OFFSET 5;
-- ordered
SELECT id FROM orders ORDER BY id LIMIT ALL;
-- ordered
SELECT id, total FROM orders ORDER BY total DESC, id LIMIT 3 OFFSET 0;
-- multiset: LIMIT 0 of an aggregate: no row
SELECT count(*) FROM orders LIMIT 0;
-- multiset: OFFSET 1 of a one-row aggregate: no row
SELECT count(*) FROM orders OFFSET 1;
-- multiset
SELECT sum(total) FROM orders LIMIT 1 OFFSET 1;
-- multiset
SELECT count(*), max(total) FROM orders OFFSET 0;
-- refuse: a LIMIT expression (documented: constants and parameters only)
SELECT id FROM orders ORDER BY id LIMIT 2 + 3;
-- refuse: an OFFSET expression (documented)
SELECT id FROM orders ORDER BY id OFFSET length('abc');

-- ===== Aggregates without GROUP BY =====
-- multiset
SELECT count(*) FROM orders;
-- multiset
SELECT count(*), count(user_id), count(status), count(tip) FROM orders;
-- multiset: int, smallint, bigint, numeric(12,2), numeric
SELECT sum(qty), sum(prio), sum(user_id), sum(total), sum(tip) FROM orders;
-- multiset: float8 sum (tolerance 1e-12)
SELECT sum(weight) FROM orders;
-- multiset
SELECT min(qty), max(qty), min(prio), max(prio), min(total), max(total), min(tip), max(tip) FROM orders;
-- multiset: float8 with -0
SELECT min(weight), max(weight) FROM orders;
-- multiset: float8 with NaN, infinities
SELECT min(score), max(score), count(score) FROM users;
-- multiset: text and varchar under C
SELECT min(status), max(status), min(code), max(code) FROM orders;
-- multiset
SELECT min(day), max(day), min(placed_at), max(placed_at), min(created_at), max(created_at) FROM orders;
-- multiset
SELECT min(name), max(name), min(email), max(email) FROM users;
-- multiset: numeric NaN
SELECT min(amount), max(amount), sum(amount) FROM events;
-- multiset: numeric sum of several scales
SELECT sum(amount), count(amount) FROM events WHERE amount <> 'NaN';
-- multiset
SELECT sum(discount), sum(price), sum(quantity) FROM order_items;
-- multiset
SELECT avg(qty) FROM orders;
-- multiset
SELECT avg(user_id), avg(prio) FROM orders;
-- multiset
SELECT avg(total), avg(tip) FROM orders;
-- multiset: float8 avg (tolerance 1e-12)
SELECT avg(weight) FROM orders;
-- multiset
SELECT bool_and(paid), bool_or(paid), every(paid) FROM orders;
-- multiset
SELECT bool_and(vip), bool_or(vip) FROM users WHERE vip IS NOT NULL AND vip;
-- multiset
SELECT bit_and(prio), bit_or(prio) FROM orders;
-- multiset
SELECT count(*) FILTER (WHERE paid) FROM orders;
-- multiset
SELECT sum(total) FILTER (WHERE status = 'paid'), count(*) FILTER (WHERE tip IS NULL) FROM orders;
-- multiset
SELECT min(created_at) FILTER (WHERE status ILIKE 'done') FROM orders;
-- multiset: DISTINCT over the shard key: per-shard counts add up
SELECT count(DISTINCT user_id) FROM orders;
-- multiset: DISTINCT over another column
SELECT count(DISTINCT status) FROM orders;
-- multiset: hash table with empty shards
SELECT count(*), sum(amount), min(reason), max(created_at) FROM refunds;

-- ===== Aggregates over empty results =====
-- multiset
SELECT count(*), sum(total), min(total), max(status) FROM orders WHERE total < -100000;
-- multiset
SELECT count(*), sum(total), avg(tip), bool_and(paid) FROM orders WHERE total < -100000;
-- multiset
SELECT count(*), sum(amount), max(created_at) FROM events WHERE kind = 'no such kind';
-- multiset
SELECT avg(weight), count(*) FILTER (WHERE paid), sum(weight) FROM orders WHERE id < 0;

-- ===== Expressions over aggregates =====
-- multiset
SELECT max(total) - min(total) FROM orders;
-- multiset
SELECT count(*) * 2 FROM orders;
-- multiset
SELECT avg(total)::numeric(10,2) FROM orders;
-- multiset
SELECT sum(total) / count(total) FROM orders;
-- multiset: integer division
SELECT sum(qty) / count(qty) FROM orders;
-- multiset
SELECT round(avg(tip), 3), max(tip) + 1 FROM orders;
-- multiset
SELECT coalesce(max(note), 'none'), count(*) + 0 FROM orders;
-- multiset
SELECT CASE WHEN count(*) > 1000 THEN 'big' ELSE 'small' END FROM orders;
-- multiset: aliases only, no expression
SELECT sum(total) AS s, count(*) AS n FROM orders;
-- multiset: a constant beside an aggregate
SELECT count(*), 'x' AS c FROM orders;
-- multiset: aggregates over a plain FROM subquery
SELECT max(t), min(t), count(*) FROM (SELECT total AS t FROM orders) x;
-- multiset: aggregates in UNION ALL branches
SELECT max(id) FROM orders UNION ALL SELECT max(id) FROM events;

-- ===== GROUP BY =====
-- multiset: NULL group
SELECT status, count(*) FROM orders GROUP BY status;
-- multiset
SELECT lower(status), count(*), sum(total) FROM orders GROUP BY lower(status);
-- multiset
SELECT date_trunc('month', created_at) AS m, count(*), sum(total) FROM orders GROUP BY 1;
-- multiset
SELECT date_trunc('month', created_at), count(*) FROM events GROUP BY date_trunc('month', created_at);
-- multiset: two columns
SELECT status, paid, count(*), min(total), max(total) FROM orders GROUP BY status, paid;
-- multiset
SELECT restaurant_id, avg(total), bool_or(paid) FROM orders GROUP BY restaurant_id;
-- multiset
SELECT city, count(*), count(age), avg(age) FROM users GROUP BY city;
-- multiset
SELECT kind, count(*), sum(amount) FROM events WHERE amount <> 'NaN' GROUP BY kind;
-- multiset
SELECT day, count(*) FROM orders GROUP BY day;
-- multiset
SELECT code, count(*) FROM orders GROUP BY code;
-- multiset: float8 sum per group (tolerance 1e-12)
SELECT qty, sum(weight) FROM orders GROUP BY qty;
-- multiset
SELECT paid, count(*) FROM orders GROUP BY paid;
-- multiset
SELECT status, count(*) FILTER (WHERE paid), sum(tip) FILTER (WHERE tip > 1) FROM orders GROUP BY status;
-- multiset: a grouping column not selected
SELECT count(*), sum(total) FROM orders GROUP BY status;
-- ordered: ORDER BY an aggregate
SELECT status, count(*) AS n FROM orders GROUP BY status ORDER BY n DESC, status NULLS FIRST;
-- ordered
SELECT status, count(*) FROM orders GROUP BY status ORDER BY count(*) DESC, status;
-- ordered: ORDER BY a hidden aggregate
SELECT status FROM orders GROUP BY status ORDER BY sum(total) DESC, status;
-- ordered: GROUP BY ... ORDER BY ... LIMIT
SELECT restaurant_id, sum(total) AS s FROM orders GROUP BY restaurant_id ORDER BY s DESC, restaurant_id LIMIT 5;
-- ordered
SELECT lower(status) AS ls, count(*) FROM orders GROUP BY 1 ORDER BY 1 NULLS FIRST;
-- ordered
SELECT date_trunc('month', created_at) AS m, count(*) FROM orders GROUP BY m ORDER BY m DESC LIMIT 4 OFFSET 2;

-- ===== HAVING =====
-- multiset
SELECT status, count(*) FROM orders GROUP BY status HAVING count(*) > 100;
-- multiset
SELECT restaurant_id, sum(total) FROM orders GROUP BY restaurant_id HAVING sum(total) >= 20000 AND count(*) > 1;
-- multiset: HAVING on an aggregate not in the select list
SELECT code FROM orders GROUP BY code HAVING max(total) > 900;
-- multiset: HAVING without GROUP BY
SELECT count(*) FROM orders HAVING count(*) > 0;
-- multiset: no row
SELECT count(*) FROM orders HAVING count(*) > 1000000;
-- multiset
SELECT lower(status), avg(total) FROM orders GROUP BY lower(status) HAVING bool_or(paid);

-- ===== GROUP BY the shard key: each group on one shard =====
-- multiset
SELECT user_id, count(*), sum(total), avg(total) FROM orders GROUP BY user_id;
-- ordered
SELECT user_id, count(*) AS n FROM orders GROUP BY user_id ORDER BY n DESC, user_id LIMIT 5;
-- multiset
SELECT user_id, status, count(*) FROM orders GROUP BY user_id, status;
-- multiset
SELECT user_id, max(created_at) FROM orders GROUP BY user_id HAVING count(*) > 10;
-- ordered
SELECT user_id, sum(total) AS s FROM orders GROUP BY user_id ORDER BY user_id NULLS FIRST OFFSET 5 LIMIT 10;
-- multiset
SELECT u.id, u.name, count(*) FROM users u JOIN orders o ON o.user_id = u.id GROUP BY u.id, u.name;
-- multiset: the key from the nullable side: the NULL group is on every shard
SELECT o.user_id, count(u.id) FROM users u LEFT JOIN orders o ON o.user_id = u.id GROUP BY o.user_id;
-- multiset: an expression of the key is not the key
SELECT user_id % 4 AS b, count(*) FROM orders GROUP BY user_id % 4;
-- multiset: a FROM subquery grouped by the key: its groups are whole on each shard
SELECT * FROM (SELECT user_id, count(*) AS c FROM orders GROUP BY user_id) x WHERE x.c > 20;
-- multiset: the key from the nullable side of a RIGHT JOIN
SELECT u.id, count(*) FROM users u RIGHT JOIN orders o ON o.user_id = u.id GROUP BY u.id;
-- multiset: and of a FULL JOIN
SELECT u.id, count(o.id) FROM users u FULL JOIN orders o ON o.user_id = u.id GROUP BY u.id;
-- multiset: a computed column named like the key is not the key
SELECT x.user_id, count(*) FROM (SELECT user_id % 3 AS user_id FROM orders) x GROUP BY x.user_id;
-- multiset
WITH x AS (SELECT user_id % 3 AS user_id FROM orders) SELECT user_id, count(*) FROM x GROUP BY user_id;
-- multiset: GROUP BY a position whose output is named like the key
SELECT status AS user_id, count(*) FROM orders GROUP BY 1;
-- multiset: a bare GROUP BY name is the input column (the key) before an output name
SELECT max(status) AS user_id, count(*) FROM orders GROUP BY user_id;
-- multiset: the key under an alias
SELECT user_id AS uid, count(*) FROM orders GROUP BY uid;
-- multiset: grouped by the key, the key not selected
SELECT count(*), max(total) FROM orders GROUP BY user_id;
-- ordered
SELECT user_id, count(*) FROM orders GROUP BY user_id ORDER BY 2 DESC, 1 LIMIT 3 OFFSET 2;
-- multiset: through a CTE that is pulled up
WITH x AS (SELECT user_id, total FROM orders) SELECT user_id, sum(total) FROM x GROUP BY user_id;
-- multiset: a one-to-one expression of the key
SELECT user_id::text, count(*) FROM orders GROUP BY user_id::text;
-- multiset: ROLLUP adds a grand total row over every shard
SELECT user_id, count(*) FROM orders GROUP BY ROLLUP (user_id);
-- multiset: every grouping set holds the key
SELECT user_id, status, count(*) FROM orders GROUP BY GROUPING SETS ((user_id, status), (user_id));
-- multiset
SELECT user_id, status, count(*) FROM orders GROUP BY user_id, ROLLUP (status);
-- multiset: a window partitioned by the key: each partition on one shard
SELECT user_id, id, row_number() OVER (PARTITION BY user_id ORDER BY id) FROM orders;

-- ===== DISTINCT =====
-- multiset
SELECT DISTINCT status FROM orders;
-- multiset
SELECT DISTINCT status, paid FROM orders;
-- ordered
SELECT DISTINCT status FROM orders ORDER BY status NULLS FIRST;
-- ordered
SELECT DISTINCT lower(status) AS s FROM orders ORDER BY s;
-- multiset: NULLs
SELECT DISTINCT city FROM users;
-- multiset
SELECT DISTINCT tip FROM orders;
-- multiset: the shard key
SELECT DISTINCT user_id FROM orders;
-- ordered
SELECT DISTINCT user_id FROM orders ORDER BY user_id NULLS FIRST;
-- multiset
SELECT DISTINCT kind FROM events;
-- multiset
SELECT DISTINCT date_trunc('month', created_at) FROM events;
-- multiset
SELECT DISTINCT r.cuisine FROM orders o JOIN restaurants r ON r.id = o.restaurant_id;
-- multiset: duplicate rows of order_items
SELECT DISTINCT id, order_id, price FROM order_items;
-- multiset: the key among the DISTINCT columns
SELECT DISTINCT user_id, status FROM orders;
-- multiset: the key from the nullable side of a RIGHT JOIN
SELECT DISTINCT u.id FROM users u RIGHT JOIN orders o ON o.user_id = u.id;
-- multiset: an output named like the key
SELECT DISTINCT status AS user_id FROM orders;
-- multiset: a computed column named like the key
SELECT DISTINCT x.user_id FROM (SELECT user_id / 100 AS user_id FROM orders) x;
-- ordered: DISTINCT ON the shard key
SELECT DISTINCT ON (user_id) user_id, id, total FROM orders ORDER BY user_id, id;
-- ordered: DISTINCT ON the shard key, ordered by a hidden column
SELECT DISTINCT ON (user_id) user_id, id FROM orders ORDER BY user_id, created_at DESC, id;
-- refuse: DISTINCT ON a column that is not the shard key
SELECT DISTINCT ON (status) status, id FROM orders ORDER BY status, id;
-- refuse
SELECT DISTINCT ON (lower(status)) status, total FROM orders ORDER BY lower(status), total DESC, id;

-- ===== UNION and other set operations =====
-- multiset
SELECT user_id FROM orders UNION ALL SELECT user_id FROM order_items;
-- multiset
SELECT id FROM orders WHERE total > 500 UNION ALL SELECT id FROM orders WHERE total <= 500;
-- multiset: hash and range branches
SELECT status FROM orders UNION SELECT kind FROM events;
-- multiset
SELECT user_id FROM orders UNION SELECT id FROM users;
-- ordered
SELECT status FROM orders UNION SELECT kind FROM events ORDER BY 1 NULLS FIRST;
-- ordered: ORDER BY over UNION ALL
SELECT id, 'o' AS t FROM orders UNION ALL SELECT id, 'i' FROM order_items ORDER BY 2, 1;
-- ordered: LIMIT and OFFSET over UNION ALL
SELECT id FROM orders UNION ALL SELECT id FROM events ORDER BY 1 DESC LIMIT 10 OFFSET 3;
-- multiset: a reference-table branch must be read once
SELECT name FROM restaurants UNION ALL SELECT status FROM orders;
-- multiset
SELECT user_id FROM orders INTERSECT SELECT user_id FROM refunds;
-- multiset
SELECT user_id FROM orders EXCEPT SELECT id FROM users;

-- ===== Joins of co-located tables on the key, joins to the reference table =====
-- multiset
SELECT o.id, i.id, i.price FROM orders o JOIN order_items i ON i.user_id = o.user_id AND i.order_id = o.id;
-- multiset
SELECT count(*), sum(i.price * i.quantity) FROM orders o JOIN order_items i USING (user_id) WHERE i.order_id = o.id;
-- ordered
SELECT o.id AS oid, i.id AS iid, i.quantity FROM orders o JOIN order_items i ON i.user_id = o.user_id AND i.order_id = o.id ORDER BY i.quantity DESC, oid, iid;
-- multiset
SELECT u.name, o.total FROM users u JOIN orders o ON o.user_id = u.id WHERE o.total > 800;
-- multiset
SELECT u.id FROM users u LEFT JOIN orders o ON o.user_id = u.id WHERE o.id IS NULL;
-- multiset
SELECT r.cuisine, count(*) FROM orders o JOIN restaurants r ON r.id = o.restaurant_id GROUP BY r.cuisine;
-- ordered
SELECT o.id, r.name FROM orders o JOIN restaurants r ON r.id = o.restaurant_id ORDER BY r.name, o.id LIMIT 30;
-- multiset
SELECT count(*) FROM users u WHERE EXISTS (SELECT 1 FROM orders o WHERE o.user_id = u.id AND o.paid);
-- multiset
SELECT sum(o.total), count(*) FROM orders o JOIN restaurants r ON r.id = o.restaurant_id WHERE r.open;
-- multiset
SELECT u.city, count(*) FROM users u JOIN refunds f ON f.user_id = u.id GROUP BY u.city;

-- ===== Subqueries in FROM, CTEs =====
-- multiset
SELECT x.id, x.t FROM (SELECT id, total * 2 AS t FROM orders WHERE paid) x WHERE x.t > 100;
-- ordered
SELECT x.id FROM (SELECT id, total FROM orders) x ORDER BY x.id DESC LIMIT 10;
-- multiset
SELECT count(*) FROM (SELECT id FROM orders WHERE status IS NULL) s;
-- multiset
SELECT s.status, count(*) FROM (SELECT status FROM orders WHERE paid) s GROUP BY s.status;
-- multiset
WITH p AS (SELECT id, total FROM orders WHERE paid) SELECT count(*), sum(total) FROM p;

-- ===== Refused: no exact merge =====
-- refuse: ordered-set aggregate
SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY total) FROM orders;
-- refuse
SELECT percentile_disc(0.9) WITHIN GROUP (ORDER BY weight) FROM orders;
-- refuse
SELECT mode() WITHIN GROUP (ORDER BY status) FROM orders;
-- refuse
SELECT status, percentile_cont(0.5) WITHIN GROUP (ORDER BY total) FROM orders GROUP BY status;
-- refuse: window function over a fan-out
SELECT id, row_number() OVER () FROM orders;
-- refuse
SELECT id, rank() OVER (ORDER BY total) FROM orders;
-- refuse
SELECT id, sum(total) OVER (PARTITION BY status) FROM orders;
-- refuse
SELECT id, count(*) OVER () FROM events;
-- refuse: ordered aggregates
SELECT string_agg(status, ',' ORDER BY status) FROM orders;
-- refuse
SELECT array_agg(id ORDER BY id) FROM orders;
-- refuse
SELECT status, string_agg(code, ',' ORDER BY code) FROM orders GROUP BY status;

-- ===== Refused: joins and subqueries docs/routing.md lists =====
-- refuse: a join not on the shard keys
SELECT count(*) FROM orders o JOIN users u ON u.name = o.status;
-- refuse: a hash table joined to a range table
SELECT count(*) FROM orders o JOIN events e ON e.user_id = o.user_id;
-- refuse: NOT IN (SELECT ...)
SELECT count(*) FROM orders WHERE user_id NOT IN (SELECT user_id FROM refunds);
-- refuse: IN (SELECT ... LIMIT n)
SELECT count(*) FROM orders WHERE user_id IN (SELECT user_id FROM refunds ORDER BY id LIMIT 1);
-- refuse: a subquery neither linked on the key nor on one shard
SELECT id FROM orders o WHERE o.total > (SELECT avg(total) FROM orders);
-- refuse: a CTE named twice
WITH x AS (SELECT user_id FROM orders WHERE paid) SELECT count(*) FROM x a JOIN x b USING (user_id);
-- refuse: a limited FROM subquery
SELECT * FROM (SELECT user_id, count(*) FROM orders GROUP BY user_id ORDER BY 2 DESC, 1 LIMIT 3) x;
-- refuse: a FROM subquery grouped by a column that is not the key
SELECT * FROM (SELECT status, count(*) FROM orders GROUP BY status) x;

-- ===== Refused by the merge, answered by the coordinator (issue #17) =====
-- refuse: ROLLUP over a column that is not the key
SELECT status, count(*), sum(total) FROM orders GROUP BY ROLLUP (status) ORDER BY status NULLS LAST;
-- refuse: GROUPING SETS over columns that are not the key
SELECT status, paid, count(*) FROM orders GROUP BY GROUPING SETS ((status), (paid), ()) ORDER BY status, paid, 3;
-- refuse: CUBE
SELECT status, paid, count(*) FROM orders GROUP BY CUBE (status, paid) ORDER BY 1, 2, 3;
-- refuse: INTERSECT across shards on a column that is not the key
SELECT status FROM orders INTERSECT SELECT reason FROM refunds ORDER BY 1;
-- refuse: EXCEPT across shards
SELECT restaurant_id FROM orders EXCEPT SELECT id FROM restaurants WHERE open ORDER BY 1;
-- refuse: a recursive CTE over a sharded table
WITH RECURSIVE r(n, total) AS (SELECT 1, 0::numeric UNION ALL SELECT r.n + 1, r.total + (SELECT sum(total) FROM orders WHERE id % 5 = r.n) FROM r WHERE r.n < 4) SELECT n, total FROM r ORDER BY n;
-- refuse: a grouped subquery over all shards with HAVING
SELECT count(*) FROM (SELECT status FROM orders GROUP BY status HAVING count(*) > 12) t;
-- refuse: percentile with ORDER BY of the groups
SELECT status, percentile_cont(0.5) WITHIN GROUP (ORDER BY total) AS p FROM orders GROUP BY status ORDER BY p DESC NULLS LAST, status;
-- refuse: a global window ordered and limited
SELECT id, total, rank() OVER (ORDER BY total DESC NULLS LAST, id) AS r FROM orders ORDER BY r LIMIT 10;
-- refuse: a window partitioned by a column that is not the key, with parameters-free filter
SELECT id, status, total - avg(total) OVER (PARTITION BY status) AS d FROM orders WHERE paid ORDER BY id LIMIT 20;
-- refuse: a join not on the key, ordered
SELECT o.id, u.name FROM orders o JOIN users u ON u.id = o.restaurant_id ORDER BY o.id LIMIT 25;
-- refuse: an outer join of a sharded table to an unlisted-style range table, grouped
SELECT e.kind, count(o.id) FROM events e LEFT JOIN orders o ON o.user_id = e.user_id GROUP BY e.kind ORDER BY e.kind;
-- ordered: eager loading with a limit (Sequelize findAll({include, limit}), SQLAlchemy joinedload(...).limit()): the limit applies to the parent rows of all shards
SELECT u.id, u.name, o.id AS oid, o.total FROM (SELECT id, name FROM users ORDER BY id LIMIT 2) AS u LEFT JOIN orders o ON u.id = o.user_id ORDER BY u.id, o.id;
-- ordered: eager loading with a limit and an offset, the subquery aliased as an ORM writes it
SELECT "User".id, "User".name, "orders".id AS "orders.id" FROM (SELECT "User".id, "User".name FROM users AS "User" ORDER BY "User".id LIMIT 3 OFFSET 1) AS "User" LEFT OUTER JOIN orders AS "orders" ON "User".id = "orders".user_id ORDER BY "User".id, "orders".id;
-- multiset: a grouped subquery whose groups each live on one shard (grouped by the key)
SELECT count(*) FROM (SELECT user_id, count(*) FROM orders GROUP BY user_id) t;
-- multiset: the same with a filter on the groups
SELECT count(*), sum(c) FROM (SELECT user_id, count(*) AS c FROM orders GROUP BY user_id HAVING count(*) > 2) t;
