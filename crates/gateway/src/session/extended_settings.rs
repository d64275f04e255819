//! `SET pgpilot.route` / `SET pgpilot.cache`, and `SHOW` of them, sent with the extended protocol
//! (pgJDBC, psycopg, node-postgres with parameters): pgpilot's own settings never reach a server,
//! which would refuse `primary` as a value, or keep `'primary'` as a setting of its own that
//! routing never sees, and answer a SHOW with 42704.

use bytes::{Buf, BytesMut};
use pgpilot_wire::backend::TxnStatus;
use pgpilot_wire::{backend, frontend};

use super::client::{Ending, Session};
use super::expect::{BIND_COMPLETE, NO_DATA, NO_PARAMETERS};

/// The unnamed statement of the batch, one of pgpilot's own.
enum Own {
    /// `SET`/`RESET` of pgpilot's settings, applied when the batch is answered.
    Set(String),
    /// `SHOW` of one of them.
    Show(&'static str),
}

/// What pgpilot answers to each message of the batch.
enum Answer {
    Fixed(&'static [u8]),
    /// Describe: a SHOW's RowDescription, its column in this format; NoData for a SET.
    Columns {
        format: i16,
    },
    /// Execute: a SHOW's row and the command's tag.
    Command,
}

impl Session {
    /// Answers a buffered batch of the unnamed statement's Parse, Bind, Describe and Execute, up to
    /// its Sync, when the statement sets or shows one of pgpilot's settings; false for anything
    /// else.
    pub(super) async fn pgpilot_setting_batch(&mut self) -> Result<bool, Ending> {
        let mut frames = pgpilot_wire::FrontendFrames::new(&self.buf, &self.limits);
        let Some(parse) = frames.next().and_then(|f| frontend::parse_parse(f.body())) else {
            return Ok(false);
        };
        let Some(own) = self.own_statement(parse.name, parse.query) else { return Ok(false) };
        let mut answers = vec![Answer::Fixed(super::expect::PARSE_COMPLETE)];
        let mut format = 0;
        loop {
            let Some(frame) = frames.next() else { return Ok(false) };
            match frame.tag {
                b'B' => {
                    let Some(bind) = frontend::parse_bind(frame.body()).filter(|b| b.statement.is_empty())
                    else {
                        return Ok(false);
                    };
                    let Some(formats) = frontend::bind_result_formats(bind.rest) else { return Ok(false) };
                    format = formats.first().copied().unwrap_or(0);
                    answers.push(Answer::Fixed(BIND_COMPLETE));
                }
                b'D' if frame.body().first() == Some(&b'S') => {
                    answers.push(Answer::Fixed(NO_PARAMETERS));
                    answers.push(Answer::Columns { format: 0 });
                }
                b'D' => answers.push(Answer::Columns { format }),
                b'E' => answers.push(Answer::Command),
                b'H' => {}
                b'S' => break,
                _ => return Ok(false),
            }
        }
        let consumed = frames.consumed();
        let applied = match &own {
            Own::Set(sql) => match self.apply_pgpilot_settings(sql) {
                Some(applied) => applied,
                None => return Ok(false),
            },
            Own::Show(_) => Ok("SHOW"),
        };
        let mut out = BytesMut::with_capacity(answers.len() * 16 + 64);
        for answer in answers {
            match (answer, &applied, &own) {
                (Answer::Fixed(bytes), _, _) => out.extend_from_slice(bytes),
                (Answer::Columns { format }, _, Own::Show(name)) => {
                    super::show_own::own_setting_columns(&mut out, name, format)
                }
                (Answer::Columns { .. }, _, Own::Set(_)) => out.extend_from_slice(NO_DATA),
                (Answer::Command, _, Own::Show(name)) => self.own_setting_row(&mut out, name),
                (Answer::Command, Ok(tag), Own::Set(_)) => backend::command_complete(&mut out, tag),
                // The value is refused when the SET runs; the rest of the batch is skipped.
                (Answer::Command, Err(refused), _) => {
                    refused.encode(&mut out);
                    break;
                }
            }
        }
        backend::ready_for_query(&mut out, self.status);
        // The client's unnamed statement is this one, which no server has.
        self.unnamed = None;
        self.count_input_without_server(&self.buf[..consumed]);
        self.buf.advance(consumed);
        self.write(&out).await?;
        Ok(true)
    }

    /// The unnamed statement `query`, when pgpilot answers it itself.
    fn own_statement(&self, name: &[u8], query: &[u8]) -> Option<Own> {
        if !name.is_empty() {
            return None;
        }
        if super::route::maybe_pgpilot_setting(query) {
            return std::str::from_utf8(query).ok().map(|sql| Own::Set(sql.to_string()));
        }
        // In a failed transaction the server refuses it (25P02), as it would a SHOW of its own.
        let shows = self.status != TxnStatus::Failed;
        shows.then(|| super::show_own::shown_own_setting(query)).flatten().map(Own::Show)
    }
}
