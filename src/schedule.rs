//! When connect windows happen: cron expressions and intervals, with a minimum interval between
//! two windows of one account (some providers block frequent polling).
//!
//! The `cron` crate wants six or seven fields (seconds first), counts the day of the week 1-7 from
//! Sunday, and ANDs day-of-month with day-of-week. Administrators write crontab lines: five fields,
//! 0-7 from Sunday with 1 = Monday. So a five-field line gets a seconds field, and numeric days of
//! the week are translated to names (`1-5` means Monday to Friday, as in crontab). Names work too.
//! Times are local; a skipped local time (DST) does not fire and a repeated one fires once, since
//! the next window is always computed after the last one.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Local, TimeZone};

/// The shortest `every` allowed, as the SBS connector had: polling more often helps nobody.
pub const MIN_EVERY: Duration = Duration::from_secs(5 * 60);

/// One source of windows.
#[derive(Debug, Clone)]
pub enum Trigger {
    Cron {
        expression: String,
        schedule: Box<cron::Schedule>,
    },
    Every(Duration),
}

/// When an account (or the whole site) wants windows.
#[derive(Debug, Clone, Default)]
pub struct Schedule {
    pub triggers: Vec<Trigger>,
    /// No window sooner than this after the last one.
    pub min_interval: Option<Duration>,
}

const DAY_NAMES: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];

/// Translates a crontab day-of-week field (0-7, 0 and 7 = Sunday; ranges, lists, steps, names) into
/// a list of day names the `cron` crate reads the same way.
fn translate_day_of_week(field: &str) -> Result<String, String> {
    if field == "*" || field == "?" {
        return Ok(field.to_string());
    }
    let mut days: Vec<usize> = Vec::new();
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<usize>()
                    .map_err(|_| format!("bad step in {part:?}"))?,
            ),
            None => (part, 1),
        };
        if step == 0 {
            return Err(format!("bad step in {part:?}"));
        }
        let day = |text: &str| -> Result<usize, String> {
            if let Ok(n) = text.parse::<usize>() {
                return if n <= 7 {
                    Ok(n % 7)
                } else {
                    Err(format!("day of week {n} is not 0-7"))
                };
            }
            DAY_NAMES
                .iter()
                .position(|d| text.len() >= 3 && d.eq_ignore_ascii_case(&text[..3]))
                .ok_or_else(|| format!("{text:?} is not a day of the week"))
        };
        let (first, last) = match range.split_once('-') {
            _ if range == "*" => (0, 6),
            Some((a, b)) => (day(a)?, if b == "7" { 7 } else { day(b)? }),
            None => {
                let d = day(range)?;
                (d, if step > 1 { 6 } else { d })
            }
        };
        if last < first {
            return Err(format!("the range {range:?} runs backwards"));
        }
        days.extend((first..=last).step_by(step).map(|d| d % 7));
    }
    days.sort_unstable();
    days.dedup();
    Ok(days
        .iter()
        .map(|&d| DAY_NAMES[d])
        .collect::<Vec<_>>()
        .join(","))
}

/// Parses a cron expression in crontab form (five fields) or the `cron` crate's (six or seven).
pub fn parse_cron(expression: &str) -> Result<cron::Schedule, String> {
    let fields: Vec<&str> = expression.split_whitespace().collect();
    let mut fields: Vec<String> = match fields.len() {
        5 => std::iter::once("0").chain(fields.iter().copied()).map(str::to_string).collect(),
        6 | 7 => fields.iter().map(|f| f.to_string()).collect(),
        n => return Err(format!("{n} fields: write five as in crontab (minute hour day month weekday), e.g. \"0 7,17 * * Mon-Fri\"")),
    };
    fields[5] = translate_day_of_week(&fields[5])?;
    cron::Schedule::from_str(&fields.join(" ")).map_err(|e| format!("{e}"))
}

impl Trigger {
    pub fn cron(expression: &str) -> Result<Trigger, String> {
        Ok(Trigger::Cron {
            expression: expression.to_string(),
            schedule: Box::new(parse_cron(expression)?),
        })
    }

    pub fn every(interval: Duration) -> Result<Trigger, String> {
        if interval < MIN_EVERY {
            return Err(format!(
                "every {} is too often: at least {}",
                humantime::format_duration(interval),
                humantime::format_duration(MIN_EVERY)
            ));
        }
        Ok(Trigger::Every(interval))
    }

    /// The first time this trigger fires strictly after `after`, given the last window.
    fn next(
        &self,
        after: DateTime<Local>,
        last: Option<DateTime<Local>>,
    ) -> Option<DateTime<Local>> {
        match self {
            Trigger::Cron { schedule, .. } => schedule.after(&after).next(),
            Trigger::Every(interval) => {
                let interval = chrono::Duration::from_std(*interval).ok()?;
                Some(match last {
                    Some(last) if last + interval > after => last + interval,
                    // Never run, or overdue: now.
                    _ => after,
                })
            }
        }
    }
}

impl Schedule {
    pub fn is_empty(&self) -> bool {
        self.triggers.is_empty()
    }

