//! `SET pgpilot.route` / `SET pgpilot.cache` sent with the extended protocol (pgJDBC, psycopg,
//! node-postgres with parameters): pgpilot's own settings never reach a server, which would refuse
//! `primary` as a value, or keep `'primary'` as a setting of its own that routing never sees.

use bytes::{Buf, BytesMut};
use pgpilot_wire::{backend, frontend};

use super::client::{Ending, Session};
use super::expect::{BIND_COMPLETE, NO_DATA, NO_PARAMETERS};

/// What pgpilot answers to each message of the batch.
enum Answer {
    Fixed(&'static [u8]),
    /// Execute: CommandComplete with the SET's tag.
    Command,
}

impl Session {
    /// Answers a buffered batch of the unnamed statement's Parse, Bind, Describe and Execute, up to
    /// its Sync, when the statement sets one of pgpilot's settings; false for anything else.
    pub(super) async fn pgpilot_setting_batch(&mut self) -> Result<bool, Ending> {
        let mut frames = pgpilot_wire::FrontendFrames::new(&self.buf, &self.limits);
        let Some(parse) = frames.next().and_then(|f| frontend::parse_parse(f.body())) else {
            return Ok(false);
        };
        if !parse.name.is_empty() || !super::route::maybe_pgpilot_setting(parse.query) {
            return Ok(false);
        }
        let Ok(sql) = std::str::from_utf8(parse.query) else { return Ok(false) };
        let sql = sql.to_string();
        let mut answers = vec![Answer::Fixed(super::expect::PARSE_COMPLETE)];
        loop {
            let Some(frame) = frames.next() else { return Ok(false) };
            match frame.tag {
                b'B' if frontend::parse_bind(frame.body()).is_some_and(|b| b.statement.is_empty()) => {
                    answers.push(Answer::Fixed(BIND_COMPLETE))
                }
                b'D' if frame.body().first() == Some(&b'S') => {
                    answers.push(Answer::Fixed(NO_PARAMETERS));
                    answers.push(Answer::Fixed(NO_DATA));
                }
                b'D' => answers.push(Answer::Fixed(NO_DATA)),
                b'E' => answers.push(Answer::Command),
                b'H' => {}
                b'S' => break,
                _ => return Ok(false),
            }
        }
        let consumed = frames.consumed();
        let Some(applied) = self.apply_pgpilot_settings(&sql) else { return Ok(false) };
        let mut out = BytesMut::with_capacity(answers.len() * 16 + 6);
        for answer in answers {
            match (answer, &applied) {
                (Answer::Fixed(bytes), _) => out.extend_from_slice(bytes),
                (Answer::Command, Ok(tag)) => backend::command_complete(&mut out, tag),
                // The value is refused when the SET runs; the rest of the batch is skipped.
                (Answer::Command, Err(refused)) => {
                    refused.encode(&mut out);
                    break;
                }
            }
        }
        backend::ready_for_query(&mut out, self.status);
        // The client's unnamed statement is this SET, which no server has.
        self.unnamed = None;
        self.count_input_without_server(&self.buf[..consumed]);
        self.buf.advance(consumed);
        self.write(&out).await?;
        Ok(true)
    }
}
