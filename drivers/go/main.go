// The driver scenario with pgx (one goroutine and connection per scenario client).
//
// pgx caches every statement it runs with arguments as a named server-side prepared statement
// (its default statement cache) and asks for binary results. Connects with the PGHOST, PGPORT,
// PGUSER, PGDATABASE environment. Exits 1 with FAIL lines on any mismatch, 0 with a one-line
// summary otherwise. See docs/drivers.md.
//
// Built against Debian's golang-github-jackc-pgx-v4-dev in GOPATH mode (the Go module proxy is
// out of reach here): GO111MODULE=off GOPATH=/usr/share/gocode go build .
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgconn"
	"github.com/jackc/pgtype"
	"github.com/jackc/pgx/v4"
)

const (
	listenChannel = "drivers_events"
	copyRows      = 200
)

var (
	clients = envInt("DRIVER_CLIENTS", 50)
	rounds  = envInt("DRIVER_ROUNDS", 30)
)

const divideSQL = "SELECT 10 / $1::int4"

var (
	roundtripSQL = statement("roundtrip")
	sessionSQL   = statement("session")
)

// statement is a statement every driver runs, from drivers/sql/NAME.sql (comment lines left
// out), found through DRIVER_SQL_DIR or from the repository's root or drivers/go.
func statement(name string) string {
	dirs := []string{filepath.Join("drivers", "sql"), filepath.Join("..", "sql")}
	if dir := os.Getenv("DRIVER_SQL_DIR"); dir != "" {
		dirs = append([]string{dir}, dirs...)
	}
	for _, dir := range dirs {
		text, err := os.ReadFile(filepath.Join(dir, name+".sql"))
		if err != nil {
			continue
		}
		var kept []string
		for _, line := range strings.Split(string(text), "\n") {
			if !strings.HasPrefix(line, "--") {
				kept = append(kept, line)
			}
		}
		return strings.TrimSpace(strings.Join(kept, "\n"))
	}
	fmt.Fprintf(os.Stderr, "FAIL: no %s.sql in %v (set DRIVER_SQL_DIR)\n", name, dirs)
	os.Exit(1)
	return ""
}

func envInt(name string, fallback int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return v
	}
	return fallback
}

type mismatch struct{ msg string }

func (m mismatch) Error() string { return m.msg }

func mismatchf(format string, args ...interface{}) error {
	return mismatch{fmt.Sprintf(format, args...)}
}

func check(c int, what string, expected, got interface{}) error {
	if !reflect.DeepEqual(expected, got) {
		return mismatchf("client %d: %s: expected %#v, got %#v", c, what, expected, got)
	}
	return nil
}

// zone is an IANA zone for the client (the second one after its mid-run SET) and its UTC offset.
func zone(c int, second bool) (string, int32) {
	shift := 0
	if second {
		shift = 11
	}
	hours := (c+shift)%27 - 12
	switch {
	case hours == 0:
		return "Etc/GMT", 0
	case hours > 0: // POSIX sign convention: Etc/GMT-5 is five hours EAST of UTC.
		return fmt.Sprintf("Etc/GMT-%d", hours), int32(hours * 3600)
	default:
		return fmt.Sprintf("Etc/GMT+%d", -hours), int32(hours * 3600)
	}
}

// values are the parameters of round r of client c, and what the server must say about them.
type values struct {
	i4     int32
	i8     int64
	num    string
	numRat *big.Rat
	txt    string
	flag   bool
	ts     time.Time
	day    time.Time
	uuid   string
	doc    string
	raw    []byte
	ints   []int32
	texts  []string
	digest string
}

