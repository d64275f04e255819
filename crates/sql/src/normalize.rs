//! Lexical normalization for per-statement statistics on the hot path: constants become `$n`,
//! comments go, whitespace collapses, and unquoted words compare case-insensitively. Statements
//! that differ only in their literals share one fingerprint, as in pg_stat_statements, without
//! the full parse (tens of microseconds) that pg_query's fingerprint costs on every distinct text.
//!
//! It is a tokenizer, not a parser. Like PostgreSQL 18's pg_stat_statements it writes a list of
//! constants or parameters after `IN` as `IN ($1 /*, ... */)`, so lists of any length are one
//! statement, and a negative number is one constant. The fingerprint is pgpilot's own (stable
//! across runs and instances, not pg_query's).

/// A statement with its constants replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized {
    /// FNV-1a over the normalized tokens, unquoted words in lower case.
    pub fingerprint: u64,
    pub text: String,
    /// The constants taken out, in order, as written (quotes included).
    pub constants: Vec<String>,
}

/// Hashed between tokens in place of the spacing, which varies (a control byte SQL hardly holds).
const TOKEN_BOUNDARY: u8 = 0x1f;
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

struct Out<'s> {
    hash: u64,
    text: String,
    constants: Option<Vec<String>>,
    next_param: usize,
    pending_space: bool,
    /// A `;` is written only when another token follows: a trailing one changes nothing.
    pending_semicolon: bool,
    /// What the last token was: a `-` after an operator or a keyword is a negative constant's sign.
    prev: Prev,
    /// The last word was PASSWORD: the constant after it is a secret, never kept.
    secret_follows: bool,
    /// A string literal ended with the word PASSWORD (quotes out of balance, as in a script
    /// missing a quote): the next word is likely the secret, and is written as a constant.
    secret_word_follows: bool,
    /// Parentheses open at this point.
    depth: u32,
    /// The last word was ORDER or GROUP.
    order_or_group: bool,
    /// The depth of the ORDER BY or GROUP BY list being read, if one is.
    sort_depth: Option<u32>,
    /// The next token begins an item of that list: a bare integer there is a position in the
    /// select list (`ORDER BY 2`), kept as written as pg_stat_statements keeps it.
    sort_item_start: bool,
    /// Where each constant is in the text, when a [`crate::shape`] is being recorded.
    spans: Option<&'s mut Vec<(u32, u32)>>,
    /// Every constant so far is of a kind a shape can match, and nothing else read one's content.
    reusable: bool,
}

/// What a secret is kept as among the constants (log_parameters).
const REDACTED: &str = "'<redacted>'";

/// What a secret bound as a parameter is logged as.
pub const REDACTED_VALUE: &str = "<redacted>";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Prev {
    /// The start, an operator, an opening bracket, a comma or a keyword.
    Operator,
    /// A name, a constant or a closing bracket: a `-` after it subtracts.
    Operand,
}

