import java.math.BigDecimal;
import java.sql.*;

/** JDBC through shardproxy: server-side prepared statements (prepareThreshold=1),
 *  a fan-out, a rolled-back transaction, a batch, and an error followed by recovery.
 *  Usage: java -cp postgresql.jar JdbcCheck.java JDBC_URL BASE_ID */
public class JdbcCheck {
    static void check(boolean ok, String what) { if (!ok) throw new AssertionError(what); }

    public static void main(String[] args) throws Exception {
        long base = Long.parseLong(args[1]);
        try (Connection c = DriverManager.getConnection(args[0])) {
            try (PreparedStatement ins = c.prepareStatement(
                    "INSERT INTO orders (id, user_id, restaurant_id, total, status) VALUES (?, ?, 1, ?, 'jdbc')")) {
                for (long i = base; i < base + 10; i++) {
                    ins.setLong(1, i); ins.setLong(2, i); ins.setBigDecimal(3, new BigDecimal("1.25"));
                    check(ins.executeUpdate() == 1, "insert " + i);
                }
            }
            try (PreparedStatement q = c.prepareStatement("SELECT id, total FROM orders WHERE user_id = ?")) {
                for (int round = 0; round < 3; round++) {
                    for (long i = base; i < base + 10; i++) {
                        q.setLong(1, i);
                        try (ResultSet rs = q.executeQuery()) {
                            check(rs.next() && rs.getLong(1) == i, "point query " + i);
                        }
                    }
                }
            }
            try (PreparedStatement q = c.prepareStatement("SELECT count(*), sum(total) FROM orders WHERE id >= ? AND id < ?")) {
                q.setLong(1, base); q.setLong(2, base + 10);
                try (ResultSet rs = q.executeQuery()) {
                    check(rs.next() && rs.getLong(1) == 10 && rs.getBigDecimal(2).compareTo(new BigDecimal("12.50")) == 0, "fan-out");
                }
            }
            c.setAutoCommit(false);
            try (PreparedStatement u = c.prepareStatement("UPDATE orders SET status = 'gone' WHERE user_id = ?")) {
                u.setLong(1, base);
                check(u.executeUpdate() == 1, "update in tx");
            }
            c.rollback();
            // A batch on one shard key inside a transaction, committed.
            try (PreparedStatement u = c.prepareStatement("UPDATE orders SET status = ? WHERE user_id = ?")) {
                for (String s : new String[]{"a", "b", "c"}) { u.setString(1, s); u.setLong(2, base + 1); u.addBatch(); }
                int[] counts = u.executeBatch();
                check(counts.length == 3 && counts[2] == 1, "batch");
            }
            c.commit();
            c.setAutoCommit(true);
            try (PreparedStatement q = c.prepareStatement("SELECT status FROM orders WHERE user_id = ?")) {
                q.setLong(1, base);
                try (ResultSet rs = q.executeQuery()) { check(rs.next() && rs.getString(1).equals("jdbc"), "rolled back"); }
                q.setLong(1, base + 1);
                try (ResultSet rs = q.executeQuery()) { check(rs.next() && rs.getString(1).equals("c"), "batch committed"); }
            }
            // Writes on several shards in one transaction (two-phase commit):
            // a multi-row INSERT over the shards and a fanned-out UPDATE.
            c.setAutoCommit(false);
            try (PreparedStatement ins = c.prepareStatement(
                    "INSERT INTO orders (id, user_id, restaurant_id, total, status) VALUES (?, ?, 1, 1, 'multi'), (?, ?, 1, 1, 'multi'), (?, ?, 1, 1, 'multi')")) {
                for (int i = 0; i < 3; i++) { ins.setLong(2 * i + 1, base + 20 + i); ins.setLong(2 * i + 2, base + 20 + i); }
                check(ins.executeUpdate() == 3, "multi-row insert over shards");
            }
            try (PreparedStatement u = c.prepareStatement("UPDATE orders SET status = 'multi2' WHERE id >= ? AND id < ?")) {
                u.setLong(1, base + 20); u.setLong(2, base + 23);
                check(u.executeUpdate() == 3, "update over shards");
            }
            c.commit();
            // The same, failing on one shard after the others wrote: nothing stays.
            try (PreparedStatement u = c.prepareStatement("UPDATE orders SET status = 'half', total = total / (CASE WHEN user_id = ? THEN 0 ELSE 1 END) WHERE id >= ? AND id < ?")) {
                u.setLong(1, base + 22); u.setLong(2, base + 20); u.setLong(3, base + 23);
                try { u.executeUpdate(); throw new AssertionError("division by zero did not fail"); }
                catch (SQLException e) { check("22012".equals(e.getSQLState()), "sqlstate " + e.getSQLState()); }
            }
            c.rollback();
            c.setAutoCommit(true);
            try (PreparedStatement q = c.prepareStatement("SELECT count(*) FROM orders WHERE id >= ? AND id < ? AND status = 'multi2'")) {
                q.setLong(1, base + 20); q.setLong(2, base + 23);
                try (ResultSet rs = q.executeQuery()) { check(rs.next() && rs.getLong(1) == 3, "committed on every shard, nothing half"); }
            }
            // A shard-key UPDATE moves the row to its new shard (atomically).
            try (PreparedStatement u = c.prepareStatement("UPDATE orders SET user_id = ? WHERE id = ?")) {
                u.setLong(1, base + 77); u.setLong(2, base + 20);
                check(u.executeUpdate() == 1, "shard-key update");
            }
            try (PreparedStatement q = c.prepareStatement("SELECT count(*) FROM orders WHERE user_id = ? AND id = ?")) {
                q.setLong(1, base + 77); q.setLong(2, base + 20);
                try (ResultSet rs = q.executeQuery()) { check(rs.next() && rs.getLong(1) == 1, "moved row found by its new key"); }
            }
            try (Statement s = c.createStatement()) {
                try { s.executeQuery("SELECT 1/0"); throw new AssertionError("division by zero did not fail"); }
                catch (SQLException e) { check("22012".equals(e.getSQLState()), "sqlstate " + e.getSQLState()); }
                long total;
                try (ResultSet rs = s.executeQuery("SELECT count(*) FROM orders")) { rs.next(); total = rs.getLong(1); }
                java.util.Set<String> seen = new java.util.HashSet<>();
                long sum = 0;
                try (PreparedStatement g = c.prepareStatement("SELECT status, count(*), avg(total) FROM orders WHERE id > ? GROUP BY status")) {
                    g.setLong(1, -1);
                    try (ResultSet rs = g.executeQuery()) {
                        while (rs.next()) { check(seen.add(String.valueOf(rs.getString(1))), "group twice: " + rs.getString(1)); sum += rs.getLong(2); rs.getBigDecimal(3); }
                    }
                }
                check(sum == total, "group counts " + sum + " vs " + total);
                try { s.executeQuery("SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY total) FROM orders"); throw new AssertionError("not refused"); }
                catch (SQLException e) { check("0A000".equals(e.getSQLState()), "sqlstate " + e.getSQLState()); }
                try (ResultSet rs = s.executeQuery("SELECT 42")) { check(rs.next() && rs.getInt(1) == 42, "recovery"); }
            }
        }
        System.out.println("OK");
    }
}