    /// When the next window is due, at or after `now`, given when the last one ran (`None` when it
    /// never did). `None` when the schedule has no trigger.
    pub fn next_window(
        &self,
        now: DateTime<Local>,
        last: Option<DateTime<Local>>,
    ) -> Option<DateTime<Local>> {
        // Cron times strictly after the last run (a repeated DST hour fires once) and not before
        // a second ago, so that a window due right now is not skipped.
        let from = match last {
            Some(last) if last > now - chrono::Duration::seconds(1) => last,
            _ => now - chrono::Duration::seconds(1),
        };
        let mut next = self
            .triggers
            .iter()
            .filter_map(|t| t.next(from, last))
            .min()?;
        if let (Some(min), Some(last)) = (self.min_interval, last) {
            let earliest = last + chrono::Duration::from_std(min).ok()?;
            next = next.max(earliest);
        }
        Some(next.max(now))
    }
}

/// `Local` from seconds since the epoch (window records are kept in those).
pub fn local_time(secs: u64) -> DateTime<Local> {
    Local
        .timestamp_opt(secs as i64, 0)
        .single()
        .unwrap_or_else(Local::now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, Timelike, Weekday};

    fn at(text: &str) -> DateTime<Local> {
        Local
            .from_local_datetime(
                &chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M").unwrap(),
            )
            .single()
            .unwrap()
    }

    fn schedule(triggers: Vec<Trigger>) -> Schedule {
        Schedule {
            triggers,
            min_interval: None,
        }
    }

    #[test]
    fn crontab_lines_mean_what_they_mean_in_crontab() {
        // 2026-11-20 is a Friday.
        let weekdays = schedule(vec![Trigger::cron("0 7,17 * * 1-5").unwrap()]);
        let next = weekdays.next_window(at("2026-11-20 18:00"), None).unwrap();
        assert_eq!(
            (next.weekday(), next.hour()),
            (Weekday::Mon, 7),
            "1-5 is Monday to Friday"
        );
        let named = schedule(vec![Trigger::cron("30 12 * * Sat,Sun").unwrap()]);
        assert_eq!(
            named.next_window(at("2026-11-20 18:00"), None).unwrap(),
            at("2026-11-21 12:30")
        );
        let sunday = schedule(vec![Trigger::cron("0 9 * * 0").unwrap()]);
        assert_eq!(
            sunday
                .next_window(at("2026-11-20 18:00"), None)
                .unwrap()
                .weekday(),
            Weekday::Sun
        );
        let seven = schedule(vec![Trigger::cron("0 9 * * 7").unwrap()]);
        assert_eq!(
            seven
                .next_window(at("2026-11-20 18:00"), None)
                .unwrap()
                .weekday(),
            Weekday::Sun
        );
        let six_fields = schedule(vec![Trigger::cron("0 0 6 * * *").unwrap()]);
        assert_eq!(
            six_fields
                .next_window(at("2026-11-20 18:00"), None)
                .unwrap(),
            at("2026-11-21 06:00")
        );
    }

    #[test]
    fn day_of_week_translation() {
        assert_eq!(translate_day_of_week("1-5").unwrap(), "Mon,Tue,Wed,Thu,Fri");
        assert_eq!(translate_day_of_week("5-7").unwrap(), "Sun,Fri,Sat");
        assert_eq!(translate_day_of_week("0,6").unwrap(), "Sun,Sat");
        assert_eq!(translate_day_of_week("mon-wed").unwrap(), "Mon,Tue,Wed");
        assert_eq!(translate_day_of_week("*/2").unwrap(), "Sun,Tue,Thu,Sat");
        assert!(translate_day_of_week("8").is_err());
        assert!(translate_day_of_week("Fri-Mon").is_err());
    }

    #[test]
    fn bad_expressions_say_why() {
        assert!(parse_cron("every morning").unwrap_err().contains("five"));
        assert!(parse_cron("61 * * * *").is_err());
        assert!(Trigger::every(Duration::from_secs(60))
            .unwrap_err()
            .contains("too often"));
    }

    #[test]
    fn intervals_count_from_the_last_window() {
        let every = schedule(vec![Trigger::every(Duration::from_secs(3600)).unwrap()]);
        let now = at("2026-11-20 10:00");
        assert_eq!(
            every.next_window(now, None).unwrap(),
            now,
            "never run: at once"
        );
        assert_eq!(
            every
                .next_window(now, Some(at("2026-11-20 09:30")))
                .unwrap(),
            at("2026-11-20 10:30")
        );
        assert_eq!(
            every
                .next_window(now, Some(at("2026-11-20 08:00")))
                .unwrap(),
            now,
            "overdue: at once"
        );
    }

    #[test]
    fn the_minimum_interval_holds_back_an_earlier_trigger() {
        let mut s = schedule(vec![Trigger::cron("*/10 * * * *").unwrap()]);
        s.min_interval = Some(Duration::from_secs(30 * 60));
        let next = s
            .next_window(at("2026-11-20 10:05"), Some(at("2026-11-20 10:00")))
            .unwrap();
        assert_eq!(next, at("2026-11-20 10:30"));
    }

    #[test]
    fn a_window_due_now_is_not_skipped_and_one_that_ran_is_not_repeated() {
        let s = schedule(vec![Trigger::cron("0 7 * * *").unwrap()]);
        assert_eq!(
            s.next_window(at("2026-11-20 07:00"), None).unwrap(),
            at("2026-11-20 07:00")
        );
        let after = s
            .next_window(at("2026-11-20 07:00"), Some(at("2026-11-20 07:00")))
            .unwrap();
        assert_eq!((after.day(), after.hour()), (21, 7));
    }
}
