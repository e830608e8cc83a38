import java.io.*;
import java.nio.charset.StandardCharsets;
import java.sql.*;
import org.postgresql.PGConnection;
import org.postgresql.copy.CopyManager;

/** JDBC CopyManager through shardproxy: copyIn of CSV into a sharded table (rows spread over the
 *  shards), copyOut of the rows merged in order, copyOut of the whole table, and a copyIn rolled back
 *  inside a transaction.  Usage: java -cp postgresql.jar JdbcCopy.java JDBC_URL BASE_USER_ID */
public class JdbcCopy {
    static void check(boolean ok, String what) { if (!ok) throw new AssertionError(what); }

    static long count(Connection c, long lo, long hi) throws SQLException {
        try (PreparedStatement q = c.prepareStatement("SELECT count(*) FROM order_items WHERE user_id >= ? AND user_id < ?")) {
            q.setLong(1, lo); q.setLong(2, hi);
            try (ResultSet rs = q.executeQuery()) { rs.next(); return rs.getLong(1); }
        }
    }

    public static void main(String[] args) throws Exception {
        long base = Long.parseLong(args[1]);
        int n = 500;
        StringBuilder csv = new StringBuilder();
        for (int i = 0; i < n; i++) {
            csv.append(i).append(',').append(i).append(',').append(base + i)
               .append(",\"item, \"\"").append(i).append("\"\"\nline two\",").append(i % 7 + 1).append(',').append(i % 50).append(".25\n");
        }
        try (Connection c = DriverManager.getConnection(args[0])) {
            CopyManager cm = c.unwrap(PGConnection.class).getCopyAPI();
            long in = cm.copyIn("COPY order_items (id, order_id, user_id, name, quantity, price) FROM STDIN (FORMAT csv)",
                    new ByteArrayInputStream(csv.toString().getBytes(StandardCharsets.UTF_8)));
            check(in == n, "copyIn count " + in);
            check(count(c, base, base + n) == n, "rows after copyIn");

            ByteArrayOutputStream out = new ByteArrayOutputStream();
            long got = cm.copyOut("COPY (SELECT id, order_id, user_id, name, quantity, price FROM order_items WHERE user_id >= " + base
                    + " AND user_id < " + (base + n) + " ORDER BY user_id) TO STDOUT (FORMAT csv)", out);
            check(got == n, "copyOut count " + got);
            check(out.toString(StandardCharsets.UTF_8).equals(csv.toString()), "copyOut in order equals the input");

            ByteArrayOutputStream all = new ByteArrayOutputStream();
            long total = cm.copyOut("COPY order_items TO STDOUT", all);
            check(total >= n, "copyOut of the table: " + total);

            c.setAutoCommit(false);
            long more = cm.copyIn("COPY order_items (id, order_id, user_id, name, quantity, price) FROM STDIN",
                    new StringReader((base + n) + "\t1\t" + (base + n) + "\tx\t1\t1\n" + (base + n + 1) + "\t1\t" + (base + n + 1) + "\ty\t1\t1\n"));
            check(more == 2, "copyIn in a transaction");
            check(count(c, base + n, base + n + 2) == 2, "visible inside the transaction");
            c.rollback();
            c.setAutoCommit(true);
            check(count(c, base + n, base + n + 2) == 0, "rolled back");

            try {
                cm.copyIn("COPY order_items (id, order_id, user_id, name, quantity, price) FROM STDIN (FORMAT csv)",
                        new StringReader("1,1,notanumber,x,1,1\n"));
                check(false, "a bad key must fail");
            } catch (SQLException e) {
                check("22P02".equals(e.getSQLState()), "bad key: " + e.getSQLState() + " " + e.getMessage());
            }
            check(count(c, base, base + n) == n, "usable after an error");
        }
        System.out.println("OK");
    }
}
