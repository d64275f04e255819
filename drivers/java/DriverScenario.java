// The driver scenario with pgJDBC (one thread and connection per scenario client).
//
// prepareThreshold=-1 makes every PreparedStatement a named server-side statement from its first
// execution and asks for binary results (binaryTransfer). Connects to PGHOST, PGPORT, PGUSER,
// PGDATABASE from the environment. Exits 1 with FAIL lines on any mismatch, 0 with a one-line
// summary otherwise. See docs/drivers.md.

import java.io.IOException;
import java.io.StringReader;
import java.io.StringWriter;
import java.io.UncheckedIOException;
import java.math.BigDecimal;
import java.math.BigInteger;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.sql.Array;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.sql.Types;
import java.time.Instant;
import java.time.LocalDate;
import java.time.OffsetDateTime;
import java.time.ZoneOffset;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.HashSet;
import java.util.List;
import java.util.Objects;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Collectors;
import org.postgresql.PGConnection;
import org.postgresql.PGNotification;
import org.postgresql.copy.CopyManager;

public class DriverScenario {
    static final int CLIENTS = Integer.parseInt(env("DRIVER_CLIENTS", "50"));
    static final int ROUNDS = Integer.parseInt(env("DRIVER_ROUNDS", "30"));
    static final String LISTEN_CHANNEL = "drivers_events";
    static final int COPY_ROWS = 200;

    static final String ROUNDTRIP_SQL = statement("roundtrip");
    static final String SESSION_SQL = statement("session");
    static final String DIVIDE_SQL = "SELECT 10 / ?::int4";

    /**
     * A statement every driver runs, from drivers/sql/NAME.sql (comment lines left out), found
     * through DRIVER_SQL_DIR or from the repository's root or drivers/java.
     */
    static String statement(String name) {
        List<Path> dirs = new ArrayList<>();
        if (System.getenv("DRIVER_SQL_DIR") != null) dirs.add(Path.of(System.getenv("DRIVER_SQL_DIR")));
        dirs.add(Path.of("drivers", "sql"));
        dirs.add(Path.of("..", "sql"));
        for (Path dir : dirs) {
            Path file = dir.resolve(name + ".sql");
            if (Files.exists(file)) {
                try {
                    return Files.readAllLines(file, StandardCharsets.UTF_8).stream()
                            .filter(line -> !line.startsWith("--"))
                            .collect(Collectors.joining("\n"))
                            .strip();
                } catch (IOException e) {
                    throw new UncheckedIOException(e);
                }
            }
        }
        throw new IllegalStateException("no " + name + ".sql in " + dirs + " (set DRIVER_SQL_DIR)");
    }

    /**
     * Calls Statement.cancel() 200 ms after it starts and every 250 ms after that until stopped: a
     * cancel that reaches the server before the query does is ignored (by PostgreSQL too), and on
     * a loaded machine the query may not have been sent 200 ms later. stop() waits for a cancel in
     * flight, so none can reach the statements that follow.
     */
    static final class Canceller {
        private final Thread thread;
        private volatile boolean stopped;
        private volatile boolean sent;

        Canceller(Statement st) {
            thread = new Thread(() -> {
                long pause = 200;
                while (!stopped) {
                    try {
                        Thread.sleep(pause);
                    } catch (InterruptedException e) {
                        return;
                    }
                    pause = 250;
                    if (stopped) return;
                    sent = true;
                    try {
                        st.cancel();
                    } catch (SQLException e) {
                        System.err.println("Statement.cancel: " + e.getMessage());
                    }
                }
            }, "canceller");
            thread.start();
        }

        boolean sent() {
            return sent;
        }

        void stop() throws InterruptedException {
            stopped = true;
            thread.interrupt();
            thread.join();
        }
    }

    static String env(String name, String fallback) {
        String v = System.getenv(name);
        return v == null || v.isEmpty() ? fallback : v;
    }

    static final class Mismatch extends Exception {
        private static final long serialVersionUID = 1L;

        Mismatch(String message) {
            super(message);
        }
    }

    static void check(int c, String what, Object expected, Object got) throws Mismatch {
        boolean same = expected instanceof Object[] && got instanceof Object[]
                ? Arrays.deepEquals((Object[]) expected, (Object[]) got)
                : expected instanceof byte[] && got instanceof byte[]
                        ? Arrays.equals((byte[]) expected, (byte[]) got)
                        : Objects.equals(expected, got);
        if (!same) {
            throw new Mismatch("client " + c + ": " + what + ": expected " + show(expected) + ", got " + show(got));
        }
    }

