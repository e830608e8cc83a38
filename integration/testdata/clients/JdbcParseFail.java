import java.sql.*;

/** A server-prepared statement (prepareThreshold=1) whose Parse fails on the
 *  server, executed again: each execution gets the server's own error
 *  (42P01), never 'prepared statement "S_n" does not exist', and the
 *  connection goes on, in autocommit and in a transaction.
 *  Usage: java -cp postgresql.jar JdbcParseFail.java JDBC_URL */
public class JdbcParseFail {
    public static void main(String[] args) throws Exception {
        try (Connection c = DriverManager.getConnection(args[0])) {
            for (int round = 0; round < 2; round++) {
                c.setAutoCommit(round == 0);
                try (PreparedStatement bad = c.prepareStatement("SELECT * FROM no_such_table");
                     PreparedStatement good = c.prepareStatement("SELECT count(*) FROM orders WHERE user_id = ?")) {
                    for (int i = 0; i < 4; i++) {
                        try {
                            bad.executeQuery();
                            throw new AssertionError("no error");
                        } catch (SQLException e) {
                            if (!"42P01".equals(e.getSQLState())) throw new AssertionError("round " + round + " try " + i + ": " + e.getSQLState() + " " + e.getMessage());
                        }
                        if (round == 1) c.rollback();
                        good.setLong(1, 42);
                        try (ResultSet rs = good.executeQuery()) {
                            if (!rs.next()) throw new AssertionError("no row");
                        }
                    }
                    if (round == 1) c.commit();
                }
            }
        }
        System.out.println("OK");
    }
}
