//! The driver scenario with tokio-postgres, in process: one task and connection per client.
//!
//! tokio-postgres prepares every statement under a name (`Client::prepare`), and the statements
//! are reused across the client's transactions; results come back in binary.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::{pin_mut, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tokio_postgres::{AsyncMessage, Client, Config, GenericClient, NoTls, Notification, Statement};

use crate::values::*;

type Outcome = Result<(), String>;

/// Runs the scenario with `clients` clients of `rounds` rounds against host:port; Err lists the
/// first failures.
pub async fn run(host: &str, port: u16, clients: usize, rounds: usize) -> Result<String, String> {
    let started = Instant::now();
    let (ready_tx, ready_rx) = watch::channel(false);
    let ready_tx = Arc::new(ready_tx);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut config = Config::new();
        config.host(host).port(port).user("postgres").dbname("postgres");
        config.application_name(format!("drivers-tokio-postgres-{c}"));
        let listener = Listener { ready_tx: ready_tx.clone(), ready_rx: ready_rx.clone() };
        tasks.push(tokio::spawn(async move {
            let outcome = match ScenarioClient::connect(c, clients, rounds, &config).await {
                Ok(client) => client.run(&listener).await,
                Err(e) => Err(e),
            };
            if c == 0 {
                // A listener that failed must not keep the others waiting.
                let _ = listener.ready_tx.send(true);
            }
            outcome
        }));
    }
    let mut failures = Vec::new();
    for task in tasks {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(e),
            Err(e) => failures.push(format!("a client task panicked: {e}")),
        }
    }
    if !failures.is_empty() {
        let shown: Vec<String> = failures.iter().take(10).map(|f| format!("FAIL: {f}")).collect();
        return Err(format!(
            "{}\ntokio-postgres: {} of {clients} clients failed",
            shown.join("\n"),
            failures.len()
        ));
    }
    Ok(format!(
        "tokio-postgres: OK: {clients} clients x {rounds} rounds of named prepared statements (binary results), \
         COPY in (binary)/out, error recovery, cancel, per-client search_path/TimeZone, {} notifications in {:.1}s",
        clients - 1,
        started.elapsed().as_secs_f64()
    ))
}

/// Client 0 LISTENs; the others start once it does, so no NOTIFY can precede the LISTEN.
struct Listener {
    ready_tx: Arc<watch::Sender<bool>>,
    ready_rx: watch::Receiver<bool>,
}

struct Statements {
    roundtrip: Statement,
    session: Statement,
    divide: Statement,
}

/// What a client checks its results against; apart from its connection so that a transaction
/// (which borrows the connection) can be checked with it.
struct Expectations {
    c: usize,
    statements: Statements,
    zone: (String, i32),
}

struct ScenarioClient {
    c: usize,
    clients: usize,
    rounds: usize,
    client: Client,
    notifications: mpsc::UnboundedReceiver<Notification>,
    expect: Expectations,
}

fn db_error(c: usize, what: &str) -> impl Fn(tokio_postgres::Error) -> String + '_ {
    move |e| match e.as_db_error() {
        Some(db) => format!("client {c}: {what}: SQLSTATE {}: {}", db.code().code(), db.message()),
        None => format!("client {c}: {what}: {e}"),
    }
}

fn check<T: PartialEq + std::fmt::Debug>(c: usize, what: &str, expected: T, got: T) -> Outcome {
    if expected == got {
        Ok(())
    } else {
        Err(format!("client {c}: {what}: expected {expected:?}, got {got:?}"))
    }
}

/// The error's message when it has the SQLSTATE expected.
fn expect_error<T>(
    c: usize,
    what: &str,
    state: &SqlState,
    result: Result<T, tokio_postgres::Error>,
) -> Result<String, String> {
    match result {
        Ok(_) => Err(format!("client {c}: {what} did not fail")),
        Err(e) if e.code() == Some(state) => {
            Ok(e.as_db_error().map(|d| d.message().to_string()).unwrap_or_default())
        }
        Err(e) => Err(format!("client {c}: {what}: expected SQLSTATE {}, got {e}", state.code())),
    }
}