impl Out<'_> {
    fn token(&mut self, raw: &str, fold_case: bool) {
        self.separate();
        self.append(raw, fold_case);
        self.secret_follows = false;
        self.secret_word_follows = false;
    }

    /// What goes before the next token: a `;` held back, a space. The fingerprint sees a token
    /// boundary, not the spacing: `id=1` and `id = 1` are one statement, as in pg_stat_statements.
    fn separate(&mut self) {
        if std::mem::take(&mut self.pending_semicolon) {
            let space = std::mem::take(&mut self.pending_space);
            self.token(";", false);
            self.pending_space = space;
        }
        if self.pending_space && !self.text.is_empty() {
            self.text.push(' ');
        }
        self.pending_space = false;
        self.order_or_group = false;
        self.sort_item_start = false;
        self.hash_byte(TOKEN_BOUNDARY);
    }

    /// After a word: where ORDER BY and GROUP BY lists begin and end.
    fn sort_list_word(&mut self, word: &str, sort_by: bool) {
        if sort_by {
            self.sort_depth = Some(self.depth);
            self.sort_item_start = true;
        } else if self.sort_depth.is_some() && ends_sort_list(word) {
            self.sort_depth = None;
        }
        self.order_or_group =
            word.len() == 5 && (word.eq_ignore_ascii_case("order") || word.eq_ignore_ascii_case("group"));
    }

    /// After punctuation: brackets nest, and a comma of the list begins its next item.
    fn sort_list_punctuation(&mut self, c: u8) {
        match c {
            b'(' | b'[' => self.depth += 1,
            b')' | b']' => {
                self.depth = self.depth.saturating_sub(1);
                if self.sort_depth.is_some_and(|d| d > self.depth) {
                    self.sort_depth = None;
                }
            }
            b',' => self.sort_item_start = self.sort_depth == Some(self.depth),
            _ => {}
        }
    }

    fn append(&mut self, raw: &str, fold_case: bool) {
        self.text.push_str(raw);
        for &c in raw.as_bytes() {
            self.hash_byte(if fold_case { c.to_ascii_lowercase() } else { c });
        }
    }

    /// The constant `sql[start..end]`, its place noted for a shape.
    fn constant_at(&mut self, sql: &str, start: usize, end: usize) {
        if let Some(spans) = self.spans.as_mut() {
            if crate::shape::matchable_constant(&sql.as_bytes()[start..end]) {
                spans.push((start as u32, end as u32));
            } else {
                self.reusable = false;
            }
        }
        self.constant(&sql[start..end]);
    }

    fn constant(&mut self, raw: &str) {
        // `$n` without a temporary String: this runs for every literal of every statement.
        self.separate();
        self.placeholder();
        self.keep(raw);
        self.secret_word_follows = raw.ends_with('\'') && ends_with_password(&raw[..raw.len() - 1]);
    }

    /// A word that follows PASSWORD inside quotes out of balance, or in place of its quoted
    /// constant: written as a redacted constant.
    fn secret_word(&mut self) {
        self.reusable = false;
        self.separate();
        self.placeholder();
        self.keep(REDACTED);
        self.secret_word_follows = false;
    }

    fn placeholder(&mut self) {
        self.append("$", false);
        self.append(itoa::Buffer::new().format(self.next_param), false);
        self.next_param += 1;
        self.prev = Prev::Operand;
    }

    /// Keeps a constant for the slow log, when constants are kept: a secret (right after
    /// PASSWORD, or one by its look) only as redacted. Nothing is looked at otherwise: this runs
    /// for every literal of every statement.
    fn keep(&mut self, raw: &str) {
        let after_password = std::mem::take(&mut self.secret_follows);
        if let Some(c) = self.constants.as_mut() {
            let secret = after_password || looks_secret(raw);
            c.push(if secret { REDACTED } else { raw }.to_string());
        }
    }

    /// `IN (...)` of constants and parameters only, written `IN ($n /*, ... */)` whatever its
    /// length, as PostgreSQL 18's pg_stat_statements does: an ORM's lists of varying length are
    /// one statement, not one per length.
    fn in_list(&mut self, sql: &str, items: &[(usize, usize)]) {
        // Lists of other lengths are the same statement: a shape of this one would not say so.
        self.reusable = false;
        // One spelling whether or not the text had a space before the list.
        self.pending_space = true;
        self.separate();
        self.append("(", false);
        let (first_start, first_end) = items[0];
        let first = &sql[first_start..first_end];
        if first.starts_with('$') {
            self.append(first, false);
        } else {
            self.placeholder();
        }
        self.append(" /*, ... */)", false);
        for &(start, end) in items {
            if !sql[start..end].starts_with('$') {
                self.keep(&sql[start..end]);
            }
        }
        self.prev = Prev::Operand;
    }

    #[inline]
    fn hash_byte(&mut self, b: u8) {
        self.hash = (self.hash ^ b as u64).wrapping_mul(FNV_PRIME);
    }
}

/// Normalizes `sql`; `keep_constants` also returns the literals (for a slow-query log that shows
/// parameters when configured).
pub fn normalize(sql: &str, keep_constants: bool) -> Normalized {
    let mut text = String::with_capacity(sql.len());
    let (fingerprint, constants) = normalize_into(sql, keep_constants, &mut text);
    Normalized { fingerprint, text, constants }
}

/// `normalize` writing the text into `text` (cleared first), for a caller that reuses one buffer;
/// returns the fingerprint and the constants.
pub fn normalize_into(sql: &str, keep_constants: bool, text: &mut String) -> (u64, Vec<String>) {
    let out = normalize_out(sql, keep_constants, text, None);
    (out.0, out.1)
}

/// `normalize_into` without constants, noting where each constant is in `spans` (cleared first);
/// returns the fingerprint and whether a [`crate::shape`] of the text can stand for later texts.
pub fn normalize_with_spans(sql: &str, text: &mut String, spans: &mut Vec<(u32, u32)>) -> (u64, bool) {
    spans.clear();
    let (fingerprint, _, reusable) = normalize_out(sql, false, text, Some(spans));
    (fingerprint, reusable)
}

