//! One log event, one line: a value a client chose (a user or database name with a newline in
//! it, sent before any password) must not start a line of its own that reads like pgpilot's.
//! PostgreSQL and PgBouncer indent such continuation lines; pgpilot's text log escapes them, as
//! its JSON log does.

use std::io::Write;

/// Makes writers to stderr that escape line breaks inside an event.
pub struct OneLinePerEvent;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for OneLinePerEvent {
    type Writer = EscapingWriter;

    fn make_writer(&'a self) -> Self::Writer {
        EscapingWriter
    }
}

pub struct EscapingWriter;

impl Write for EscapingWriter {
    /// Gets a whole event, ended by its newline (the formatter writes each at once).
    fn write(&mut self, event: &[u8]) -> std::io::Result<usize> {
        std::io::stderr().lock().write_all(&one_line(event))?;
        Ok(event.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// `event` with its inner CR and LF written as `\r` and `\n`; its final newline kept.
fn one_line(event: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let body = event.strip_suffix(b"\n").unwrap_or(event);
    if !body.iter().any(|&b| b == b'\n' || b == b'\r') {
        return event.into();
    }
    let mut out = Vec::with_capacity(event.len() + 8);
    for &b in body {
        match b {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
    if body.len() < event.len() {
        out.push(b'\n');
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn a_line_break_inside_an_event_is_escaped() {
        let forged = b"INFO client refused error=password authentication failed for user \"evil\n2026-12-05 INFO login\"\n";
        let line = one_line(forged);
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1, "{}", String::from_utf8_lossy(&line));
        assert!(line.ends_with(b"\"evil\\n2026-12-05 INFO login\"\n"));
        assert_eq!(&*one_line(b"plain event\n"), b"plain event\n");
        assert_eq!(&*one_line(b"a\r\nb"), b"a\\r\\nb");
    }
}
