//! Cron schedules: standard 5-field expressions and the @daily-style nicknames, evaluated in UTC.

use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

/// How many upcoming runs are looked at to find a schedule's longest gap.
const PERIOD_LOOKAHEAD: usize = 16;

#[derive(Clone, Debug)]
pub struct Schedule {
    cron: Cron,
}

/// The five fields of a cron schedule in order, with what each takes.
const FIELDS: [(&str, &str); 5] = [
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31"),
    ("month", "1-12 or JAN-DEC"),
    ("day-of-week", "0-7 (0 and 7 are Sunday) or SUN-SAT"),
];

/// Which field of a 5-field schedule the parser refuses, as "the minute field `61` (takes 0-59)":
/// its own error says only what is wrong ("Number out of bounds"), not where. Each field is tried
/// alone with the others `*`; None when each passes alone (or the text is a nickname).
fn faulty_field(parser: &CronParser, text: &str) -> Option<String> {
    let fields: Vec<&str> = text.split_whitespace().collect();
    if fields.len() != FIELDS.len() {
        return None;
    }
    fields.iter().zip(FIELDS).enumerate().find_map(|(i, (value, (name, takes)))| {
        let mut alone = ["*"; 5];
        alone[i] = value;
        parser.parse(&alone.join(" ")).is_err().then(|| format!("the {name} field `{value}` (takes {takes})"))
    })
}

impl Schedule {
    /// Parses "*/15 * * * *", "0 3 * * 1-5", "@daily", "@hourly", "@weekly", "@monthly", "@yearly".
    /// Seconds and year fields are refused: a job table is not the place for sub-minute timers.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let trimmed = text.trim();
        let text = if trimmed.eq_ignore_ascii_case("@midnight") { "@daily" } else { trimmed };
        if text.starts_with('@') && text.eq_ignore_ascii_case("@reboot") {
            return Err("`@reboot` is not a schedule pgpilot supports; use `pgpilot jobs run`".into());
        }
        if !text.starts_with('@') && text.split_whitespace().count() != 5 {
            return Err(format!(
                "`{text}` is not a 5-field cron schedule (minute hour day-of-month month day-of-week)"
            ));
        }
        let parser = CronParser::builder().seconds(Seconds::Disallowed).year(Year::Disallowed).build();
        let cron = parser.parse(text).map_err(|e| match faulty_field(&parser, text) {
            Some(field) => format!("`{text}` is not a cron schedule: {field}: {e}"),
            None => format!("`{text}` is not a cron schedule: {e}"),
        })?;
        let schedule = Schedule { cron };
        if schedule.next_after(Utc::now()).is_none() {
            return Err(format!("`{text}` never fires (no such date)"));
        }
        Ok(schedule)
    }

    /// The first run strictly after `t`, on a whole second. Every instance of a fleet must name a
    /// slot alike (it is the key that lets only one of them run it), whatever fraction of a second
    /// each one woke at.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        use chrono::Timelike;
        let whole = t.with_nanosecond(0)?;
        self.cron.find_next_occurrence(&whole, false).ok().and_then(|n| n.with_nanosecond(0))
    }

    /// The longest gap between consecutive runs over the next few runs: the period an alert
    /// compares against ("0 3 * * 1-5" has a 3-day gap over the weekend, not 1 day).
    pub fn period(&self, from: DateTime<Utc>) -> Duration {
        let mut longest = Duration::ZERO;
        let Some(mut prev) = self.next_after(from) else { return longest };
        for _ in 0..PERIOD_LOOKAHEAD {
            let Some(next) = self.next_after(prev) else { break };
            longest = longest.max((next - prev).to_std().unwrap_or_default());
            prev = next;
        }
        longest
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    #[test]
    fn five_fields_and_nicknames() {
        let s = Schedule::parse("*/15 * * * *").unwrap();
        assert_eq!(s.next_after(at(2026, 1, 1, 10, 7)), Some(at(2026, 1, 1, 10, 15)));
        assert_eq!(s.next_after(at(2026, 1, 1, 10, 15)), Some(at(2026, 1, 1, 10, 30)));
        let daily = Schedule::parse("@daily").unwrap();
        assert_eq!(daily.next_after(at(2026, 12, 31, 23, 59)), Some(at(2027, 1, 1, 0, 0)));
        assert_eq!(daily.period(at(2026, 1, 1, 0, 0)), Duration::from_secs(86_400));
        assert!(Schedule::parse("@midnight").is_ok());
        assert!(Schedule::parse("@monthly").is_ok());
    }

    #[test]
    fn a_schedule_that_never_fires_is_refused() {
        let e = Schedule::parse("0 0 31 2 *").unwrap_err();
        assert!(e.contains("never fires"), "{e}");
    }

    #[test]
    fn slots_are_whole_seconds_whenever_an_instance_asks() {
        let s = Schedule::parse("* * * * *").unwrap();
        let woke = at(2026, 12, 4, 20, 12) + chrono::Duration::milliseconds(618);
        assert_eq!(s.next_after(woke), Some(at(2026, 12, 4, 20, 13)));
        let late = at(2026, 12, 4, 20, 12) + chrono::Duration::milliseconds(999);
        assert_eq!(s.next_after(late), Some(at(2026, 12, 4, 20, 13)));
    }

    #[test]
    fn period_is_the_longest_gap() {
        let weekdays = Schedule::parse("0 3 * * 1-5").unwrap();
        assert_eq!(weekdays.period(at(2026, 3, 2, 0, 0)), Duration::from_secs(3 * 86_400));
        let monthly = Schedule::parse("0 0 1 * *").unwrap();
        assert_eq!(monthly.period(at(2026, 1, 15, 0, 0)), Duration::from_secs(31 * 86_400));
    }

    #[test]
    fn a_refused_schedule_names_its_wrong_field() {
        for (bad, says) in [
            ("61 * * * *", "the minute field `61` (takes 0-59)"),
            ("0 24 * * *", "the hour field `24` (takes 0-23)"),
            ("0 3 32 * *", "the day-of-month field `32` (takes 1-31)"),
            ("0 3 * 13 *", "the month field `13` (takes 1-12 or JAN-DEC)"),
            ("0 3 * * 8", "the day-of-week field `8`"),
        ] {
            let e = Schedule::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        assert!(Schedule::parse("0 3 * * 7").is_ok(), "7 is Sunday, as the message says");
    }

    #[test]
    fn refuses_what_is_not_standard_cron() {
        for bad in ["", "* * * *", "0 * * * * *", "61 * * * *", "@reboot", "every day"] {
            assert!(Schedule::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