impl Expectations {
    async fn roundtrip(&self, on: &impl GenericClient, r: usize) -> Outcome {
        let (c, v) = (self.c, Values::new(self.c, r));
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 13] = [
            &v.i4,
            &v.i8,
            &v.num,
            &v.txt,
            &v.flag,
            &v.ts,
            &v.day,
            &v.id,
            &v.doc,
            &v.raw,
            &v.ints,
            &v.texts,
            &None::<String>,
        ];
        let row = on
            .query_one(&self.statements.roundtrip, &params)
            .await
            .map_err(db_error(c, &format!("round {r} roundtrip")))?;
        let read = |row: &tokio_postgres::Row| -> Result<(Values, Option<String>), tokio_postgres::Error> {
            let got = Values {
                i4: row.try_get("i4")?,
                i8: row.try_get("i8")?,
                num: row.try_get("num")?,
                txt: row.try_get("txt")?,
                flag: row.try_get("flag")?,
                ts: row.try_get::<_, SystemTime>("ts")?,
                day: row.try_get("day")?,
                id: row.try_get("id")?,
                doc: row.try_get("doc")?,
                raw: row.try_get("raw")?,
                ints: row.try_get("ints")?,
                texts: row.try_get("texts")?,
                digest: row.try_get("digest")?,
            };
            Ok((got, row.try_get("nothing")?))
        };
        let (got, nothing) =
            read(&row).map_err(|e| format!("client {c}: round {r}: reading the row: {e}"))?;
        check(c, &format!("round {r} digest"), &v.digest, &got.digest)?;
        check(c, &format!("round {r} values"), &v, &got)?;
        check(c, &format!("round {r} nothing"), None, nothing)
    }

    /// Both statements of a round, in an order that differs between clients (as in every program).
    async fn statements(&self, on: &impl GenericClient, r: usize, when: &str) -> Outcome {
        if (self.c + r) % 2 == 1 {
            self.session(on, when).await?;
            self.roundtrip(on, r).await
        } else {
            self.roundtrip(on, r).await?;
            self.session(on, when).await
        }
    }

    async fn session(&self, on: &impl GenericClient, when: &str) -> Outcome {
        let c = self.c;
        let row = on.query_one(&self.statements.session, &[]).await.map_err(db_error(c, when))?;
        check(c, &format!("{when}: search_path"), format!("client_{c}, public"), row.get::<_, String>(0))?;
        check(c, &format!("{when}: TimeZone"), self.zone.0.clone(), row.get::<_, String>(1))?;
        check(c, &format!("{when}: UTC offset of now()"), self.zone.1, row.get::<_, i32>(2))?;
        check(c, &format!("{when}: owner of the table `mine`"), c as i32, row.get::<_, i32>(3))
    }
}