    static String show(Object v) {
        if (v instanceof Object[]) return Arrays.deepToString((Object[]) v);
        if (v instanceof byte[]) return hex((byte[]) v);
        return v instanceof String ? "'" + v + "'" : String.valueOf(v);
    }

    static String hex(byte[] bytes) {
        StringBuilder sb = new StringBuilder();
        for (byte b : bytes) sb.append(String.format("%02x", b & 0xff));
        return sb.toString();
    }

    /** An IANA zone for the client (the second one after its mid-run SET) and its UTC offset. */
    static Object[] zone(int c, boolean second) {
        int hours = ((c + (second ? 11 : 0)) % 27) - 12;
        if (hours == 0) return new Object[] {"Etc/GMT", 0};
        // POSIX sign convention: Etc/GMT-5 is five hours EAST of UTC.
        return new Object[] {"Etc/GMT" + (hours > 0 ? "-" : "+") + Math.abs(hours), hours * 3600};
    }

    /** The parameters of round r of client c, and what the server must say about them. */
    static final class Values {
        final int i4;
        final long i8;
        final BigDecimal num;
        final String txt;
        final boolean flag;
        final long tsMs;
        final OffsetDateTime ts;
        final int days;
        final LocalDate day;
        final java.util.UUID uuid;
        final String doc;
        final byte[] raw;
        final Integer[] ints;
        final String[] texts;
        final String digest;

        Values(int c, int r) {
            i4 = c * 1000 + r;
            i8 = 4_000_000_000_000_000_000L + c * 1000L + r;
            BigInteger whole = BigInteger.valueOf(1_000_000_000_000L).multiply(BigInteger.valueOf(c + 1)).add(BigInteger.valueOf(r));
            num = new BigDecimal(whole + ".25");
            txt = "c" + c + " r" + r + " 'single' \"double\" \\back ü ✓";
            flag = (c + r) % 2 == 0;
            tsMs = 1_700_000_000_000L + c * 86_400_123L + r * 1_001L;
            ts = OffsetDateTime.ofInstant(Instant.ofEpochMilli(tsMs), ZoneOffset.UTC);
            days = c * 10 + r;
            day = LocalDate.of(2000, 1, 1).plusDays(days);
            String uuidText = String.format("%08x-%04x-4000-8000-%012x", c, r, (long) c * r);
            uuid = java.util.UUID.fromString(uuidText);
            doc = "{\"k\": \"c" + c + "-r" + r + "\", \"n\": [" + c + ", " + r + ", null], \"nested\": {\"t\": true}}";
            raw = new byte[] {(byte) c, (byte) r, 0, (byte) 255, 39, 92, 10};
            ints = new Integer[] {c, r, -1, 2147483647};
            texts = new String[] {"alpha", "b c", "q\"uote", "back\\slash", "", "NULL", "c" + c + "r" + r, "ü"};
            List<String> parts = new ArrayList<>();
            parts.add(String.valueOf(i4 + 1));
            parts.add(BigInteger.valueOf(i8).multiply(BigInteger.TWO).toString());
            parts.add(whole.multiply(BigInteger.valueOf(4)).add(BigInteger.ONE).toString());
            parts.add(String.valueOf(txt.codePointCount(0, txt.length())));
            parts.add(flag ? "f" : "t");
            parts.add(String.valueOf(tsMs));
            parts.add(String.valueOf(days));
            parts.add(uuidText);
            parts.add("c" + c + "-r" + r);
            parts.add(hex(raw));
            parts.add(c + "," + r + ",-1,2147483647");
            parts.add(String.join(",", texts));
            parts.add("t");
            digest = String.join("|", parts);
        }
    }

    static String copyLabel(int c, int i) {
        return i % 10 == 0 ? null : "c" + c + "-r" + i + "\tü";
    }

    /** The rows in COPY text format: what goes in, and what must come back out. */
    static String copyText(int c) {
        StringBuilder sb = new StringBuilder();
        for (int i = 1; i <= COPY_ROWS; i++) {
            String label = copyLabel(c, i);
            sb.append(i).append('\t');
            sb.append(label == null ? "\\N" : label.replace("\\", "\\\\").replace("\t", "\\t"));
            sb.append('\n');
        }
        return sb.toString();
    }

