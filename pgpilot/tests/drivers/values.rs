//! What every client of the driver scenario sends and expects back, for the in-process
//! tokio-postgres run: the same values as drivers/python/scenario_values.py and the other
//! programs (see docs/drivers.md), and small binary codecs for the types tokio-postgres leaves to
//! optional crates (numeric, date, uuid).

use std::error::Error;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, BytesMut};
use tokio_postgres::types::{to_sql_checked, FromSql, IsNull, ToSql, Type};

pub const LISTEN_CHANNEL: &str = "drivers_events";
pub const COPY_ROWS: i32 = 200;

pub const DIVIDE_SQL: &str = "SELECT 10 / $1::int4";

/// The statements every driver runs, from drivers/sql (comment lines left out).
pub fn roundtrip_sql() -> String {
    statement(include_str!("../../../drivers/sql/roundtrip.sql"))
}

pub fn session_sql() -> String {
    statement(include_str!("../../../drivers/sql/session.sql"))
}

fn statement(text: &str) -> String {
    text.lines().filter(|l| !l.starts_with("--")).collect::<Vec<_>>().join("\n").trim().to_string()
}

/// An IANA zone for the client (the second one after its mid-run SET) and its UTC offset.
pub fn zone(c: usize, second: bool) -> (String, i32) {
    let hours = ((c + if second { 11 } else { 0 }) % 27) as i32 - 12;
    match hours {
        0 => ("Etc/GMT".to_string(), 0),
        // POSIX sign convention: Etc/GMT-5 is five hours EAST of UTC.
        h if h > 0 => (format!("Etc/GMT-{h}"), h * 3600),
        h => (format!("Etc/GMT+{}", -h), h * 3600),
    }
}

/// The parameters of round `r` of client `c`, and what the server must say about them.
#[derive(Debug, Clone, PartialEq)]
pub struct Values {
    pub i4: i32,
    pub i8: i64,
    pub num: Numeric,
    pub txt: String,
    pub flag: bool,
    pub ts: SystemTime,
    pub day: Date,
    pub id: Uuid,
    pub doc: serde_json::Value,
    pub raw: Vec<u8>,
    pub ints: Vec<i32>,
    pub texts: Vec<String>,
    pub digest: String,
}

impl Values {
    pub fn new(c: usize, r: usize) -> Values {
        let (ci, ri) = (c as i64, r as i64);
        let whole = 1_000_000_000_000 * (ci + 1) + ri;
        let ts_ms = 1_700_000_000_000 + ci * 86_400_123 + ri * 1_001;
        let days = (c * 10 + r) as i32;
        let uuid_text = format!("{c:08x}-{r:04x}-4000-8000-{:012x}", c * r);
        let raw = vec![c as u8, r as u8, 0, 255, 39, 92, 10];
        let ints = vec![c as i32, r as i32, -1, 2147483647];
        let texts: Vec<String> =
            ["alpha", "b c", "q\"uote", "back\\slash", "", "NULL", &format!("c{c}r{r}"), "ü"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        let txt = format!("c{c} r{r} 'single' \"double\" \\back ü ✓");
        let flag = (c + r).is_multiple_of(2);
        let i4 = (c * 1000 + r) as i32;
        let i8 = 4_000_000_000_000_000_000 + ci * 1000 + ri;
        let digest = [
            (i4 + 1).to_string(),
            (i8 * 2).to_string(),
            (whole * 4 + 1).to_string(),
            txt.chars().count().to_string(),
            if flag { "f" } else { "t" }.to_string(),
            ts_ms.to_string(),
            days.to_string(),
            uuid_text.clone(),
            format!("c{c}-r{r}"),
            raw.iter().map(|b| format!("{b:02x}")).collect(),
            ints.iter().map(i32::to_string).collect::<Vec<_>>().join(","),
            texts.join(","),
            "t".to_string(),
        ]
        .join("|");
        Values {
            i4,
            i8,
            num: Numeric(format!("{whole}.25")),
            txt,
            flag,
            ts: UNIX_EPOCH + Duration::from_millis(ts_ms as u64),
            day: Date(days),
            id: Uuid::parse(&uuid_text),
            doc: serde_json::json!({"k": format!("c{c}-r{r}"), "n": [c, r, null], "nested": {"t": true}}),
            raw,
            ints,
            texts,
            digest,
        }
    }
}

pub fn copy_label(c: usize, i: i32) -> Option<String> {
    (i % 10 != 0).then(|| format!("c{c}-r{i}\tü"))
}

/// COPY ... TO STDOUT text format of the rows copied in.
pub fn copy_out_expected(c: usize) -> String {
    (1..=COPY_ROWS)
        .map(|i| {
            let shown = copy_label(c, i)
                .map_or_else(|| "\\N".to_string(), |l| l.replace('\\', "\\\\").replace('\t', "\\t"));
            format!("{i}\t{shown}\n")
        })
        .collect()
}

type BoxError = Box<dyn Error + Sync + Send>;

/// A numeric as its canonical decimal text, sent and read in PostgreSQL's binary format
/// (base-10000 digits with a weight and a display scale).
#[derive(Debug, Clone, PartialEq)]
pub struct Numeric(pub String);

impl ToSql for Numeric {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        let (negative, digits) = match self.0.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, self.0.as_str()),
        };
        let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
        if !int_part.chars().chain(frac_part.chars()).all(|ch| ch.is_ascii_digit()) {
            return Err(format!("not a decimal number: {}", self.0).into());
        }
        let int_padded = format!("{}{int_part}", "0".repeat((4 - int_part.len() % 4) % 4));
        let frac_padded = format!("{frac_part}{}", "0".repeat((4 - frac_part.len() % 4) % 4));
        let mut groups: Vec<i16> = int_padded
            .as_bytes()
            .chunks(4)
            .chain(frac_padded.as_bytes().chunks(4))
            .map(|g| std::str::from_utf8(g).unwrap_or("0").parse().unwrap_or(0))
            .collect();
        let mut weight = (int_padded.len() / 4) as i16 - 1;
        while groups.first() == Some(&0) {
            groups.remove(0);
            weight -= 1;
        }
        while groups.last() == Some(&0) {
            groups.pop();
        }
        if groups.is_empty() {
            weight = 0;
        }
        out.put_i16(groups.len() as i16);
        out.put_i16(weight);
        out.put_u16(if negative { 0x4000 } else { 0 });
        out.put_u16(frac_part.len() as u16);
        for g in groups {
            out.put_i16(g);
        }
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }

    to_sql_checked!();
}

