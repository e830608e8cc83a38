import java.sql.*;

/** Server-prepared statements (prepareThreshold=1) over a cross-shard query
 *  whose Parse fails on every shard (its function does not exist yet), then
 *  succeeds once the function is created: each execution prints what it got
 *  (rows or SQLSTATE), in autocommit and in a transaction. The output is
 *  compared with a run against one Postgres.
 *  Usage: java -cp postgresql.jar JdbcFanoutParseFail.java JDBC_URL */
public class JdbcFanoutParseFail {
    static final String Q = "SELECT id, sqlp_jdbc(total) FROM orders WHERE id = ?";

    static void run(Connection c, String label, long a, long b) {
        try (PreparedStatement ps = c.prepareStatement(Q)) {
            for (int i = 0; i < 3; i++) {
                ps.setLong(1, (i % 2 == 0 ? a : b) + i);
                StringBuilder sb = new StringBuilder(label + " " + i + ":");
                try (ResultSet rs = ps.executeQuery()) {
                    while (rs.next()) sb.append(" ").append(rs.getLong(1)).append("=").append(rs.getString(2));
                } catch (SQLException e) {
                    sb.append(" ").append(e.getSQLState());
                    if (!c.getAutoCommit()) c.rollback();
                }
                System.out.println(sb);
            }
        } catch (SQLException e) {
            System.out.println(label + ": " + e.getSQLState());
        }
    }

    public static void main(String[] args) throws Exception {
        try (Connection c = DriverManager.getConnection(args[0]); Statement st = c.createStatement()) {
            st.execute("DROP FUNCTION IF EXISTS sqlp_jdbc(numeric)");
            for (int round = 0; round < 2; round++) {
                c.setAutoCommit(round == 0);
                run(c, "missing " + round, 960020, 960131);
                if (round == 1) c.commit();
            }
            c.setAutoCommit(true);
            st.execute("CREATE FUNCTION sqlp_jdbc(numeric) RETURNS numeric LANGUAGE sql IMMUTABLE AS 'SELECT $1 * 3'");
            for (int round = 0; round < 2; round++) {
                c.setAutoCommit(round == 0);
                run(c, "created " + round, 960020, 960131);
                if (round == 1) c.commit();
            }
            c.setAutoCommit(true);
            st.execute("DROP FUNCTION sqlp_jdbc(numeric)");
            run(c, "dropped", 960020, 960131);
        }
        System.out.println("OK");
    }
}