fn normalize_out(
    sql: &str,
    keep_constants: bool,
    text: &mut String,
    spans: Option<&mut Vec<(u32, u32)>>,
) -> (u64, Vec<String>, bool) {
    text.clear();
    let mut out = Out {
        hash: FNV_OFFSET,
        text: std::mem::take(text),
        constants: keep_constants.then(Vec::new),
        next_param: highest_param(sql) + 1,
        pending_space: false,
        pending_semicolon: false,
        prev: Prev::Operator,
        secret_follows: false,
        secret_word_follows: false,
        depth: 0,
        order_or_group: false,
        sort_depth: None,
        sort_item_start: false,
        spans,
        reusable: true,
    };
    let b = sql.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        let end = match c {
            _ if c.is_ascii_whitespace() => {
                out.pending_space = true;
                i += 1;
                continue;
            }
            b'-' if next == Some(b'-') => {
                out.pending_space = true;
                i = line_comment_end(b, i);
                continue;
            }
            b'/' if next == Some(b'*') => {
                out.pending_space = true;
                i = block_comment_end(b, i);
                continue;
            }
            b'\'' => {
                let end = continued_end(b, quoted_end(b, i, b'\''), false);
                out.constant_at(sql, i, end);
                i = end;
                continue;
            }
            // A tag starts like an identifier, non-ASCII letters included (`$ä$...$ä$`).
            b'$' if next.is_some_and(|n| n == b'$' || n.is_ascii_alphabetic() || n == b'_' || n >= 0x80) => {
                match dollar_quoted_end(b, i) {
                    Some(end) => {
                        out.constant_at(sql, i, end);
                        i = end;
                        continue;
                    }
                    None => i + 1,
                }
            }
            b';' => {
                out.sort_depth = None;
                out.pending_semicolon = true;
                i += 1;
                continue;
            }
            b'"' => {
                let end = quoted_end(b, i, b'"');
                if out.secret_follows {
                    // `PASSWORD "sekrit"`: a secret in the wrong quotes.
                    out.secret_word();
                    i = end;
                    continue;
                }
                out.token(&sql[i..end], false);
                // `OPTIONS (SET "password" '...')`: the same option name to PostgreSQL.
                out.secret_follows =
                    sql.get(i + 1..end - 1).is_some_and(|w| w.eq_ignore_ascii_case("password"));
                out.prev = Prev::Operand;
                i = end;
                continue;
            }
            // `- 1` is a negative constant as much as `-1` is (PostgreSQL folds the sign in).
            b'-' if out.prev == Prev::Operator && starts_number(b, i + 1 + blanks_at(b, i + 1)) => {
                let end = number_end(b, i + 1 + blanks_at(b, i + 1));
                out.constant_at(sql, i, end);
                i = end;
                continue;
            }
            b'0'..=b'9' => {
                let end = number_end(b, i);
                if out.sort_item_start && is_select_list_position(b, end) {
                    out.token(&sql[i..end], false);
                    out.prev = Prev::Operand;
                } else {
                    out.constant_at(sql, i, end);
                }
                i = end;
                continue;
            }
            b'.' if next.is_some_and(|n| n.is_ascii_digit()) => {
                let end = number_end(b, i);
                out.constant_at(sql, i, end);
                i = end;
                continue;
            }
            _ if is_word(c) => {
                let mut end = i;
                while end < b.len() && is_word(b[end]) {
                    end += 1;
                }
                // E'...', B'...', X'...', N'...': the prefix belongs to the literal.
                if end == i + 1 && b.get(end) == Some(&b'\'') && matches!(c | 0x20, b'e' | b'b' | b'x' | b'n')
                {
                    let close = continued_end(b, quoted_end(b, end, b'\''), c | 0x20 == b'e');
                    out.constant_at(sql, i, close);
                    i = close;
                    continue;
                }
                // U&'...' too (its escapes may spell anything, a password included).
                if end == i + 1 && c | 0x20 == b'u' && b[end..].starts_with(b"&'") {
                    let close = continued_end(b, quoted_end(b, end + 1, b'\''), false);
                    out.constant_at(sql, i, close);
                    i = close;
                    continue;
                }
                let word = &sql[i..end];
                // `PASSWORD sekrit` (the quotes forgotten) fails, but the word is still a secret.
                let typed_secret = out.secret_follows && !follows_a_password_column(word);
                if std::mem::take(&mut out.secret_word_follows) || typed_secret {
                    out.secret_word();
                    i = end;
                    continue;
                }
                let sort_by = out.order_or_group && word.eq_ignore_ascii_case("by");
                out.token(word, true);
                out.sort_list_word(word, sort_by);
                out.secret_follows = word.eq_ignore_ascii_case("password");
                out.prev =
                    if is_keyword_before_value(word.as_bytes()) { Prev::Operator } else { Prev::Operand };
                i = end;
                if word.eq_ignore_ascii_case("in") {
                    if let Some((items, list_end)) = constant_list(b, i) {
                        out.in_list(sql, &items);
                        i = list_end;
                    }
                }
                continue;
            }
            _ => i + utf8_len(c),
        };
        let end = end.min(b.len());
        out.token(&sql[i..end], false);
        out.sort_list_punctuation(c);
        out.prev = if matches!(c, b')' | b']') { Prev::Operand } else { Prev::Operator };
        i = end;
    }
    *text = out.text;
    (out.hash, out.constants.unwrap_or_default(), out.reusable)
}

/// Whether a literal or a bound value holds a credential: it mentions a password (a connection
/// string's `password=...`) or is a URI with user information (`postgresql://user:pw@host/db`).
/// Such values are never logged.
pub fn looks_secret(value: &str) -> bool {
    mentions_password(value) || uri_with_credentials(value)
}

fn uri_with_credentials(value: &str) -> bool {
    let Some(start) = value.find("://") else { return false };
    let rest = &value[start + 3..];
    let authority = rest.split(['/', '?', '#', '\'', ' ']).next().unwrap_or("");
    authority.contains('@')
}

fn mentions_password(raw: &str) -> bool {
    raw.len() >= 8 && raw.as_bytes().windows(8).any(|w| w.eq_ignore_ascii_case(b"password"))
}

/// Whether `text` ends with the word PASSWORD and a blank (`... PASSWORD '` where a quote went
/// missing; a literal ending in "password" itself is just text).
pub(crate) fn ends_with_password(text: &str) -> bool {
    if !text.ends_with(|c: char| c.is_ascii_whitespace()) {
        return false;
    }
    let t = text.trim_end().as_bytes();
    t.len() >= 8 && t[t.len() - 8..].eq_ignore_ascii_case(b"password")
}

