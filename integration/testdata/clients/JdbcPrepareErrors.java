import java.sql.*;
import java.util.*;
import java.util.concurrent.*;

/** JDBC server-prepared statements (prepareThreshold=1) after errors, through
 *  shardproxy to 4 shards: each of several connections at once loops over a
 *  failing statement followed by prepared statements (point queries, a
 *  fan-out, writes), in autocommit and inside transactions; no statement may
 *  fail with 'prepared statement "S_n" does not exist' or any other error
 *  than the one provoked.
 *  Usage: java -cp postgresql.jar JdbcPrepareErrors.java JDBC_URL BASE_ID */
public class JdbcPrepareErrors {
    static void check(boolean ok, String what) { if (!ok) throw new AssertionError(what); }

    static void expectError(Connection c, String sql, String state) throws SQLException {
        try (PreparedStatement p = c.prepareStatement(sql)) {
            p.executeQuery();
            throw new AssertionError("no error for " + sql);
        } catch (SQLException e) {
            if (!state.equals(e.getSQLState())) throw e;
        }
    }

    static void work(String url, long base, int rounds) throws Exception {
        try (Connection c = DriverManager.getConnection(url)) {
            PreparedStatement point = c.prepareStatement("SELECT id, status FROM orders WHERE user_id = ?");
            PreparedStatement fan = c.prepareStatement("SELECT count(*) FROM orders WHERE id >= ? AND id < ?");
            PreparedStatement upd = c.prepareStatement("UPDATE orders SET status = ? WHERE user_id = ?");
            PreparedStatement ins = c.prepareStatement(
                "INSERT INTO orders (id, user_id, restaurant_id, total, status) VALUES (?, ?, 1, 1, 'pe') ON CONFLICT DO NOTHING");
            for (long i = base; i < base + 8; i++) {
                ins.setLong(1, i); ins.setLong(2, i); ins.executeUpdate();
            }
            for (int r = 0; r < rounds; r++) {
                boolean tx = r % 2 == 1;
                c.setAutoCommit(!tx);
                if (tx) {
                    for (long i = base; i < base + 8; i++) {
                        upd.setString(1, "r" + r); upd.setLong(2, i);
                        check(upd.executeUpdate() == 1, "update " + i);
                    }
                    c.commit();
                }
                switch (r % 4) {
                    case 0: case 2: expectError(c, "SELECT 1/0", "22012"); break;
                    case 1: expectError(c, "SELECT 1/(count(*) - count(*)) FROM orders WHERE user_id = 1", "22012"); break;
                    default:
                        try (PreparedStatement bad = c.prepareStatement("SELECT id FROM orders WHERE user_id = ?::int / 0")) {
                            bad.setLong(1, base);
                            bad.executeQuery();
                            throw new AssertionError("no error");
                        } catch (SQLException e) {
                            if (!"22012".equals(e.getSQLState())) throw e;
                        }
                }
                if (tx) c.rollback();
                for (long i = base; i < base + 8; i++) {
                    point.setLong(1, i);
                    try (ResultSet rs = point.executeQuery()) { check(rs.next() && rs.getLong(1) == i, "point " + i); }
                }
                fan.setLong(1, base); fan.setLong(2, base + 8);
                try (ResultSet rs = fan.executeQuery()) { check(rs.next() && rs.getLong(1) == 8, "fan-out"); }
                if (tx) {
                    upd.setString(1, "after"); upd.setLong(2, base);
                    check(upd.executeUpdate() == 1, "update after error");
                    c.commit();
                }
            }
            c.setAutoCommit(true);
        }
    }

    public static void main(String[] args) throws Exception {
        long base = Long.parseLong(args[1]);
        int threads = 4, rounds = 40;
        ExecutorService ex = Executors.newFixedThreadPool(threads);
        List<Future<?>> fs = new ArrayList<>();
        for (int t = 0; t < threads; t++) {
            long b = base + t * 100;
            fs.add(ex.submit(() -> { work(args[0], b, rounds); return null; }));
        }
        try { for (Future<?> f : fs) f.get(); } catch (ExecutionException e) { e.getCause().printStackTrace(); System.exit(1); }
        ex.shutdown();
        System.out.println("OK");
    }
}
