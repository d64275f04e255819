//! Lengths of time written the way people write them in a config file ("5s", "15min", "12 months").
//!
//! Timeouts and pauses become [`std::time::Duration`]; retention ages keep months apart from days
//! because "1 month" is not a fixed number of seconds, and PostgreSQL does that calendar arithmetic.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A calendar-aware length of time: months, days and microseconds kept apart, like PostgreSQL's interval.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Interval {
    pub months: i32,
    pub days: i32,
    pub micros: i64,
}

impl Interval {
    /// A PostgreSQL interval literal (without quotes); only digits and unit words, safe to embed.
    pub fn to_sql(self) -> String {
        format!("{} months {} days {} microseconds", self.months, self.days, self.micros)
    }

    /// The fixed length, when the interval has no months (a month has no fixed length).
    pub fn fixed(self) -> Option<Duration> {
        if self.months != 0 || self.days < 0 || self.micros < 0 {
            return None;
        }
        let micros = i64::from(self.days).checked_mul(86_400_000_000)?.checked_add(self.micros)?;
        Some(Duration::from_micros(u64::try_from(micros).ok()?))
    }

    pub fn is_positive(self) -> bool {
        self.months > 0 || self.days > 0 || self.micros > 0
    }
}

/// A span as written in the config, kept with its text so it serializes back unchanged. A plain
/// number is seconds, as for the gateway's durations (`statement_timeout = 30`, `pause = 0.5`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Written", into = "String")]
pub struct Span {
    text: String,
    interval: Interval,
}

impl Span {
    pub fn parse(text: &str) -> Result<Span, String> {
        Ok(Span { text: text.trim().to_string(), interval: parse_interval(text)? })
    }

    pub fn interval(&self) -> Interval {
        self.interval
    }

    /// The fixed length, or None for spans counted in months or years.
    pub fn duration(&self) -> Option<Duration> {
        self.interval.fixed()
    }

    pub fn text(&self) -> &str {
        &self.text
    }
}

/// What a config file may hold for a length of time: text, or a number of seconds.
enum Written {
    Text(String),
    Whole(i64),
    Seconds(f64),
}