/// The highest `$n` the text already uses, so constants are numbered after the real parameters.
fn highest_param(sql: &str) -> usize {
    let b = sql.as_bytes();
    // Most statements with literals have no `$` at all; `contains` on bytes is a memchr.
    if !b.contains(&b'$') {
        return 0;
    }
    let mut max = 0;
    let mut i = 0;
    while i < b.len() {
        let next = b.get(i + 1).copied();
        i = match b[i] {
            // Inside strings, quoted names and comments a `$1` is text, not a parameter: a
            // password's digits must not number the placeholders.
            b'\'' => quoted_end(b, i, b'\''),
            b'"' => quoted_end(b, i, b'"'),
            b'-' if next == Some(b'-') => line_comment_end(b, i),
            b'/' if next == Some(b'*') => block_comment_end(b, i),
            b'$' if next.is_some_and(|n| n.is_ascii_digit()) => {
                let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
                if digits < 6 {
                    max = max.max(sql[i + 1..i + 1 + digits].parse().unwrap_or(0));
                }
                i + 1 + digits
            }
            b'$' => dollar_quoted_end(b, i).unwrap_or(i + 1),
            _ => i + 1,
        };
    }
    max
}

/// Words after which an ORDER BY or GROUP BY list has ended (its commas are no longer its own).
fn ends_sort_list(word: &str) -> bool {
    const WORDS: [&str; 15] = [
        "limit",
        "offset",
        "fetch",
        "for",
        "having",
        "window",
        "union",
        "intersect",
        "except",
        "select",
        "from",
        "where",
        "values",
        "returning",
        "on",
    ];
    WORDS.iter().any(|w| w.eq_ignore_ascii_case(word))
}

/// Whether the number ending at `end`, at the start of an ORDER BY or GROUP BY item, is the whole
/// item: a position in the select list (PostgreSQL refuses any but an integer there), not a
/// constant of an expression. Decided by what follows alone, as a shape must be able to tell.
fn is_select_list_position(b: &[u8], end: usize) -> bool {
    let next = end + blanks_at(b, end);
    match b.get(next) {
        None | Some(b',' | b')' | b';') => true,
        Some(b'-') => b.get(next + 1) == Some(&b'-'),
        Some(b'/') => b.get(next + 1) == Some(&b'*'),
        Some(&c) => is_word(c) && !c.is_ascii_digit(),
    }
}

/// Words that may follow a column or word named password (`password FROM`, `password IS NULL`),
/// or a role's NULL password: any other word right after PASSWORD is taken for a secret typed
/// without its quotes.
fn follows_a_password_column(word: &str) -> bool {
    const WORDS: [&str; 34] = [
        "null",
        "from",
        "as",
        "and",
        "or",
        "is",
        "in",
        "not",
        "like",
        "ilike",
        "similar",
        "between",
        "where",
        "group",
        "order",
        "having",
        "limit",
        "offset",
        "union",
        "except",
        "intersect",
        "then",
        "else",
        "end",
        "when",
        "using",
        "on",
        "join",
        "collate",
        "desc",
        "asc",
        "nulls",
        "into",
        "returning",
    ];
    WORDS.iter().any(|w| w.eq_ignore_ascii_case(word))
}

/// Words after which a value comes, so that a `-` after them is a sign, not a subtraction.
/// Matched on the lower-cased word: this runs for every word of every statement.
fn is_keyword_before_value(word: &[u8]) -> bool {
    if word.len() > 7 {
        return false;
    }
    let mut lower = [0u8; 7];
    for (l, c) in lower.iter_mut().zip(word) {
        *l = c.to_ascii_lowercase();
    }
    matches!(
        &lower[..word.len()],
        b"select"
            | b"where"
            | b"and"
            | b"or"
            | b"not"
            | b"when"
            | b"then"
            | b"else"
            | b"in"
            | b"between"
            | b"values"
            | b"return"
            | b"limit"
            | b"offset"
            | b"set"
            | b"is"
            | b"like"
            | b"ilike"
            | b"on"
            | b"having"
            | b"by"
            | b"array"
            | b"any"
            | b"all"
            | b"some"
    )
}

pub(crate) fn starts_number(b: &[u8], i: usize) -> bool {
    match b.get(i) {
        Some(c) if c.is_ascii_digit() => true,
        Some(b'.') => b.get(i + 1).is_some_and(u8::is_ascii_digit),
        _ => false,
    }
}

/// The items of a parenthesized list starting at `start` (after `IN`) when every item is a
/// constant (a number, maybe negative, or a plain string) or a `$n` parameter; the items' spans and
/// the position after the `)`.
fn constant_list(b: &[u8], start: usize) -> Option<(Vec<(usize, usize)>, usize)> {
    let skip_space = |mut i: usize| {
        while b.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        i
    };
    let mut i = skip_space(start);
    if b.get(i) != Some(&b'(') {
        return None;
    }
    let mut items = Vec::new();
    loop {
        let item = skip_space(i + 1);
        let end = match *b.get(item)? {
            b'\'' => quoted_end(b, item, b'\''),
            b'-' if starts_number(b, item + 1) => number_end(b, item + 1),
            _ if starts_number(b, item) => number_end(b, item),
            b'$' if b.get(item + 1).is_some_and(u8::is_ascii_digit) => {
                item + 1 + b[item + 1..].iter().take_while(|c| c.is_ascii_digit()).count()
            }
            _ => return None,
        };
        // An unterminated string ends the text: not a list.
        if end >= b.len() {
            return None;
        }
        items.push((item, end));
        i = skip_space(end);
        match b.get(i)? {
            b',' => continue,
            b')' => return Some((items, i + 1)),
            _ => return None,
        }
    }
}