    /** pgJDBC knows only `?`: each $n of the shared SQL becomes a `?`, bound to parameter n. */
    static final class Positional {
        final String sql;
        final int[] order;

        Positional(String dollarSql) {
            Matcher m = Pattern.compile("\\$(\\d+)").matcher(dollarSql);
            List<Integer> numbers = new ArrayList<>();
            StringBuilder sb = new StringBuilder();
            while (m.find()) {
                numbers.add(Integer.parseInt(m.group(1)));
                m.appendReplacement(sb, "?");
            }
            m.appendTail(sb);
            sql = sb.toString();
            order = numbers.stream().mapToInt(Integer::intValue).toArray();
        }
    }

    static final Positional ROUNDTRIP = new Positional(ROUNDTRIP_SQL);

    static final class Client {
        final int c;
        final CountDownLatch listenerReady;
        Object[] zone;
        Connection conn;
        PreparedStatement roundtrip;
        PreparedStatement session;
        PreparedStatement divide;

        Client(int c, CountDownLatch listenerReady) {
            this.c = c;
            this.listenerReady = listenerReady;
            this.zone = zone(c, false);
        }

        void run() throws Exception {
            String url = "jdbc:postgresql://" + env("PGHOST", "127.0.0.1") + ":" + env("PGPORT", "5432") + "/"
                    + env("PGDATABASE", "postgres") + "?prepareThreshold=-1&binaryTransfer=true"
                    + "&ApplicationName=drivers-jdbc-" + c;
            java.util.Properties props = new java.util.Properties();
            props.setProperty("user", env("PGUSER", "postgres"));
            String password = System.getenv("PGPASSWORD");
            if (password != null) props.setProperty("password", password);
            try (Connection conn = DriverManager.getConnection(url, props)) {
                this.conn = conn;
                roundtrip = conn.prepareStatement(ROUNDTRIP.sql);
                session = conn.prepareStatement(SESSION_SQL);
                divide = conn.prepareStatement(DIVIDE_SQL);
                execute("SET search_path TO client_" + c + ", public");
                setZone(false);
                if (c == 0) {
                    execute("LISTEN " + LISTEN_CHANNEL);
                    listenerReady.countDown();
                } else if (!listenerReady.await(60, TimeUnit.SECONDS)) {
                    throw new Mismatch("client " + c + ": the listening client never got ready");
                }
                for (int r = 0; r < ROUNDS; r++) round(r);
                if (c == 0) {
                    awaitNotifications();
                } else {
                    execute("NOTIFY " + LISTEN_CHANNEL + ", 'client-" + c + "'");
                }
            }
        }

        void execute(String sql) throws SQLException {
            try (Statement st = conn.createStatement()) {
                st.execute(sql);
            }
        }

        void setZone(boolean second) throws SQLException {
            zone = zone(c, second);
            execute("SET TimeZone TO '" + zone[0] + "'");
        }

        void round(int r) throws Exception {
            if (r == ROUNDS / 2) setZone(true);
            if (r == 7) {
                errorAndRecovery();
            } else if (r == 13) {
                cancel();
            } else if (r % 10 == 5) {
                copy();
            }
            if (r % 3 == 2) {
                statements(r, "round " + r + " (autocommit)");
            } else {
                conn.setAutoCommit(false);
                statements(r, "round " + r);
                conn.commit();
                conn.setAutoCommit(true);
            }
        }

        /**
         * Both statements of a round, in an order that differs between clients: drivers name their
         * statements in the order of first use, so one name stands for different SQL on different
         * clients.
         */
        void statements(int r, String when) throws Exception {
            if ((c + r) % 2 == 1) {
                checkSession(when);
                roundtrip(r);
            } else {
                roundtrip(r);
                checkSession(when);
            }
        }