func newValues(c, r int) values {
	var v values
	v.i4 = int32(c*1000 + r)
	v.i8 = 4_000_000_000_000_000_000 + int64(c*1000+r)
	whole := new(big.Int).Add(new(big.Int).Mul(big.NewInt(1_000_000_000_000), big.NewInt(int64(c+1))), big.NewInt(int64(r)))
	v.num = whole.String() + ".25"
	v.numRat, _ = new(big.Rat).SetString(v.num)
	v.txt = fmt.Sprintf(`c%d r%d 'single' "double" \back ü ✓`, c, r)
	v.flag = (c+r)%2 == 0
	tsMs := int64(1_700_000_000_000) + int64(c)*86_400_123 + int64(r)*1_001
	v.ts = time.UnixMilli(tsMs).UTC()
	days := c*10 + r
	v.day = time.Date(2000, 1, 1+days, 0, 0, 0, 0, time.UTC)
	v.uuid = fmt.Sprintf("%08x-%04x-4000-8000-%012x", c, r, c*r)
	v.doc = fmt.Sprintf(`{"k": "c%d-r%d", "n": [%d, %d, null], "nested": {"t": true}}`, c, r, c, r)
	v.raw = []byte{byte(c), byte(r), 0, 255, 39, 92, 10}
	v.ints = []int32{int32(c), int32(r), -1, 2147483647}
	v.texts = []string{"alpha", "b c", `q"uote`, `back\slash`, "", "NULL", fmt.Sprintf("c%dr%d", c, r), "ü"}
	i8Twice := new(big.Int).Mul(big.NewInt(v.i8), big.NewInt(2))
	numTimesFour := new(big.Int).Add(new(big.Int).Mul(whole, big.NewInt(4)), big.NewInt(1))
	flipped := "t"
	if v.flag {
		flipped = "f"
	}
	ints := make([]string, len(v.ints))
	for i, n := range v.ints {
		ints[i] = strconv.Itoa(int(n))
	}
	v.digest = strings.Join([]string{
		strconv.Itoa(int(v.i4) + 1), i8Twice.String(), numTimesFour.String(),
		strconv.Itoa(utf8.RuneCountInString(v.txt)), flipped, strconv.FormatInt(tsMs, 10),
		strconv.Itoa(days), v.uuid, fmt.Sprintf("c%d-r%d", c, r), fmt.Sprintf("%x", v.raw),
		strings.Join(ints, ","), strings.Join(v.texts, ","), "t",
	}, "|")
	return v
}

func copyLabel(c, i int) *string {
	if i%10 == 0 {
		return nil
	}
	s := fmt.Sprintf("c%d-r%d\tü", c, i)
	return &s
}