pub(crate) fn is_word(c: u8) -> bool {
    WORD_BYTES[c as usize]
}

/// Bytes of a word (ASCII letters and digits, `_`, `$`, and any byte of a multi-byte character),
/// as a table: words are most of a statement's bytes.
static WORD_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        table[c] = b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80 || b == b'$';
        c += 1;
    }
    table
};

fn utf8_len(first: u8) -> usize {
    match first {
        0xf0..=0xff => 4,
        0xe0..=0xef => 3,
        0xc0..=0xdf => 2,
        _ => 1,
    }
}

/// The end of a quoted literal or identifier starting at `start` (doubled quotes and, in E''
/// strings, backslash escapes stay inside); the text's end when unterminated.
pub(crate) fn quoted_end(b: &[u8], start: usize, quote: u8) -> usize {
    quoted_close(b, start, quote).unwrap_or(b.len())
}

/// How many blanks start `b[i..]`.
fn blanks_at(b: &[u8], i: usize) -> usize {
    b.get(i..).map_or(0, |rest| rest.iter().take_while(|c| c.is_ascii_whitespace()).count())
}

/// Where a string literal ending at `end` ends with its continuations: PostgreSQL joins string
/// constants separated only by whitespace holding a newline (`'Tr0ub4dor'` newline `'&3'` is one
/// string), so they are one constant here too, and a password so split is redacted whole.
/// `escapes`: the literal is an E'' string, whose continuations take backslash escapes too.
pub(crate) fn continued_end(b: &[u8], mut end: usize, escapes: bool) -> usize {
    loop {
        let blank = blanks_at(b, end);
        let gap = b.get(end..end + blank).unwrap_or_default();
        if !gap.iter().any(|&c| c == b'\n' || c == b'\r') || b.get(end + blank) != Some(&b'\'') {
            return end;
        }
        end = quoted_close_with(b, end + blank, b'\'', escapes).unwrap_or(b.len());
    }
}

/// `quoted_end`, None when the quote is never closed.
pub(crate) fn quoted_close(b: &[u8], start: usize, quote: u8) -> Option<usize> {
    // Backslash escapes only in E'...' strings (standard_conforming_strings is on by default);
    // the E must be a word of its own: `LIKE'a\'` is LIKE and a standard string.
    let escapes = quote == b'\''
        && start > 0
        && matches!(b[start - 1], b'e' | b'E')
        && (start < 2 || !is_word(b[start - 2]));
    quoted_close_with(b, start, quote, escapes)
}

pub(crate) fn quoted_close_with(b: &[u8], start: usize, quote: u8, escapes: bool) -> Option<usize> {
    let mut i = start + 1;
    while i < b.len() {
        if b[i] == b'\\' && escapes {
            i += 2;
            continue;
        }
        if b[i] == quote {
            if b.get(i + 1) == Some(&quote) {
                i += 2;
                continue;
            }
            return Some(i + 1);
        }
        i += 1;
    }
    None
}

/// Where a `--` comment starting at `start` ends: at its newline (kept), or at the end of the text.
pub(crate) fn line_comment_end(b: &[u8], start: usize) -> usize {
    b[start..].iter().position(|&c| c == b'\n').map_or(b.len(), |p| start + p)
}

/// Where the `/* ... */` comment starting at `start` ends (nested comments included), or the end
/// of the text when it is not closed.
pub fn block_comment_end(b: &[u8], start: usize) -> usize {
    let mut depth = 0usize;
    let mut i = start;
    while i + 1 < b.len() {
        match (b[i], b[i + 1]) {
            (b'/', b'*') => {
                depth += 1;
                i += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return i;
                }
            }
            _ => i += 1,
        }
    }
    b.len()
}

/// The end of a dollar-quoted constant starting at `start`; None when `$` starts no tag here. An
/// unterminated one runs to the text's end: all of it may be a secret.
pub(crate) fn dollar_quoted_end(b: &[u8], start: usize) -> Option<usize> {
    let tag_len = b[start + 1..].iter().position(|&c| c == b'$')?;
    let tag = &b[start..start + tag_len + 2];
    if !tag[1..tag.len() - 1].iter().all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80) {
        return None;
    }
    let body = start + tag.len();
    let close = b[body..].windows(tag.len()).position(|w| w == tag);
    Some(close.map_or(b.len(), |close| body + close + tag.len()))
}

