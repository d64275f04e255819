//! Durations in the config: a number of seconds (PgBouncer's style, fractions allowed) or a
//! human-readable string such as "250ms", "5s" or "2m". Zero means "disabled" where PgBouncer says so.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Secs(pub Duration);

impl Secs {
    pub const fn from_secs(s: u64) -> Secs {
        Secs(Duration::from_secs(s))
    }

    pub const fn from_millis(ms: u64) -> Secs {
        Secs(Duration::from_millis(ms))
    }

    /// None when zero, the conventional "disabled".
    pub fn enabled(self) -> Option<Duration> {
        (!self.0.is_zero()).then_some(self.0)
    }

    pub fn get(self) -> Duration {
        self.0
    }
}

impl fmt::Display for Secs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl Serialize for Secs {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Secs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Secs, D::Error> {
        d.deserialize_any(SecsVisitor)
    }
}

struct SecsVisitor;

impl Visitor<'_> for SecsVisitor {
    type Value = Secs;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number of seconds or a duration such as \"250ms\", \"5s\", \"2m\"")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Secs, E> {
        Ok(Secs(Duration::from_secs(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Secs, E> {
        u64::try_from(v)
            .map(|v| Secs(Duration::from_secs(v)))
            .map_err(|_| E::custom("a duration cannot be negative"))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Secs, E> {
        Duration::try_from_secs_f64(v)
            .map(Secs)
            .map_err(|_| E::custom("a duration must be a finite, positive number"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Secs, E> {
        parse(v).map_err(E::custom)
    }
}

pub fn parse(v: &str) -> Result<Secs, String> {
    let v = v.trim();
    if let Ok(n) = v.parse::<f64>() {
        return Duration::try_from_secs_f64(n).map(Secs).map_err(|_| format!("invalid duration {v:?}"));
    }
    humantime::parse_duration(v).map(Secs).map_err(|e| format!("invalid duration {v:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct T {
        d: Secs,
    }

    fn d(s: &str) -> Duration {
        toml::from_str::<T>(s).unwrap().d.0
    }

    #[test]
    fn numbers_are_seconds_and_strings_are_human() {
        assert_eq!(d("d = 5"), Duration::from_secs(5));
        assert_eq!(d("d = 0.5"), Duration::from_millis(500));
        assert_eq!(d("d = \"250ms\""), Duration::from_millis(250));
        assert_eq!(d("d = \"2m\""), Duration::from_secs(120));
        assert!(toml::from_str::<T>("d = -1").is_err());
        assert!(toml::from_str::<T>("d = \"soon\"").is_err());
    }
}