// copyOutExpected is COPY ... TO STDOUT text format of the rows copied in.
func copyOutExpected(c int) string {
	var sb strings.Builder
	for i := 1; i <= copyRows; i++ {
		label := copyLabel(c, i)
		shown := `\N`
		if label != nil {
			shown = strings.ReplaceAll(strings.ReplaceAll(*label, `\`, `\\`), "\t", `\t`)
		}
		fmt.Fprintf(&sb, "%d\t%s\n", i, shown)
	}
	return sb.String()
}

// querier is what a connection and a transaction have in common.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...interface{}) pgx.Row
}

type client struct {
	c             int
	conn          *pgx.Conn
	zoneName      string
	zoneOffset    int32
	listenerReady chan struct{}
}

func (cl *client) run(ctx context.Context) error {
	cfg, err := pgx.ParseConfig("")
	if err != nil {
		return err
	}
	cfg.RuntimeParams["application_name"] = fmt.Sprintf("drivers-pgx-%d", cl.c)
	cl.conn, err = pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer cl.conn.Close(context.Background())
	if _, err := cl.conn.Exec(ctx, fmt.Sprintf("SET search_path TO client_%d, public", cl.c)); err != nil {
		return err
	}
	if err := cl.setZone(ctx, false); err != nil {
		return err
	}
	if cl.c == 0 {
		if _, err := cl.conn.Exec(ctx, "LISTEN "+listenChannel); err != nil {
			return err
		}
		close(cl.listenerReady)
	} else {
		select {
		case <-cl.listenerReady:
		case <-time.After(60 * time.Second):
			return mismatchf("client %d: the listening client never got ready", cl.c)
		}
	}
	for r := 0; r < rounds; r++ {
		if err := cl.round(ctx, r); err != nil {
			return err
		}
	}
	if cl.c == 0 {
		return cl.awaitNotifications(ctx)
	}
	_, err = cl.conn.Exec(ctx, fmt.Sprintf("NOTIFY %s, 'client-%d'", listenChannel, cl.c))
	return err
}

func (cl *client) setZone(ctx context.Context, second bool) error {
	cl.zoneName, cl.zoneOffset = zone(cl.c, second)
	_, err := cl.conn.Exec(ctx, fmt.Sprintf("SET TimeZone TO '%s'", cl.zoneName))
	return err
}

func (cl *client) round(ctx context.Context, r int) error {
	if r == rounds/2 {
		if err := cl.setZone(ctx, true); err != nil {
			return err
		}
	}
	var err error
	switch {
	case r == 7:
		err = cl.errorAndRecovery(ctx)
	case r == 13:
		err = cl.cancel(ctx)
	case r%10 == 5:
		err = cl.copy(ctx)
	}
	if err != nil {
		return err
	}
	if r%3 == 2 {
		return cl.statements(ctx, cl.conn, r, fmt.Sprintf("round %d (autocommit)", r))
	}
	tx, err := cl.conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	if err := cl.statements(ctx, tx, r, fmt.Sprintf("round %d", r)); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// statements runs both statements of a round, in an order that differs between clients: drivers
// name their statements in the order of first use, so one name stands for different SQL on
// different clients.
func (cl *client) statements(ctx context.Context, q querier, r int, when string) error {
	first, second := func() error { return cl.roundtrip(ctx, q, r) }, func() error { return cl.checkSession(ctx, q, when) }
	if (cl.c+r)%2 == 1 {
		first, second = second, first
	}
	if err := first(); err != nil {
		return err
	}
	return second()
}

func (cl *client) roundtrip(ctx context.Context, q querier, r int) error {
	c, v := cl.c, newValues(cl.c, r)
	var (
		i4      int32
		i8      int64
		num     pgtype.Numeric
		txt     string
		flag    bool
		ts      time.Time
		day     time.Time
		id      pgtype.UUID
		doc     string
		raw     []byte
		ints    []int32
		texts   []string
		nothing *string
		digest  string
	)
	err := q.QueryRow(ctx, roundtripSQL, v.i4, v.i8, v.num, v.txt, v.flag, v.ts, v.day, v.uuid, v.doc,
		v.raw, v.ints, v.texts, nil).
		Scan(&i4, &i8, &num, &txt, &flag, &ts, &day, &id, &doc, &raw, &ints, &texts, &nothing, &digest)
	if err != nil {
		return fmt.Errorf("round %d: %w", r, err)
	}
	var idText string
	if err := id.AssignTo(&idText); err != nil {
		return err
	}
	what := fmt.Sprintf("round %d", r)
	checks := []struct {
		name          string
		expected, got interface{}
	}{
		{"digest", v.digest, digest}, {"i4", v.i4, i4}, {"i8", v.i8, i8},
		{"num", v.numRat.String(), numericRat(num).String()}, {"txt", v.txt, txt}, {"flag", v.flag, flag},
		{"ts", v.ts.UnixMicro(), ts.UnixMicro()}, {"day", v.day.Format("2006-01-02"), day.Format("2006-01-02")},
		{"id", v.uuid, idText}, {"doc", v.doc, doc}, {"ints", v.ints, ints}, {"texts", v.texts, texts},
		{"nothing", (*string)(nil), nothing},
	}
	for _, ch := range checks {
		if err := check(c, what+" "+ch.name, ch.expected, ch.got); err != nil {
			return err
		}
	}
	if !bytes.Equal(v.raw, raw) {
		return mismatchf("client %d: %s raw: expected %x, got %x", c, what, v.raw, raw)
	}
	return nil
}

func numericRat(n pgtype.Numeric) *big.Rat {
	r := new(big.Rat).SetInt(n.Int)
	scale := new(big.Rat).SetInt(new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(abs(n.Exp))), nil))
	if n.Exp >= 0 {
		return r.Mul(r, scale)
	}
	return r.Quo(r, scale)
}

func abs(n int32) int32 {
	if n < 0 {
		return -n
	}
	return n
}

func (cl *client) checkSession(ctx context.Context, q querier, when string) error {
	var (
		searchPath, timeZone string
		offset, owner        int32
	)
	if err := q.QueryRow(ctx, sessionSQL).Scan(&searchPath, &timeZone, &offset, &owner); err != nil {
		return fmt.Errorf("%s: %w", when, err)
	}
	c := cl.c
	for _, ch := range []struct {
		what          string
		expected, got interface{}
	}{
		{"search_path", fmt.Sprintf("client_%d, public", c), searchPath},
		{"TimeZone", cl.zoneName, timeZone},
		{"UTC offset of now()", cl.zoneOffset, offset},
		{"owner of the table `mine`", int32(c), owner},
		{"TimeZone reported by ParameterStatus", cl.zoneName, cl.conn.PgConn().ParameterStatus("TimeZone")},
	} {
		if err := check(c, when+": "+ch.what, ch.expected, ch.got); err != nil {
			return err
		}
	}
	return nil
}

func expectError(c int, state, what string, err error) error {
	var pgErr *pgconn.PgError
	if err == nil {
		return mismatchf("client %d: %s did not fail", c, what)
	}
	if !errors.As(err, &pgErr) || pgErr.Code != state {
		return mismatchf("client %d: %s: expected SQLSTATE %s, got %v", c, what, state, err)
	}
	return nil
}

func (cl *client) errorAndRecovery(ctx context.Context) error {
	c := cl.c
	tx, err := cl.conn.Begin(ctx)
	if err != nil {
		return err
	}
	var quotient int32
	err = tx.QueryRow(ctx, divideSQL, int32(0)).Scan(&quotient)
	if err := expectError(c, "22012", "10 / 0", err); err != nil {
		return err
	}
	_, err = tx.Exec(ctx, "SELECT 1")
	if err := expectError(c, "25P02", "a statement after an error inside BEGIN", err); err != nil {
		return err
	}
	if err := tx.Rollback(ctx); err != nil {
		return err
	}
	if err := cl.conn.QueryRow(ctx, divideSQL, int32(2)).Scan(&quotient); err != nil {
		return err
	}
	if err := check(c, "10 / 2 after ROLLBACK", int32(5), quotient); err != nil {
		return err
	}
	return cl.checkSession(ctx, cl.conn, "after ROLLBACK")
}

// startCanceller sends a CancelRequest 200 ms after it starts and every 250 ms after that until
// stopped: a cancel that reaches the server before the query does is ignored (by PostgreSQL too),
// and on a loaded machine the query may not have been sent 200 ms later. CancelRequest returns
// once the server has taken the request, so after stop() none can reach the next statement.
// stop reports whether a cancel was sent at all: a query cancelled before that was hit by a
// cancel meant for someone else.
func startCanceller(pg *pgconn.PgConn) (stop func() (sent bool)) {
	done := make(chan struct{})
	var sent int32
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		pause := 200 * time.Millisecond
		for {
			select {
			case <-done:
				return
			case <-time.After(pause):
			}
			pause = 250 * time.Millisecond
			atomic.StoreInt32(&sent, 1)
			if err := pg.CancelRequest(context.Background()); err != nil {
				fmt.Fprintln(os.Stderr, "CancelRequest:", err)
			}
		}
	}()
	return func() bool {
		close(done)
		wg.Wait()
		return atomic.LoadInt32(&sent) == 1
	}
}

func (cl *client) cancel(ctx context.Context) error {
	c := cl.c
	tx, err := cl.conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	// A cancel that never arrives ends here after 10 s instead of 30, with another message.
	if _, err := tx.Exec(ctx, "SET LOCAL statement_timeout = '10s'"); err != nil {
		return err
	}
	started := time.Now()
	stop := startCanceller(cl.conn.PgConn())
	_, err = tx.Exec(ctx, "SELECT pg_sleep(30)")
	sent := stop()
	elapsed := time.Since(started)
	if err := expectError(c, "57014", "pg_sleep(30) cancelled after 200 ms", err); err != nil {
		return err
	}
	if !sent {
		return mismatchf("client %d: pg_sleep(30) was cancelled before its own cancel request was sent: a cancel meant for another client's query reached this client's server", c)
	}
	if !strings.Contains(err.Error(), "user request") || elapsed > 5*time.Second {
		return mismatchf("client %d: cancel: after %.1fs got %v", c, elapsed.Seconds(), err)
	}
	if err := tx.Rollback(ctx); err != nil {
		return err
	}
	return cl.checkSession(ctx, cl.conn, "after a cancelled query")
}

func (cl *client) copy(ctx context.Context) error {
	c := cl.c
	tx, err := cl.conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, fmt.Sprintf("DELETE FROM client_%d.items", c)); err != nil {
		return err
	}
	rows := make([][]interface{}, 0, copyRows)
	for i := 1; i <= copyRows; i++ {
		rows = append(rows, []interface{}{int32(i), copyLabel(c, i)})
	}
	// Binary COPY in, text COPY out.
	n, err := tx.CopyFrom(ctx, pgx.Identifier{fmt.Sprintf("client_%d", c), "items"}, []string{"id", "label"}, pgx.CopyFromRows(rows))
	if err != nil {
		return fmt.Errorf("COPY in: %w", err)
	}
	if err := check(c, "rows copied in", int64(copyRows), n); err != nil {
		return err
	}
	var out bytes.Buffer
	sql := fmt.Sprintf("COPY (SELECT id, label FROM client_%d.items ORDER BY id) TO STDOUT", c)
	if _, err := tx.Conn().PgConn().CopyTo(ctx, &out, sql); err != nil {
		return fmt.Errorf("COPY out: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	return check(c, "COPY out of the rows copied in", copyOutExpected(c), out.String())
}

func (cl *client) awaitNotifications(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	seen := map[string]bool{}
	for len(seen) < clients-1 {
		n, err := cl.conn.WaitForNotification(ctx)
		if err != nil {
			var missing []int
			for k := 1; k < clients; k++ {
				if !seen[fmt.Sprintf("client-%d", k)] {
					missing = append(missing, k)
				}
			}
			sort.Ints(missing)
			return mismatchf("client 0: no NOTIFY received from clients %v within 30 s (%v)", missing, err)
		}
		if err := check(cl.c, "notification channel", listenChannel, n.Channel); err != nil {
			return err
		}
		if seen[n.Payload] {
			return mismatchf("client 0: notification %q delivered twice", n.Payload)
		}
		seen[n.Payload] = true
	}
	return nil
}

func main() {
	started := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	listenerReady := make(chan struct{})
	var (
		mu       sync.Mutex
		failures []string
		wg       sync.WaitGroup
	)
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			cl := &client{c: c, listenerReady: listenerReady}
			err := cl.run(ctx)
			if c == 0 && err != nil {
				select {
				case <-listenerReady:
				default:
					close(listenerReady)
				}
			}
			if err == nil {
				return
			}
			var m mismatch
			msg := err.Error()
			if !errors.As(err, &m) {
				msg = fmt.Sprintf("client %d: %v", c, err)
			}
			mu.Lock()
			failures = append(failures, msg)
			mu.Unlock()
		}(c)
	}
	wg.Wait()
	if len(failures) > 0 {
		for i, f := range failures {
			if i == 10 {
				break
			}
			fmt.Println("FAIL:", f)
		}
		fmt.Fprintf(os.Stderr, "FAIL: pgx v4: %d of %d clients failed\n", len(failures), clients)
		os.Exit(1)
	}
	fmt.Printf("pgx v4: OK: %d clients x %d rounds of named prepared statements (binary results), "+
		"COPY in (binary)/out, error recovery, cancel, per-client search_path/TimeZone, %d notifications in %.1fs\n",
		clients, rounds, clients-1, time.Since(started).Seconds())
}