pub(crate) fn number_end(b: &[u8], start: usize) -> usize {
    if b[start] == b'0' && matches!(b.get(start + 1), Some(b'x' | b'X' | b'o' | b'O' | b'b' | b'B')) {
        // 0x1F, 0o17, 0b101 (PostgreSQL 16): the whole word is one constant, its digits and any
        // letters after them (PostgreSQL refuses trailing junk), so no digit stays in the text.
        let word = b[start + 2..].iter().take_while(|c| c.is_ascii_alphanumeric() || **c == b'_').count();
        return start + 2 + word;
    }
    let mut i = start;
    let mut seen_e = false;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_digit() || c == b'.' || c == b'_' {
            i += 1;
        } else if (c == b'e' || c == b'E') && !seen_e {
            seen_e = true;
            i += 1;
            if matches!(b.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
        } else {
            break;
        }
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollar_digits_inside_literals_number_nothing() {
        let n = normalize("alter role u password 'hunter$31337'", true);
        assert_eq!(n.text, "alter role u password $1");
        let n = normalize("select $2 /* $99 */, 'x$500', $tag$ $7 $tag$ -- $40\n", true);
        assert_eq!(n.text, "select $2 , $3, $4");
        assert_eq!(
            normalize("select 'a$9'", false).fingerprint,
            normalize("select 'a$10'", false).fingerprint,
            "one entry whatever the digits"
        );
    }

    #[test]
    fn numbers_in_every_radix_become_parameters() {
        let n = normalize("select 0xDEADBEEF, 0x1F, 0o17, 0B101, 1_000, 0x_ff", true);
        assert_eq!(n.text, "select $1, $2, $3, $4, $5, $6");
        assert_eq!(n.constants, vec!["0xDEADBEEF", "0x1F", "0o17", "0B101", "1_000", "0x_ff"]);
        assert_eq!(n.fingerprint, normalize("select 0xAB, 0x2, 0o7, 0b1, 2, 0x1", false).fingerprint);
    }

    #[test]
    fn literals_become_parameters() {
        let n = normalize("SELECT abalance FROM pgbench_accounts WHERE aid = 4711;", true);
        assert_eq!(n.text, "SELECT abalance FROM pgbench_accounts WHERE aid = $1");
        assert_eq!(n.constants, vec!["4711"]);
        let other = normalize("select   abalance from pgbench_accounts where aid = 12", false);
        assert_eq!(n.fingerprint, other.fingerprint, "case, spacing and constants do not matter");
    }

    #[test]
    fn strings_comments_and_existing_parameters() {
        let n = normalize(
            "/* app */ UPDATE t SET name = 'O''Brien', note = E'a\\'b' -- why\n WHERE id = $1 AND x > 1.5e3",
            true,
        );
        assert_eq!(n.text, "UPDATE t SET name = $2, note = $3 WHERE id = $1 AND x > $4");
        assert_eq!(n.constants, vec!["'O''Brien'", "E'a\\'b'", "1.5e3"]);
    }

    #[test]
    fn secrets_in_unusual_quoting_never_survive() {
        for (sql, expected) in [
            ("ALTER ROLE v PASSWORD $ä$LEAK_1$ä$", "ALTER ROLE v PASSWORD $1"),
            ("ALTER ROLE v PASSWORD $tag$LEAK_2", "ALTER ROLE v PASSWORD $1"),
            (r"SELECT 1 WHERE 'x' LIKE'abc\' OR 'y' = 'LEAK_3'", "SELECT $1 WHERE $2 LIKE$3 OR $4 = $5"),
            (r"SELECT E'a\'LEAK_4'", "SELECT $1"),
        ] {
            let n = normalize(sql, false);
            assert!(!n.text.contains("LEAK"), "{sql} -> {}", n.text);
            assert_eq!(n.text, expected, "{sql}");
        }
    }

    #[test]
    fn identifiers_and_dollar_quotes() {
        let n = normalize(r#"SELECT "Col1", t2.c FROM "My Table" t2 WHERE body = $x$it's$x$"#, false);
        assert_eq!(n.text, r#"SELECT "Col1", t2.c FROM "My Table" t2 WHERE body = $1"#);
        let quoted_differs = normalize(r#"SELECT "col1", t2.c FROM "My Table" t2 WHERE body = 'a'"#, false);
        assert_ne!(n.fingerprint, quoted_differs.fingerprint, "quoted identifiers keep their case");
    }

    #[test]
    fn backslash_is_plain_in_standard_strings() {
        let n = normalize(r"SELECT 'C:' AS path, 2", true);
        assert_eq!(n.text, "SELECT $1 AS path, $2");
    }

    #[test]
    fn statements_in_a_string_keep_their_separators() {
        assert_eq!(normalize("SELECT 1; SELECT 2;", false).text, "SELECT $1; SELECT $2");
    }

    #[test]
    fn different_statements_differ() {
        assert_ne!(
            normalize("SELECT a FROM t", false).fingerprint,
            normalize("SELECT b FROM t", false).fingerprint
        );
    }

    #[test]
    fn negative_constants_are_constants_and_subtraction_stays() {
        let n = normalize("SELECT a - 1 FROM t WHERE v = -5 AND w > -.5 AND x IN (-1) LIMIT -1", true);
        assert_eq!(n.text, "SELECT a - $1 FROM t WHERE v = $2 AND w > $3 AND x IN ($4 /*, ... */) LIMIT $5");
        assert_eq!(n.constants, vec!["1", "-5", "-.5", "-1", "-1"]);
        assert_eq!(
            normalize("SELECT * FROM t WHERE v = -5", false).fingerprint,
            normalize("SELECT * FROM t WHERE v = 5", false).fingerprint
        );
        assert_eq!(normalize("SELECT (a)-1, b -2, f(-3)", false).text, "SELECT (a)-$1, b -$2, f($3)");
    }

    #[test]
    fn lists_of_constants_are_one_statement_whatever_their_length() {
        let one = normalize("SELECT * FROM t WHERE id IN (1) AND k = 'x'", true);
        let many = normalize("select * from t where id in (1, 2,3 , -4, 'five') and k = 'y'", true);
        assert_eq!(one.text, "SELECT * FROM t WHERE id IN ($1 /*, ... */) AND k = $2");
        assert_eq!(many.text, "select * from t where id in ($1 /*, ... */) and k = $2");
        assert_eq!(one.fingerprint, many.fingerprint);
        assert_eq!(many.constants, vec!["1", "2", "3", "-4", "'five'", "'y'"]);
        let params = normalize("SELECT * FROM t WHERE id IN ($1, $2, $3)", false);
        assert_eq!(params.text, "SELECT * FROM t WHERE id IN ($1 /*, ... */)");
        assert_eq!(params.fingerprint, normalize("SELECT * FROM t WHERE id IN ($1)", false).fingerprint);
        assert_eq!(
            one.fingerprint,
            normalize("SELECT * FROM t WHERE id IN(7) AND k = 'z'", false).fingerprint
        );
        // Anything else in the list keeps it as written.
        assert_eq!(normalize("SELECT 1 WHERE a IN (b, 2)", false).text, "SELECT $1 WHERE a IN (b, $2)");
        assert_eq!(
            normalize("SELECT 1 WHERE a IN (SELECT 2)", false).text,
            "SELECT $1 WHERE a IN (SELECT $2)"
        );
        assert_eq!(normalize("SELECT 1 WHERE a IN (1, 'x", false).text, "SELECT $1 WHERE a IN ($2, $3");
    }

    #[test]
    fn unterminated_input_does_not_panic() {
        for sql in [
            "SELECT 'abc",
            "SELECT $tag$ x",
            "/* open",
            "SELECT \"x",
            "é'",
            "0x",
            "SELECT $",
            "x IN (",
            "IN (-",
            "-",
        ] {
            let _ = normalize(sql, true);
        }
    }

    #[test]
    fn spacing_between_tokens_does_not_make_another_statement() {
        let same = |a: &str, b: &str| {
            assert_eq!(normalize(a, false).fingerprint, normalize(b, false).fingerprint, "{a:?} vs {b:?}")
        };
        same("SELECT * FROM t WHERE id=1", "SELECT * FROM t WHERE id = 2");
        same("SELECT * FROM t WHERE id =3", "select * from t where id= 4");
        same("SELECT id+1 FROM t", "SELECT id + 2 FROM t");
        same("SELECT count(*) FROM t", "SELECT count( * ) FROM t");
        same("SELECT 1 - 1", "SELECT 5-1");
        same("SELECT 1 -1", "SELECT 5-1");
        same("SELECT * FROM t WHERE id>-1", "SELECT * FROM t WHERE id > - 1");
        same("SELECT * FROM t WHERE id>-1", "SELECT * FROM t WHERE id > -7");
        let differ = |a: &str, b: &str| {
            assert_ne!(normalize(a, false).fingerprint, normalize(b, false).fingerprint, "{a:?} vs {b:?}")
        };
        differ("SELECT a FROM t", "SELECT b FROM t");
        differ("SELECT ab FROM t", "SELECT a, b FROM t");
        differ("SELECT id - 1 FROM t", "SELECT id + 1 FROM t");
    }

    #[test]
    fn a_string_continued_on_the_next_line_is_one_constant() {
        let n = normalize("ALTER ROLE alice PASSWORD 'Tr0ub4dor'\n'&3xyzzy'", true);
        assert_eq!(n.text, "ALTER ROLE alice PASSWORD $1");
        assert_eq!(n.constants, vec!["'<redacted>'".to_string()]);
        let n = normalize("SELECT 'a'\n  'b' \r\n 'c', 'd' 'e'", true);
        assert_eq!(
            n.constants,
            vec!["'a'\n  'b' \r\n 'c'".to_string(), "'d'".to_string(), "'e'".to_string()]
        );
        let n = normalize("SELECT E'x\\''\n'y\\'', 1", true);
        assert_eq!(n.text, "SELECT $1, $2");
        assert_eq!(
            normalize("SELECT 'a'\n'b'", false).fingerprint,
            normalize("SELECT 'ab'", false).fingerprint
        );
    }

    #[test]
    fn a_password_typed_without_its_quotes_is_redacted() {
        let n = normalize("ALTER ROLE alice PASSWORD sekritD7", true);
        assert_eq!(n.text, "ALTER ROLE alice PASSWORD $1");
        assert_eq!(n.constants, vec!["'<redacted>'".to_string()]);
        let n = normalize("ALTER ROLE alice PASSWORD \"sekritD6\" VALID UNTIL 'infinity'", true);
        assert_eq!(n.text, "ALTER ROLE alice PASSWORD $1 VALID UNTIL $2");
        assert!(!n.text.contains("sekrit") && !n.constants.iter().any(|c| c.contains("sekrit")));
        for kept in [
            "ALTER ROLE alice PASSWORD NULL",
            "SELECT password FROM users WHERE password IS NULL",
            "SELECT crypt(password, salt) FROM users",
            "UPDATE users SET password = $1 WHERE id = $2",
        ] {
            assert_eq!(normalize(kept, false).text, kept, "nothing to redact");
        }
    }

    #[test]
    fn positions_in_order_by_and_group_by_are_kept() {
        // As pg_stat_statements: `ORDER BY 1` and `ORDER BY 2` are different statements (helper-153).
        let n =
            normalize("SELECT a, count(*) FROM t WHERE b = 7 GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 5", true);
        assert_eq!(n.text, "SELECT a, count(*) FROM t WHERE b = $1 GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT $2");
        assert_eq!(n.constants, vec!["7".to_string(), "5".to_string()]);
        assert_ne!(
            normalize("select a, b from t order by 1", false).fingerprint,
            normalize("select a, b from t order by 2", false).fingerprint
        );
        for (sql, text) in [
            // An expression's constant is a constant.
            ("select a from t order by 1 + a", "select a from t order by $1 + a"),
            // Commas after the list are not its own.
            (
                "select (select a from t order by 1), 5 from u",
                "select (select a from t order by 1), $1 from u",
            ),
            (
                "select a from t group by a union select 1, 2",
                "select a from t group by a union select $1, $2",
            ),
            ("select a from t order by 1; select 1, 2", "select a from t order by 1; select $1, $2"),
            ("select f(a order by 1), 3 from t", "select f(a order by 1), $1 from t"),
            ("select a from t order by a, 2 /* x */", "select a from t order by a, 2"),
        ] {
            assert_eq!(normalize(sql, false).text, text, "{sql}");
        }
    }

    #[test]
    fn passwords_are_never_kept_among_the_constants() {
        let n = normalize("ALTER ROLE x WITH ENCRYPTED PASSWORD 'hunter2' VALID UNTIL '2030-01-01'", true);
        assert_eq!(n.text, "ALTER ROLE x WITH ENCRYPTED PASSWORD $1 VALID UNTIL $2");
        assert_eq!(n.constants, vec!["'<redacted>'".to_string(), "'2030-01-01'".to_string()]);
        let n = normalize("create user mapping for u server s options (user 'a', password 'pw1')", true);
        assert_eq!(n.constants, vec!["'a'".to_string(), "'<redacted>'".to_string()]);
        // The option name quoted is the same option (helper-153).
        for sql in [
            r#"CREATE USER MAPPING FOR u SERVER s OPTIONS (user 'a', "password" 'Leak_1')"#,
            r#"ALTER USER MAPPING FOR u SERVER s OPTIONS (SET "password" 'Leak_2')"#,
            r#"ALTER USER MAPPING FOR u SERVER s OPTIONS (ADD "PassWord" 'Leak_3', "user" 'b')"#,
        ] {
            let n = normalize(sql, true);
            assert!(n.constants.contains(&"'<redacted>'".to_string()), "{sql}: {:?}", n.constants);
            assert!(!format!("{n:?}").contains("Leak_"), "{sql}: {n:?}");
        }
        let n = normalize(r#"SELECT "password" = 'x' FROM t"#, true);
        assert_eq!(n.constants, vec!["'x'".to_string()], "a column compared is no option");
        let n = normalize("SELECT dblink_connect('host=h password=pw2'), 'x'", true);
        assert_eq!(n.constants, vec!["'<redacted>'".to_string(), "'x'".to_string()]);
        assert!(!format!("{n:?}").contains("pw2"));
    }

    #[test]
    fn a_password_after_quotes_out_of_balance_is_taken_out_of_the_text() {
        let sql =
            "select 'unterminated;\nALTER ROLE x PASSWORD 'secret_one';\nALTER ROLE y PASSWORD 'secret_two'";
        let n = normalize(sql, true);
        assert!(!n.text.contains("secret"), "{}", n.text);
        assert!(!n.constants.iter().any(|c| c.contains("secret")), "{:?}", n.constants);
        // A word after an ordinary literal is still a word.
        assert_eq!(normalize("SELECT 'a' AS password_hint", false).text, "SELECT $1 AS password_hint");
        assert_eq!(normalize("SELECT 'my password' AS x", false).text, "SELECT $1 AS x");
    }

    #[test]
    fn unicode_escaped_passwords_and_uri_credentials_are_secrets_too() {
        let n = normalize("ALTER ROLE r PASSWORD U&'s\\0065cret' VALID UNTIL 'infinity'", true);
        assert_eq!(n.text, "ALTER ROLE r PASSWORD $1 VALID UNTIL $2");
        assert_eq!(n.constants, vec!["'<redacted>'".to_string(), "'infinity'".to_string()]);
        let n =
            normalize("SELECT * FROM dblink('postgresql://u:pw9@h:5432/db', 'select 1') AS t(x int)", true);
        assert_eq!(n.constants[0], "'<redacted>'");
        assert_eq!(n.constants[1], "'select 1'");
        assert!(looks_secret("host=h user=u password=x"));
        assert!(looks_secret("postgres://u:p@h/db"));
        assert!(!looks_secret("see https://example.com/docs"));
        assert!(!looks_secret("alice@example.com"));
    }
}
