import java.sql.*;

/** JDBC through shardproxy with a coordinator: a read the merge cannot answer
 *  (percentile_cont), as a server-side prepared statement (prepareThreshold=1)
 *  with a parameter, run several times, must equal the expected median.
 *  Usage: java -cp postgresql.jar JdbcCoordinator.java JDBC_URL MEDIAN */
public class JdbcCoordinator {
    public static void main(String[] args) throws Exception {
        double want = Double.parseDouble(args[1]);
        try (Connection c = DriverManager.getConnection(args[0]);
             PreparedStatement q = c.prepareStatement(
                 "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY total) FROM orders WHERE status = ?")) {
            for (int round = 0; round < 3; round++) {
                q.setString(1, "coord17");
                try (ResultSet rs = q.executeQuery()) {
                    if (!rs.next() || rs.getDouble(1) != want) {
                        throw new AssertionError("round " + round + ": got " + rs.getDouble(1) + ", want " + want);
                    }
                }
            }
        }
        System.out.println("OK");
    }
}
