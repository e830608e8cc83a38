import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.Statement;

// JDBC with a fetch size inside a transaction over cross-shard queries
// (the driver then reads the portal with Execute(fetchSize) across Syncs):
// prints the rows; the test compares the output through shardproxy with the
// output against one Postgres. Usage: java JdbcCursor.java URL
public class JdbcCursor {
    public static void main(String[] args) throws Exception {
        try (Connection c = DriverManager.getConnection(args[0])) {
            c.setAutoCommit(false);
            try (PreparedStatement ps = c.prepareStatement(
                    "SELECT id, total, status FROM orders WHERE id BETWEEN ? AND ? ORDER BY status, total DESC, id")) {
                ps.setFetchSize(7);
                ps.setLong(1, 960000);
                ps.setLong(2, 960299);
                StringBuilder sb = new StringBuilder();
                int n = 0;
                try (ResultSet rs = ps.executeQuery()) {
                    while (rs.next()) {
                        n++;
                        sb.append(rs.getLong(1)).append(':').append(rs.getString(2)).append(':').append(rs.getString(3)).append(',');
                        if (n == 20) {
                            // A keyed statement between two fetches.
                            try (PreparedStatement k = c.prepareStatement("SELECT id FROM orders WHERE user_id = ?")) {
                                k.setLong(1, 960013);
                                try (ResultSet kr = k.executeQuery()) {
                                    kr.next();
                                    System.out.println("keyed " + kr.getLong(1));
                                }
                            }
                        }
                    }
                }
                System.out.println("rows " + n + " " + sb);
            }
            try (Statement st = c.createStatement()) {
                st.setFetchSize(2);
                try (ResultSet rs = st.executeQuery(
                        "SELECT status, count(*), max(total) FROM orders WHERE id BETWEEN 960000 AND 960299 GROUP BY status ORDER BY 2 DESC, 1")) {
                    while (rs.next()) {
                        System.out.println("group " + rs.getString(1) + " " + rs.getLong(2) + " " + rs.getString(3));
                    }
                }
            }
            c.commit();
        }
        System.out.println("OK");
    }
}
