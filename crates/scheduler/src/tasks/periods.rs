//! Partition periods: where a day, ISO week, month or year starts, and what its partition is called.

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime};

use crate::spec::PartitionInterval;

/// PostgreSQL truncates identifiers past this many bytes, which could make two partitions collide.
pub const MAX_IDENTIFIER_BYTES: usize = 63;

const TOKENS: [&str; 7] = ["{table}", "{YYYY}", "{MM}", "{DD}", "{IYYY}", "{IW}", "{Q}"];

/// The start of the period containing `t`.
pub fn period_start(interval: PartitionInterval, t: NaiveDateTime) -> NaiveDate {
    let d = t.date();
    match interval {
        PartitionInterval::Daily => d,
        PartitionInterval::Weekly => d - Duration::days(i64::from(d.weekday().num_days_from_monday())),
        PartitionInterval::Monthly => d.with_day(1).unwrap_or(d),
        PartitionInterval::Yearly => NaiveDate::from_ymd_opt(d.year(), 1, 1).unwrap_or(d),
    }
}

/// The start of the period after the one starting at `start`.
pub fn next_start(interval: PartitionInterval, start: NaiveDate) -> NaiveDate {
    match interval {
        PartitionInterval::Daily => start + Duration::days(1),
        PartitionInterval::Weekly => start + Duration::days(7),
        PartitionInterval::Monthly => start.checked_add_months(chrono::Months::new(1)).unwrap_or(start),
        PartitionInterval::Yearly => start.checked_add_months(chrono::Months::new(12)).unwrap_or(start),
    }
}

/// The periods to keep made: the current one and `premake` after it, as [start, end) pairs.
pub fn wanted_periods(
    interval: PartitionInterval,
    now: NaiveDateTime,
    premake: u32,
) -> Vec<(NaiveDate, NaiveDate)> {
    let mut start = period_start(interval, now);
    let mut out = Vec::with_capacity(premake as usize + 1);
    for _ in 0..=premake {
        let end = next_start(interval, start);
        out.push((start, end));
        start = end;
    }
    out
}

pub fn default_template(interval: PartitionInterval) -> &'static str {
    match interval {
        PartitionInterval::Daily => "{table}_y{YYYY}_m{MM}_d{DD}",
        PartitionInterval::Weekly => "{table}_y{IYYY}_w{IW}",
        PartitionInterval::Monthly => "{table}_y{YYYY}_m{MM}",
        PartitionInterval::Yearly => "{table}_y{YYYY}",
    }
}

/// The partition's name for the period starting at `start`.
pub fn partition_name(template: &str, table: &str, start: NaiveDate) -> String {
    let iso = start.iso_week();
    template
        .replace("{table}", table)
        .replace("{YYYY}", &format!("{:04}", start.year()))
        .replace("{MM}", &format!("{:02}", start.month()))
        .replace("{DD}", &format!("{:02}", start.day()))
        .replace("{IYYY}", &format!("{:04}", iso.year()))
        .replace("{IW}", &format!("{:02}", iso.week()))
        .replace("{Q}", &format!("{}", (start.month() - 1) / 3 + 1))
}

/// Refuses templates that would give two periods the same name.
pub fn check_template(template: &str, interval: PartitionInterval) -> Result<(), String> {
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let close = rest[open..]
            .find('}')
            .map(|c| open + c + 1)
            .ok_or_else(|| format!("naming template `{template}` has an unclosed `{{`"))?;
        let token = &rest[open..close];
        if !TOKENS.contains(&token) {
            return Err(format!(
                "naming template `{template}`: unknown `{token}` (known: {})",
                TOKENS.join(" ")
            ));
        }
        rest = &rest[close..];
    }
    match first_clash(template, interval) {
        None => Ok(()),
        Some((a, b)) => Err(format!(
            "naming template `{template}` would give two {} partitions the same name ({a} and {b} both get \
             `{}`); e.g. `{}`",
            format!("{interval:?}").to_lowercase(),
            partition_name(template, "{table}", a),
            default_template(interval)
        )),
    }
}

/// The first two periods whose partitions the template names alike, if any. Every token is a fixed
/// number of digits, so two names are equal exactly when the values of the tokens used are, and
/// those are compared. ISO years and weeks make this more than a list of required tokens: the ISO
/// year of 1 January is the calendar year before about half the time (2027-01-01 is in 2026-W53,
/// 2028-01-01 in 2027-W52), so `{IYYY}` alone does not tell years apart, nor `{IYYY}` with `{MM}`
/// months, nor `{YYYY}` with `{IW}` weeks (2024-01-01 and 2024-12-30 are both in week 01).
/// The calendar and ISO weeks repeat every 400 years, and equal names need equal years (a name
/// without a year token repeats within the cycle), so a clash exists only if one shows within 401
/// years of periods.
fn first_clash(template: &str, interval: PartitionInterval) -> Option<(NaiveDate, NaiveDate)> {
    let has = |t: &str| template.contains(t);
    let used = [has("{YYYY}"), has("{MM}"), has("{DD}"), has("{IYYY}"), has("{IW}"), has("{Q}")];
    let key = |d: NaiveDate| {
        let iso = d.iso_week();
        let values = [
            d.year(),
            d.month() as i32,
            d.day() as i32,
            iso.year(),
            iso.week() as i32,
            (d.month0() / 3) as i32,
        ];
        let mut key = [0i32; 6];
        for (i, v) in values.iter().enumerate() {
            if used[i] {
                key[i] = *v;
            }
        }
        key
    };
    let first = NaiveDate::from_ymd_opt(2000, 1, 1)?;
    let last = NaiveDate::from_ymd_opt(2401, 12, 31)?;
    let mut seen = std::collections::HashMap::new();
    let mut start = period_start(interval, midnight(first));
    while start <= last {
        if let Some(earlier) = seen.insert(key(start), start) {
            return Some((earlier, start));
        }
        start = next_start(interval, start);
    }
    None
}