        void roundtrip(int r) throws Exception {
            Values v = new Values(c, r);
            Array ints = conn.createArrayOf("int4", v.ints);
            Array texts = conn.createArrayOf("text", v.texts);
            for (int k = 0; k < ROUNDTRIP.order.length; k++) {
                int i = k + 1;
                switch (ROUNDTRIP.order[k]) {
                    case 1: roundtrip.setInt(i, v.i4); break;
                    case 2: roundtrip.setLong(i, v.i8); break;
                    case 3: roundtrip.setBigDecimal(i, v.num); break;
                    case 4: roundtrip.setString(i, v.txt); break;
                    case 5: roundtrip.setBoolean(i, v.flag); break;
                    case 6: roundtrip.setObject(i, v.ts); break;
                    case 7: roundtrip.setObject(i, v.day); break;
                    case 8: roundtrip.setObject(i, v.uuid); break;
                    case 9: roundtrip.setObject(i, v.doc, Types.OTHER); break;
                    case 10: roundtrip.setBytes(i, v.raw); break;
                    case 11: roundtrip.setArray(i, ints); break;
                    case 12: roundtrip.setArray(i, texts); break;
                    case 13: roundtrip.setNull(i, Types.VARCHAR); break;
                    default: throw new IllegalStateException("no parameter " + ROUNDTRIP.order[k]);
                }
            }
            String what = "round " + r;
            try (ResultSet rs = roundtrip.executeQuery()) {
                rs.next();
                check(c, what + " digest", v.digest, rs.getString("digest"));
                check(c, what + " i4", v.i4, rs.getInt("i4"));
                check(c, what + " i8", v.i8, rs.getLong("i8"));
                check(c, what + " num", v.num, rs.getBigDecimal("num"));
                check(c, what + " txt", v.txt, rs.getString("txt"));
                check(c, what + " flag", v.flag, rs.getBoolean("flag"));
                check(c, what + " ts", v.ts.toInstant(), rs.getObject("ts", OffsetDateTime.class).toInstant());
                check(c, what + " day", v.day, rs.getObject("day", LocalDate.class));
                check(c, what + " id", v.uuid, rs.getObject("id", java.util.UUID.class));
                check(c, what + " doc", v.doc, rs.getString("doc"));
                check(c, what + " raw", v.raw, rs.getBytes("raw"));
                check(c, what + " ints", v.ints, rs.getArray("ints").getArray());
                check(c, what + " texts", v.texts, rs.getArray("texts").getArray());
                check(c, what + " nothing", null, rs.getString("nothing"));
            }
        }

        void checkSession(String when) throws Exception {
            try (ResultSet rs = session.executeQuery()) {
                rs.next();
                check(c, when + ": search_path", "client_" + c + ", public", rs.getString("search_path"));
                check(c, when + ": TimeZone", zone[0], rs.getString("time_zone"));
                check(c, when + ": UTC offset of now()", zone[1], rs.getInt("utc_offset"));
                check(c, when + ": owner of the table `mine`", c, rs.getInt("owner"));
            }
            String reported = conn.unwrap(PGConnection.class).getParameterStatus("TimeZone");
            check(c, when + ": TimeZone reported by ParameterStatus", zone[0], reported);
        }

        SQLException expectError(String state, String what, SqlAction action) throws Exception {
            try {
                action.run();
            } catch (SQLException e) {
                if (state.equals(e.getSQLState())) return e;
                throw new Mismatch("client " + c + ": " + what + ": expected SQLSTATE " + state + ", got "
                        + e.getSQLState() + ": " + e.getMessage());
            }
            throw new Mismatch("client " + c + ": " + what + " did not fail");
        }

        void errorAndRecovery() throws Exception {
            conn.setAutoCommit(false);
            divide.setInt(1, 0);
            expectError("22012", "10 / 0", () -> divide.executeQuery().close());
            expectError("25P02", "a statement after an error inside BEGIN", () -> execute("SELECT 1"));
            conn.rollback();
            conn.setAutoCommit(true);
            divide.setInt(1, 2);
            try (ResultSet rs = divide.executeQuery()) {
                rs.next();
                check(c, "10 / 2 after ROLLBACK", 5, rs.getInt(1));
            }
            checkSession("after ROLLBACK");
        }

