//! One log event, one line: a value a client chose (a user or database name with a newline in
//! it, sent before any password) must not start a line of its own that reads like pgpilot's.
//! PostgreSQL and PgBouncer indent such continuation lines; pgpilot's text log escapes them, as
//! its JSON log does.

use std::io::Write;

/// Makes writers to stderr that escape line breaks inside an event, and, unless the log is
/// coloured for a terminal (whose colours are escape sequences), every other control character.
pub struct OneLinePerEvent {
    pub colour: bool,
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for OneLinePerEvent {
    type Writer = EscapingWriter;

    fn make_writer(&'a self) -> Self::Writer {
        EscapingWriter { colour: self.colour }
    }
}

pub struct EscapingWriter {
    colour: bool,
}

impl Write for EscapingWriter {
    /// Gets a whole event, ended by its newline (the formatter writes each at once).
    fn write(&mut self, event: &[u8]) -> std::io::Result<usize> {
        std::io::stderr().lock().write_all(&one_line(event, self.colour))?;
        Ok(event.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// `event` with its inner CR and LF written as `\r` and `\n`, and other control characters but
/// tab as `\xNN` (the escape character too, unless `colour`); its final newline kept.
fn one_line(event: &[u8], colour: bool) -> std::borrow::Cow<'_, [u8]> {
    let body = event.strip_suffix(b"\n").unwrap_or(event);
    let escaped = |b: u8| (b < 0x20 && b != b'\t' && !(colour && b == 0x1b)) || b == 0x7f;
    if !body.iter().any(|&b| escaped(b)) {
        return event.into();
    }
    let mut out = Vec::with_capacity(event.len() + 8);
    for &b in body {
        match b {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ if escaped(b) => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
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
        let line = one_line(forged, false);
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1, "{}", String::from_utf8_lossy(&line));
        assert!(line.ends_with(b"\"evil\\n2026-12-05 INFO login\"\n"));
        assert_eq!(&*one_line(b"plain event\n", false), b"plain event\n");
        assert_eq!(&*one_line(b"a\r\nb", false), b"a\\r\\nb");
        // A terminal's clear-screen sent as a user name, unless the log is coloured (its own
        // colours are escape sequences).
        assert_eq!(&*one_line(b"user=\x1b[2J\n", false), b"user=\\x1b[2J\n");
        assert_eq!(&*one_line(b"\x1b[2mINFO\x1b[0m\n", true), b"\x1b[2mINFO\x1b[0m\n");
    }
}