impl<'a> FromSql<'a> for Numeric {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Numeric, BoxError> {
        let word = |i: usize| -> Result<i16, BoxError> {
            raw.get(i..i + 2).map(|b| i16::from_be_bytes([b[0], b[1]])).ok_or_else(|| "short numeric".into())
        };
        let (ndigits, weight, sign, dscale) = (word(0)?, word(2)?, word(4)? as u16, word(6)? as u16);
        if sign == 0xC000 {
            return Ok(Numeric("NaN".into()));
        }
        let groups: Vec<i16> = (0..ndigits as usize).map(|i| word(8 + 2 * i)).collect::<Result<_, _>>()?;
        let group = |w: i32| -> i16 {
            let index = weight as i32 - w;
            if index >= 0 && (index as usize) < groups.len() {
                groups[index as usize]
            } else {
                0
            }
        };
        let mut int_part = String::new();
        for w in (0..=(weight as i32).max(0)).rev() {
            int_part.push_str(&format!("{:04}", group(w)));
        }
        let int_part = int_part.trim_start_matches('0');
        let mut frac = String::new();
        for w in 1..=((dscale as i32 + 3) / 4) {
            frac.push_str(&format!("{:04}", group(-w)));
        }
        frac.truncate(dscale as usize);
        let mut text = if int_part.is_empty() { "0".to_string() } else { int_part.to_string() };
        if !frac.is_empty() {
            text = format!("{text}.{frac}");
        }
        if sign == 0x4000 {
            text.insert(0, '-');
        }
        Ok(Numeric(text))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }
}

/// A date as days since 2000-01-01 (PostgreSQL's binary format).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Date(pub i32);

impl ToSql for Date {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        out.put_i32(self.0);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::DATE
    }

    to_sql_checked!();
}

impl<'a> FromSql<'a> for Date {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Date, BoxError> {
        let bytes: [u8; 4] = raw.try_into().map_err(|_| "a date is 4 bytes")?;
        Ok(Date(i32::from_be_bytes(bytes)))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::DATE
    }
}

/// A uuid's 16 bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Uuid(pub [u8; 16]);

impl Uuid {
    fn parse(text: &str) -> Uuid {
        let hex: String = text.chars().filter(|ch| *ch != '-').collect();
        let mut bytes = [0u8; 16];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("a hex uuid");
        }
        Uuid(bytes)
    }
}

impl ToSql for Uuid {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        out.put_slice(&self.0);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::UUID
    }

    to_sql_checked!();
}

impl<'a> FromSql<'a> for Uuid {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Uuid, BoxError> {
        Ok(Uuid(raw.try_into().map_err(|_| "a uuid is 16 bytes")?))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::UUID
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(text: &str) -> String {
        let mut buf = BytesMut::new();
        Numeric(text.into()).to_sql(&Type::NUMERIC, &mut buf).unwrap();
        Numeric::from_sql(&Type::NUMERIC, &buf).unwrap().0
    }

    #[test]
    fn numeric_codec_round_trips() {
        for text in
            ["0", "1", "-1", "1000000000005.25", "0.0001", "12345.678", "10000", "-0.5", "50000000000029.25"]
        {
            assert_eq!(round_trip(text), text);
        }
    }
}