        void cancel() throws Exception {
            conn.setAutoCommit(false);
            // A cancel that never arrives ends here after 10 s instead of 30, with another message.
            execute("SET LOCAL statement_timeout = '10s'");
            try (Statement st = conn.createStatement()) {
                long started = System.nanoTime();
                Canceller canceller = new Canceller(st);
                SQLException e;
                try {
                    e = expectError("57014", "pg_sleep(30) cancelled after 200 ms", () -> st.execute("SELECT pg_sleep(30)"));
                } finally {
                    canceller.stop();
                }
                double elapsed = (System.nanoTime() - started) / 1e9;
                if (!canceller.sent()) {
                    throw new Mismatch("client " + c + ": pg_sleep(30) was cancelled before its own cancel request was sent: a cancel meant for another client's query reached this client's server");
                }
                if (!e.getMessage().contains("user request") || elapsed > 5) {
                    throw new Mismatch(String.format("client %d: cancel: after %.1fs got %s", c, elapsed, e.getMessage()));
                }
            }
            conn.rollback();
            conn.setAutoCommit(true);
            checkSession("after a cancelled query");
        }

        void copy() throws Exception {
            CopyManager copy = conn.unwrap(PGConnection.class).getCopyAPI();
            String text = copyText(c);
            conn.setAutoCommit(false);
            execute("DELETE FROM client_" + c + ".items");
            copy.copyIn("COPY client_" + c + ".items (id, label) FROM STDIN", new StringReader(text));
            StringWriter out = new StringWriter();
            copy.copyOut("COPY (SELECT id, label FROM client_" + c + ".items ORDER BY id) TO STDOUT", out);
            conn.commit();
            conn.setAutoCommit(true);
            check(c, "COPY out of the rows copied in", text, out.toString());
        }

        void awaitNotifications() throws Exception {
            Set<String> expected = new HashSet<>();
            for (int k = 1; k < CLIENTS; k++) expected.add("client-" + k);
            Set<String> seen = new HashSet<>();
            long deadline = System.currentTimeMillis() + 30_000;
            PGConnection pg = conn.unwrap(PGConnection.class);
            while (!seen.equals(expected) && System.currentTimeMillis() < deadline) {
                int wait = (int) Math.max(1, deadline - System.currentTimeMillis());
                PGNotification[] batch = pg.getNotifications(wait);
                if (batch == null) continue;
                for (PGNotification n : batch) {
                    check(c, "notification channel", LISTEN_CHANNEL, n.getName());
                    if (!seen.add(n.getParameter())) {
                        throw new Mismatch("client 0: notification '" + n.getParameter() + "' delivered twice");
                    }
                }
            }
            if (!seen.equals(expected)) {
                Set<Integer> missing = new TreeSet<>();
                for (String p : expected) if (!seen.contains(p)) missing.add(Integer.parseInt(p.substring(7)));
                throw new Mismatch("client 0: no NOTIFY received from clients " + missing + " within 30 s");
            }
        }
    }

    interface SqlAction {
        void run() throws Exception;
    }

    public static void main(String[] args) throws Exception {
        long started = System.nanoTime();
        CountDownLatch listenerReady = new CountDownLatch(1);
        List<String> failures = Collections.synchronizedList(new ArrayList<>());
        List<Thread> threads = new ArrayList<>();
        for (int c = 0; c < CLIENTS; c++) {
            final int client = c;
            Thread t = new Thread(() -> {
                try {
                    new Client(client, listenerReady).run();
                } catch (Mismatch e) {
                    failures.add(e.getMessage());
                } catch (SQLException e) {
                    failures.add("client " + client + ": SQLSTATE " + e.getSQLState() + ": " + e.getMessage());
                } catch (Exception e) {
                    failures.add("client " + client + ": " + e);
                } finally {
                    if (client == 0) listenerReady.countDown();
                }
            }, "client-" + c);
            t.start();
            threads.add(t);
        }
        for (Thread t : threads) t.join(150_000);
        String version = org.postgresql.util.DriverInfo.DRIVER_VERSION;
        if (threads.stream().anyMatch(Thread::isAlive)) failures.add("the scenario did not finish within 150 s");
        if (!failures.isEmpty()) {
            for (String f : failures.subList(0, Math.min(10, failures.size()))) System.out.println("FAIL: " + f);
            System.err.println("FAIL: pgJDBC " + version + ": " + failures.size() + " of " + CLIENTS + " clients failed");
            System.exit(1);
        }
        System.out.printf("pgJDBC %s: OK: %d clients x %d rounds of named prepared statements (binary results), "
                + "COPY in/out, error recovery, cancel, per-client search_path/TimeZone, %d notifications in %.1fs%n",
                version, CLIENTS, ROUNDS, CLIENTS - 1, (System.nanoTime() - started) / 1e9);
        System.exit(0);
    }
}
