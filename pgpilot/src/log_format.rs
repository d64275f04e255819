//! The text log's lines, as tracing-subscriber's full format writes them without colour
//! ("2024-05-01T12:34:56.123456Z  INFO target: message key=value ..."), written directly.
//! pgpilot logs every login and disconnection, as PgBouncer does; through the general formatter
//! (styles that paint nothing, a formatted timestamp, a visitor per field) those two lines cost
//! a quarter of the proxy's own work for a client that connects, runs a statement and leaves.
//! The coloured format for a terminal stays tracing-subscriber's own.

use std::fmt;
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

pub struct PlainLine;

impl<S, N> FormatEvent<S, N> for PlainLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let stamp = pgpilot_gateway::timefmt::rfc3339_us(SystemTime::now());
        writer.write_str(std::str::from_utf8(&stamp).map_err(|_| fmt::Error)?)?;
        writer.write_str(level_column(event.metadata().level()))?;
        writer.write_str(event.metadata().target())?;
        writer.write_str(": ")?;
        let mut fields = Fields { writer: &mut writer, first: true, result: Ok(()) };
        event.record(&mut fields);
        fields.result?;
        writer.write_char('\n')
    }
}

/// The level between spaces, right-aligned in five columns.
fn level_column(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => " ERROR ",
        Level::WARN => "  WARN ",
        Level::INFO => "  INFO ",
        Level::DEBUG => " DEBUG ",
        Level::TRACE => " TRACE ",
    }
}

/// The message, then `name=value` for each other field, separated by spaces; strings quoted.
struct Fields<'a, 'w> {
    writer: &'a mut Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    /// Starts a field; false when it is not written (the `log` crate's own metadata).
    fn begin(&mut self, field: &Field) -> bool {
        let name = field.name();
        if self.result.is_err() || name.starts_with("log.") {
            return false;
        }
        if !std::mem::take(&mut self.first) {
            self.result = self.writer.write_char(' ');
        }
        if name != "message" {
            let name = name.strip_prefix("r#").unwrap_or(name);
            self.result = self
                .result
                .and_then(|()| self.writer.write_str(name))
                .and_then(|()| self.writer.write_char('='));
        }
        self.result.is_ok()
    }
}

impl Visit for Fields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.begin(field) {
            self.result = if field.name() == "message" {
                self.writer.write_str(value)
            } else {
                write!(self.writer, "{value:?}")
            };
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.begin(field) {
            self.result = write!(self.writer, "{value:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn lines(format: bool, log: impl FnOnce()) -> String {
        let out = Captured::default();
        let writer = out.clone();
        let builder = tracing_subscriber::fmt().with_ansi(false).with_writer(move || writer.clone());
        if format {
            tracing::subscriber::with_default(builder.event_format(PlainLine).finish(), log);
        } else {
            tracing::subscriber::with_default(builder.finish(), log);
        }
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        // Timestamps differ between the two runs.
        text.lines().map(|l| l.split_once(' ').map_or(l, |(_, rest)| rest)).collect::<Vec<_>>().join("\n")
    }

    #[test]
    fn lines_read_as_the_full_format_writes_them() {
        let events = || {
            let addr = "127.0.0.1:5000".to_string();
            tracing::info!(client = %addr, user = "alice", tls = false, n = 3, "client disconnected");
            tracing::warn!(reason = "a \"quoted\" reason", "server closed");
            tracing::error!(r#type = "x", "odd name");
            tracing::debug!(only = 1);
        };
        assert_eq!(lines(true, events), lines(false, events));
        assert!(lines(true, events).contains(r#" INFO pgpilot::log_format::tests: client disconnected client=127.0.0.1:5000 user="alice" tls=false n=3"#));
    }

    #[test]
    fn the_timestamp_leads() {
        let out = Captured::default();
        let writer = out.clone();
        let sub =
            tracing_subscriber::fmt().with_writer(move || writer.clone()).event_format(PlainLine).finish();
        tracing::subscriber::with_default(sub, || tracing::info!("hello"));
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let (stamp, rest) = text.split_once(' ').unwrap();
        assert_eq!(stamp.len(), 27, "{text}");
        assert!(stamp.starts_with("20") && stamp.ends_with('Z'), "{text}");
        assert_eq!(rest, " INFO pgpilot::log_format::tests: hello\n");
    }
}