fn midnight(day: NaiveDate) -> NaiveDateTime {
    day.and_hms_opt(0, 0, 0).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use PartitionInterval::*;

    fn dt(y: i32, m: u32, d: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(y, m, d).unwrap().and_hms_opt(13, 45, 0).unwrap()
    }

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn monthly_periods_cross_the_year() {
        let p = wanted_periods(Monthly, dt(2026, 11, 20), 3);
        let starts: Vec<_> = p.iter().map(|(s, _)| *s).collect();
        assert_eq!(starts, vec![day(2026, 11, 1), day(2026, 12, 1), day(2027, 1, 1), day(2027, 2, 1)]);
        assert_eq!(p[3].1, day(2027, 3, 1));
        assert_eq!(partition_name(default_template(Monthly), "events", day(2027, 1, 1)), "events_y2027_m01");
    }

    #[test]
    fn weekly_starts_on_monday_with_iso_names() {
        // 2027-01-01 is a Friday; its ISO week is 2026-W53, starting Monday 2026-12-28.
        let p = wanted_periods(Weekly, dt(2027, 1, 1), 1);
        assert_eq!(p[0], (day(2026, 12, 28), day(2027, 1, 4)));
        assert_eq!(partition_name(default_template(Weekly), "t", p[0].0), "t_y2026_w53");
        assert_eq!(partition_name(default_template(Weekly), "t", p[1].0), "t_y2027_w01");
    }

    #[test]
    fn daily_and_yearly() {
        let d = wanted_periods(Daily, dt(2028, 2, 28), 2);
        assert_eq!(
            d.iter().map(|p| p.0).collect::<Vec<_>>(),
            vec![day(2028, 2, 28), day(2028, 2, 29), day(2028, 3, 1)]
        );
        assert_eq!(partition_name(default_template(Daily), "t", day(2028, 2, 29)), "t_y2028_m02_d29");
        let y = wanted_periods(Yearly, dt(2026, 6, 1), 1);
        assert_eq!(y[1], (day(2027, 1, 1), day(2028, 1, 1)));
    }

    #[test]
    fn iso_and_calendar_tokens_mixed_are_checked_period_by_period() {
        // The ISO year of 1 January is the calendar year before when it falls on Friday to Sunday.
        let err = check_template("{table}_{IYYY}_{MM}", Yearly).unwrap_err();
        assert!(err.contains("two yearly partitions the same name"), "{err}");
        assert!(err.contains("2004-01-01 and 2005-01-01 both get `{table}_2004_01`"), "{err}");
        assert!(check_template("{table}_{IYYY}", Yearly).is_err());
        assert!(
            check_template("{table}_{IYYY}_{IW}", Yearly).is_ok(),
            "1 January of each year is in its own week"
        );
        assert!(check_template("{table}_{YYYY}", Yearly).is_ok());
        // Months: the ISO year does not tell the two Januaries apart; ISO weeks do.
        assert!(check_template("{table}_{IYYY}_{MM}", Monthly).is_err());
        assert!(check_template("{table}_{IYYY}w{IW}", Monthly).is_ok());
        assert!(check_template("{table}_{YYYY}w{IW}", Monthly).is_ok());
        assert!(check_template("{table}_{YYYY}q{Q}", Monthly).is_err());
        // Weeks: Monday 2024-12-30 is 2025-W01, like Monday 2024-01-01 is 2024-W01.
        let err = check_template("{table}_{YYYY}_w{IW}", Weekly).unwrap_err();
        assert!(err.contains("two weekly partitions"), "{err}");
        assert!(check_template("{table}_{IYYY}_w{IW}", Weekly).is_ok());
        assert!(check_template("{table}_{YYYY}{MM}{DD}", Weekly).is_ok());
        assert!(
            check_template("{table}_{IYYY}_{MM}_{DD}", Weekly).is_ok(),
            "Mondays on 29-31 December are all in week 01"
        );
        // Days need the calendar date.
        assert!(check_template("{table}_{IYYY}_{MM}_{DD}", Daily).is_err());
        assert!(check_template("{table}_{YYYY}_{MM}_{DD}", Daily).is_ok());
        assert!(check_template("{table}_{IYYY}_{IW}_{DD}", Daily).is_ok());
    }

    #[test]
    fn templates_must_be_unique_per_period() {
        assert!(check_template("{table}_p{YYYY}_{MM}", Monthly).is_ok());
        assert!(check_template("{table}_{YYYY}", Monthly).is_err());
        assert!(check_template("{table}_{YYYY}q{Q}", Yearly).is_ok());
        assert!(check_template("{table}_{YYYYY}", Yearly).is_err());
        assert!(check_template("{table}_{YYYY", Yearly).is_err());
    }
}