impl<'de> Deserialize<'de> for Written {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Written, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Written;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a length of time: a number of seconds (30) or text (\"30s\", \"15min\", \"90 days\")",
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Written, E> {
                Ok(Written::Text(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Written, E> {
                Ok(Written::Whole(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Written, E> {
                i64::try_from(v)
                    .map(Written::Whole)
                    .map_err(|_| E::custom(format!("`{v}` seconds is too long")))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Written, E> {
                Ok(Written::Seconds(v))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl TryFrom<Written> for Span {
    type Error = String;
    fn try_from(written: Written) -> Result<Span, String> {
        match written {
            Written::Text(text) => Span::parse(&text),
            Written::Whole(n) if n >= 0 => Span::parse(&format!("{n}s")),
            Written::Seconds(x) if x >= 0.0 && x * 1e6 < i64::MAX as f64 => {
                let micros = (x * 1e6).round() as i64;
                if micros % 1_000_000 == 0 {
                    Span::parse(&format!("{}s", micros / 1_000_000))
                } else if micros % 1_000 == 0 {
                    Span::parse(&format!("{}ms", micros / 1_000))
                } else {
                    Span::parse(&format!("{micros}us"))
                }
            }
            Written::Whole(n) => Err(format!("`{n}` is not a length of time (seconds must not be negative)")),
            Written::Seconds(x) => Err(format!("`{x}` is not a length of time (a number of seconds)")),
        }
    }
}

impl TryFrom<String> for Span {
    type Error = String;
    fn try_from(text: String) -> Result<Span, String> {
        Span::parse(&text)
    }
}

impl From<Span> for String {
    fn from(span: Span) -> String {
        span.text
    }
}

impl fmt::Debug for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text)
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

enum Unit {
    Micros(i64),
    Days(i32),
    Months(i32),
}

fn unit(word: &str) -> Option<Unit> {
    Some(match word {
        "us" | "microsecond" | "microseconds" => Unit::Micros(1),
        "ms" | "millisecond" | "milliseconds" => Unit::Micros(1_000),
        "s" | "sec" | "secs" | "second" | "seconds" => Unit::Micros(1_000_000),
        "m" | "min" | "mins" | "minute" | "minutes" => Unit::Micros(60_000_000),
        "h" | "hr" | "hrs" | "hour" | "hours" => Unit::Micros(3_600_000_000),
        "d" | "day" | "days" => Unit::Days(1),
        "w" | "week" | "weeks" => Unit::Days(7),
        "mon" | "mons" | "month" | "months" => Unit::Months(1),
        "y" | "year" | "years" => Unit::Months(12),
        _ => return None,
    })
}

/// Parses "90 days", "1 year 6 months", "1h30m", "250ms": one or more number+unit pairs.
pub fn parse_interval(text: &str) -> Result<Interval, String> {
    let lower = text.trim().to_ascii_lowercase();
    if lower.is_empty() {
        return Err("empty length of time".into());
    }
    let mut rest = lower.as_str();
    let mut out = Interval::default();
    let bad = || {
        format!(
            "`{text}` is not a length of time (write e.g. \"30s\", \"15min\", \"90 days\", \"12 months\")"
        )
    };
    while !rest.is_empty() {
        rest = rest.trim_start();
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad());
        }
        let number: i64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = rest[digits..].trim_start();
        let word_len = rest.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(rest.len());
        let word = &rest[..word_len];
        rest = &rest[word_len..];
        let unit = unit(word).ok_or_else(bad)?;
        let overflow = || format!("`{text}` is too long a time");
        match unit {
            Unit::Micros(scale) => {
                let add = number.checked_mul(scale).ok_or_else(overflow)?;
                out.micros = out.micros.checked_add(add).ok_or_else(overflow)?;
            }
            Unit::Days(scale) => {
                let add =
                    i32::try_from(number).ok().and_then(|n| n.checked_mul(scale)).ok_or_else(overflow)?;
                out.days = out.days.checked_add(add).ok_or_else(overflow)?;
            }
            Unit::Months(scale) => {
                let add =
                    i32::try_from(number).ok().and_then(|n| n.checked_mul(scale)).ok_or_else(overflow)?;
                out.months = out.months.checked_add(add).ok_or_else(overflow)?;
            }
        }
        rest = rest.trim_start_matches([' ', ',']);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_spellings() {
        assert_eq!(parse_interval("5s").unwrap().fixed(), Some(Duration::from_secs(5)));
        assert_eq!(parse_interval("250ms").unwrap().fixed(), Some(Duration::from_millis(250)));
        assert_eq!(parse_interval("1h30m").unwrap().fixed(), Some(Duration::from_secs(5400)));
        assert_eq!(parse_interval("2 days").unwrap().fixed(), Some(Duration::from_secs(172_800)));
        let year = parse_interval("1 year 6 months").unwrap();
        assert_eq!((year.months, year.days, year.fixed()), (18, 0, None));
        assert_eq!(parse_interval("90 days").unwrap().to_sql(), "0 months 90 days 0 microseconds");
    }

    #[test]
    fn numbers_are_seconds() {
        #[derive(Deserialize)]
        struct T {
            t: Span,
        }
        let span = |text: &str| toml::from_str::<T>(&format!("t = {text}")).map(|t| t.t);
        assert_eq!(span("30").unwrap().duration(), Some(Duration::from_secs(30)));
        assert_eq!(span("30").unwrap().text(), "30s");
        assert_eq!(span("0.25").unwrap().duration(), Some(Duration::from_millis(250)));
        assert_eq!(span("1.5").unwrap().text(), "1500ms");
        assert_eq!(span("\"2 days\"").unwrap().text(), "2 days");
        assert!(span("-5").is_err());
        assert!(span("true").unwrap_err().to_string().contains("a number of seconds (30) or text"));
        assert!(span("\"5\"").unwrap_err().to_string().contains("not a length of time"));
    }

    #[test]
    fn rejects_nonsense() {
        for bad in ["", "5", "five seconds", "5 fortnights", "s5", "1 month; DROP TABLE x"] {
            assert!(parse_interval(bad).is_err(), "{bad} should be rejected");
        }
    }
}
