//! Windows across daylight-saving changes, in a zone that has them. A test binary of its own,
//! because the zone is chosen with TZ for the whole process.

use chrono::{Local, TimeZone, Timelike};
use outpost::schedule::{Schedule, Trigger};

fn schedule(expression: &str) -> Schedule {
    Schedule {
        triggers: vec![Trigger::cron(expression).unwrap()],
        min_interval: None,
    }
}

#[test]
fn skipped_and_repeated_local_times() {
    std::env::set_var("TZ", "Europe/Berlin");
    if !std::path::Path::new("/usr/share/zoneinfo/Europe/Berlin").exists() {
        panic!("tzdata is needed for this test (apt-get install tzdata)");
    }
    // 2026-03-29: clocks jump from 02:00 to 03:00, so 02:30 does not exist that day.
    let daily = schedule("30 2 * * *");
    let before = Local.with_ymd_and_hms(2026, 3, 28, 23, 0, 0).unwrap();
    let next = daily.next_window(before, None).unwrap();
    assert_eq!(
        (
            next.format("%Y-%m-%d").to_string(),
            next.hour(),
            next.minute()
        ),
        ("2026-03-30".into(), 2, 30),
        "the skipped time does not fire"
    );

    // 2026-10-25: 02:30 happens twice (CEST, then CET). The window fires once.
    let first = daily
        .next_window(Local.with_ymd_and_hms(2026, 10, 25, 0, 0, 0).unwrap(), None)
        .unwrap();
    assert_eq!(
        (first.format("%Y-%m-%d").to_string(), first.hour()),
        ("2026-10-25".into(), 2)
    );
    let after = daily.next_window(first, Some(first)).unwrap();
    assert_eq!(
        after.format("%Y-%m-%d").to_string(),
        "2026-10-26",
        "not again an hour later"
    );
}