impl ScenarioClient {
    async fn connect(
        c: usize,
        clients: usize,
        rounds: usize,
        config: &Config,
    ) -> Result<ScenarioClient, String> {
        let (client, mut connection) = config.connect(NoTls).await.map_err(db_error(c, "connect"))?;
        let (tx, notifications) = mpsc::unbounded_channel();
        // Drive the connection by hand to see its asynchronous messages (notifications).
        tokio::spawn(async move {
            let messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            pin_mut!(messages);
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(n)) => {
                        let _ = tx.send(n);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!("client {c}: connection: {e}");
                        break;
                    }
                }
            }
        });
        // The session is set up first: the statements name a table found through search_path.
        let zone = zone(c, false);
        for sql in [format!("SET search_path TO client_{c}, public"), format!("SET TimeZone TO '{}'", zone.0)]
        {
            client.batch_execute(&sql).await.map_err(db_error(c, &sql))?;
        }
        // tokio-postgres names statements s0, s1, ... in the order prepared: an order that
        // differs between clients makes one name stand for different SQL on different clients.
        let prepare = |sql: String, what: &'static str| {
            let client = &client;
            async move { client.prepare(&sql).await.map_err(db_error(c, what)) }
        };
        let (roundtrip, session) = if c % 2 == 1 {
            let session = prepare(session_sql(), "prepare session").await?;
            (prepare(roundtrip_sql(), "prepare roundtrip").await?, session)
        } else {
            let roundtrip = prepare(roundtrip_sql(), "prepare roundtrip").await?;
            (roundtrip, prepare(session_sql(), "prepare session").await?)
        };
        let divide = prepare(DIVIDE_SQL.to_string(), "prepare divide").await?;
        let statements = Statements { roundtrip, session, divide };
        let expect = Expectations { c, statements, zone };
        Ok(ScenarioClient { c, clients, rounds, client, notifications, expect })
    }

    async fn run(mut self, listener: &Listener) -> Outcome {
        let c = self.c;
        if c == 0 {
            self.execute(&format!("LISTEN {LISTEN_CHANNEL}")).await?;
            let _ = listener.ready_tx.send(true);
        } else {
            let mut ready = listener.ready_rx.clone();
            let waited = tokio::time::timeout(Duration::from_secs(60), ready.wait_for(|r| *r)).await;
            if !matches!(waited, Ok(Ok(_))) {
                return Err(format!("client {c}: the listening client never got ready"));
            }
        }
        for r in 0..self.rounds {
            self.round(r).await?;
        }
        if c == 0 {
            self.await_notifications().await
        } else {
            self.execute(&format!("NOTIFY {LISTEN_CHANNEL}, 'client-{c}'")).await
        }
    }

    async fn execute(&self, sql: &str) -> Outcome {
        self.client.batch_execute(sql).await.map_err(db_error(self.c, sql))
    }

    async fn set_zone(&mut self, second: bool) -> Outcome {
        self.expect.zone = zone(self.c, second);
        self.execute(&format!("SET TimeZone TO '{}'", self.expect.zone.0)).await
    }

    async fn round(&mut self, r: usize) -> Outcome {
        if r == self.rounds / 2 {
            self.set_zone(true).await?;
        }
        match r {
            7 => self.error_and_recovery().await?,
            13 => self.cancel().await?,
            r if r % 10 == 5 => self.copy().await?,
            _ => {}
        }
        if r % 3 == 2 {
            return self.expect.statements(&self.client, r, &format!("round {r} (autocommit)")).await;
        }
        let tx = self.client.transaction().await.map_err(db_error(self.c, "BEGIN"))?;
        self.expect.statements(&tx, r, &format!("round {r}")).await?;
        tx.commit().await.map_err(db_error(self.c, "COMMIT"))
    }

    async fn error_and_recovery(&mut self) -> Outcome {
        let c = self.c;
        self.execute("BEGIN").await?;
        let divided = self.client.query_one(&self.expect.statements.divide, &[&0i32]).await;
        expect_error(c, "10 / 0", &SqlState::DIVISION_BY_ZERO, divided)?;
        let after = self.client.simple_query("SELECT 1").await;
        expect_error(
            c,
            "a statement after an error inside BEGIN",
            &SqlState::IN_FAILED_SQL_TRANSACTION,
            after,
        )?;
        self.execute("ROLLBACK").await?;
        let row = self
            .client
            .query_one(&self.expect.statements.divide, &[&2i32])
            .await
            .map_err(db_error(c, "10 / 2"))?;
        check(c, "10 / 2 after ROLLBACK", 5, row.get::<_, i32>(0))?;
        self.expect.session(&self.client, "after ROLLBACK").await
    }

    /// Cancels 200 ms after the query starts and every 250 ms after that until it ends: a cancel
    /// that reaches the server before the query does is ignored (by PostgreSQL too), and on a
    /// loaded machine the query may not have been sent 200 ms later. tokio-postgres's
    /// cancel_query returns once its request is written, not once the server acted on it (libpq
    /// waits): one sent as the query ended may still reach the ROLLBACK that follows, directly
    /// against PostgreSQL too, and that ROLLBACK is sent again.
    async fn cancel(&mut self) -> Outcome {
        let c = self.c;
        self.execute("BEGIN").await?;
        // A cancel that never arrives ends here after 10 s instead of 30, with another message.
        self.execute("SET LOCAL statement_timeout = '10s'").await?;
        let token = self.client.cancel_token();
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let sent = Arc::new(AtomicBool::new(false));
        let sent_by_canceller = sent.clone();
        let canceller = tokio::spawn(async move {
            let mut pause = Duration::from_millis(200);
            loop {
                if tokio::time::timeout(pause, stop_rx.wait_for(|s| *s)).await.is_ok() {
                    return;
                }
                pause = Duration::from_millis(250);
                sent_by_canceller.store(true, Ordering::SeqCst);
                if let Err(e) = token.cancel_query(NoTls).await {
                    eprintln!("client {c}: cancel_query: {e}");
                }
            }
        });
        let started = Instant::now();
        let slept = self.client.simple_query("SELECT pg_sleep(30)").await;
        let _ = stop_tx.send(true);
        let _ = canceller.await;
        let elapsed = started.elapsed();
        let message =
            expect_error(c, "pg_sleep(30) cancelled after 200 ms", &SqlState::QUERY_CANCELED, slept)?;
        if !sent.load(Ordering::SeqCst) {
            return Err(format!("client {c}: pg_sleep(30) was cancelled before its own cancel request was sent: a cancel meant for another client's query reached this client's server"));
        }
        if !message.contains("user request") || elapsed > Duration::from_secs(5) {
            return Err(format!("client {c}: cancel: after {:.1}s got {message:?}", elapsed.as_secs_f64()));
        }
        match self.client.batch_execute("ROLLBACK").await {
            Err(e) if e.code() == Some(&SqlState::QUERY_CANCELED) => self.execute("ROLLBACK").await?,
            other => other.map_err(db_error(c, "ROLLBACK"))?,
        }
        self.expect.session(&self.client, "after a cancelled query").await
    }

    async fn copy(&mut self) -> Outcome {
        let c = self.c;
        let tx = self.client.transaction().await.map_err(db_error(c, "BEGIN"))?;
        tx.batch_execute(&format!("DELETE FROM client_{c}.items")).await.map_err(db_error(c, "DELETE"))?;
        // Binary COPY in, text COPY out.
        let sink = tx
            .copy_in(&format!("COPY client_{c}.items (id, label) FROM STDIN (FORMAT binary)"))
            .await
            .map_err(db_error(c, "COPY in"))?;
        let writer = BinaryCopyInWriter::new(sink, &[Type::INT4, Type::TEXT]);
        pin_mut!(writer);
        for i in 1..=COPY_ROWS {
            let label = copy_label(c, i);
            writer.as_mut().write(&[&i, &label]).await.map_err(db_error(c, "COPY in row"))?;
        }
        let copied = writer.finish().await.map_err(db_error(c, "COPY in"))?;
        check(c, "rows copied in", COPY_ROWS as u64, copied)?;
        let stream = tx
            .copy_out(&format!("COPY (SELECT id, label FROM client_{c}.items ORDER BY id) TO STDOUT"))
            .await
            .map_err(db_error(c, "COPY out"))?;
        pin_mut!(stream);
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk.map_err(db_error(c, "COPY out"))?);
        }
        tx.commit().await.map_err(db_error(c, "COMMIT"))?;
        check(
            c,
            "COPY out of the rows copied in",
            copy_out_expected(c),
            String::from_utf8_lossy(&out).into_owned(),
        )
    }

    async fn await_notifications(&mut self) -> Outcome {
        let expected: BTreeSet<String> = (1..self.clients).map(|k| format!("client-{k}")).collect();
        let mut seen = BTreeSet::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while seen != expected {
            match tokio::time::timeout_at(deadline, self.notifications.recv()).await {
                Ok(Some(n)) => {
                    check(self.c, "notification channel", LISTEN_CHANNEL, n.channel())?;
                    if !seen.insert(n.payload().to_string()) {
                        return Err(format!("client 0: notification {:?} delivered twice", n.payload()));
                    }
                }
                _ => {
                    let missing: Vec<&String> = expected.difference(&seen).collect();
                    return Err(format!("client 0: no NOTIFY received from {missing:?} within 30 s"));
                }
            }
        }
        Ok(())
    }
}
