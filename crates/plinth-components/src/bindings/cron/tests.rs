use chrono::{TimeDelta, TimeZone};
use plinth_core::ErrorKind;
use plinth_core::registry::Registry;
use tokio::time::{Instant, timeout};

use super::*;

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
        .single()
        .expect("a valid time")
}

fn parse(raw: &str) -> Schedule {
    Schedule::parse(raw).unwrap_or_else(|e| panic!("{raw:?}: {e}"))
}

/// The first `n` firings when reading starts at `start`.
fn firings(raw: &str, start: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
    let schedule = parse(raw);
    let mut out = Vec::new();
    let mut due = schedule.first(start);
    while let Some(at) = due {
        out.push(at);
        if out.len() == n {
            break;
        }
        due = schedule.following(at, at);
    }
    out
}

mod schedule {
    use super::*;

    #[test]
    fn six_fields_start_with_seconds() {
        let start = utc(2024, 5, 1, 12, 0, 0);
        assert_eq!(
            firings("CRON_TZ=UTC 30 * * * * *", start, 2),
            [utc(2024, 5, 1, 12, 0, 30), utc(2024, 5, 1, 12, 1, 30)]
        );
        assert_eq!(
            firings("CRON_TZ=UTC 0 30 3-6,20-23 * * *", start, 3),
            [
                utc(2024, 5, 1, 20, 30, 0),
                utc(2024, 5, 1, 21, 30, 0),
                utc(2024, 5, 1, 22, 30, 0)
            ]
        );
    }

    #[test]
    fn five_fields_fire_at_second_zero() {
        let start = utc(2024, 5, 1, 12, 7, 42);
        assert_eq!(
            firings("CRON_TZ=UTC */15 * * * *", start, 2),
            [utc(2024, 5, 1, 12, 15, 0), utc(2024, 5, 1, 12, 30, 0)]
        );
        assert_eq!(
            firings("CRON_TZ=UTC 0 0 1 * *", start, 1),
            [utc(2024, 6, 1, 0, 0, 0)]
        );
    }

    #[test]
    fn firing_is_strictly_after_the_start() {
        let start = utc(2024, 5, 1, 12, 0, 30);
        assert_eq!(
            firings("CRON_TZ=UTC 30 * * * * *", start, 1),
            [utc(2024, 5, 1, 12, 1, 30)]
        );
        let half = start + TimeDelta::milliseconds(500);
        assert_eq!(
            firings("CRON_TZ=UTC * * * * * *", half, 1),
            [utc(2024, 5, 1, 12, 0, 31)]
        );
    }

    #[test]
    fn steps_ranges_lists_and_question_marks() {
        let start = utc(2024, 5, 1, 12, 0, 0);
        // `a/n` runs from a to the end of the range, as in Dapr's parser.
        assert_eq!(
            firings("CRON_TZ=UTC 10/20 * * * * *", start, 3),
            [
                utc(2024, 5, 1, 12, 0, 10),
                utc(2024, 5, 1, 12, 0, 30),
                utc(2024, 5, 1, 12, 0, 50)
            ]
        );
        assert_eq!(
            firings("CRON_TZ=UTC 0 0 */6 ? * *", start, 2),
            [utc(2024, 5, 1, 18, 0, 0), utc(2024, 5, 2, 0, 0, 0)]
        );
        assert_eq!(
            firings("CRON_TZ=UTC 0 5,10 12 * * ?", start, 2),
            [utc(2024, 5, 1, 12, 5, 0), utc(2024, 5, 1, 12, 10, 0)]
        );
    }

    #[test]
    fn weekdays_count_from_sunday_and_seven_is_sunday_too() {
        // 2024-05-01 is a Wednesday.
        let start = utc(2024, 5, 1, 12, 0, 0);
        let sunday = [utc(2024, 5, 5, 0, 0, 0)];
        assert_eq!(firings("CRON_TZ=UTC 0 0 * * 0", start, 1), sunday);
        assert_eq!(firings("CRON_TZ=UTC 0 0 * * 7", start, 1), sunday);
        assert_eq!(firings("CRON_TZ=UTC 0 0 * * sun", start, 1), sunday);
        assert_eq!(
            firings("CRON_TZ=UTC 0 0 9 * * MON-FRI", start, 2),
            [utc(2024, 5, 2, 9, 0, 0), utc(2024, 5, 3, 9, 0, 0)]
        );
        assert_eq!(
            firings("CRON_TZ=UTC 0 0 1 jun *", start, 1),
            [utc(2024, 6, 1, 0, 0, 0)]
        );
    }

    #[test]
    fn day_of_month_and_day_of_week_both_restricted_match_either() {
        // The 13th, or any Friday (2024-05-03 is a Friday).
        let start = utc(2024, 5, 1, 12, 0, 0);
        assert_eq!(
            firings("CRON_TZ=UTC 0 0 13 * 5", start, 3),
            [
                utc(2024, 5, 3, 0, 0, 0),
                utc(2024, 5, 10, 0, 0, 0),
                utc(2024, 5, 13, 0, 0, 0)
            ]
        );
    }

    #[test]
    fn descriptors_follow_the_clock() {
        // A Wednesday, mid-morning.
        let start = utc(2024, 5, 1, 10, 20, 30);
        for (descriptor, first) in [
            ("@hourly", utc(2024, 5, 1, 11, 0, 0)),
            ("@daily", utc(2024, 5, 2, 0, 0, 0)),
            ("@midnight", utc(2024, 5, 2, 0, 0, 0)),
            ("@weekly", utc(2024, 5, 5, 0, 0, 0)),
            ("@monthly", utc(2024, 6, 1, 0, 0, 0)),
            ("@yearly", utc(2025, 1, 1, 0, 0, 0)),
            ("@annually", utc(2025, 1, 1, 0, 0, 0)),
            ("@HOURLY", utc(2024, 5, 1, 11, 0, 0)),
        ] {
            let raw = format!("CRON_TZ=UTC {descriptor}");
            assert_eq!(firings(&raw, start, 1), [first], "{descriptor}");
        }
    }

    #[test]
    fn every_keeps_its_phase_and_skips_what_was_missed() {
        let start = utc(2024, 5, 1, 12, 0, 0) + TimeDelta::milliseconds(250);
        let schedule = parse("@every 15s");
        assert_eq!(schedule.every(), Some(Duration::from_secs(15)));
        let first = schedule.first(start).expect("fires");
        assert_eq!(first, start + TimeDelta::seconds(15));
        assert_eq!(
            schedule.following(first, first),
            Some(start + TimeDelta::seconds(30))
        );
        // Seen 40 s late: the next firing is the first of the original phase after now.
        let late = first + TimeDelta::seconds(40);
        assert_eq!(
            schedule.following(first, late),
            Some(start + TimeDelta::seconds(60))
        );
        for (raw, every) in [
            ("@every 1h30m", Duration::from_secs(5400)),
            ("@every 1.5h", Duration::from_secs(5400)),
            ("@every 500ms", Duration::from_millis(500)),
            ("@every 2m", Duration::from_secs(120)),
            ("  @every   10s  ", Duration::from_secs(10)),
        ] {
            assert_eq!(parse(raw).every(), Some(every), "{raw}");
        }
    }

    #[test]
    fn a_time_zone_prefix_reads_the_expression_there() {
        let ny = parse("CRON_TZ=America/New_York 0 30 04 * * *");
        assert_eq!(
            ny.zone(),
            Zone::Named(chrono_tz::Tz::America__New_York),
            "zone"
        );
        assert_eq!(ny.zone().name(), "America/New_York");
        // 04:30 in New York is 08:30 UTC in summer and 09:30 UTC in winter.
        assert_eq!(
            ny.first(utc(2024, 7, 1, 0, 0, 0)),
            Some(utc(2024, 7, 1, 8, 30, 0))
        );
        assert_eq!(
            ny.first(utc(2024, 1, 10, 0, 0, 0)),
            Some(utc(2024, 1, 10, 9, 30, 0))
        );
        let tz = parse("TZ=Asia/Tokyo 0 0 9 * * *");
        assert_eq!(
            tz.first(utc(2024, 5, 1, 12, 0, 0)),
            Some(utc(2024, 5, 2, 0, 0, 0))
        );
        assert_eq!(parse("CRON_TZ=UTC @every 1m").zone().name(), "UTC");
        assert_eq!(parse("CRON_TZ=Local @daily").zone(), Zone::Local);
        assert_eq!(parse("@daily").zone(), Zone::Local);
        assert_eq!(parse("@daily").zone().name(), "Local");
    }

    #[test]
    fn daylight_saving_changes_fire_fixed_times_once() {
        // New York: 2024-03-10 02:00 jumps to 03:00; 2024-11-03 01:00-02:00 happens twice.
        assert_eq!(
            firings(
                "CRON_TZ=America/New_York 0 30 2 * * *",
                utc(2024, 3, 10, 5, 0, 0),
                2
            ),
            [utc(2024, 3, 10, 7, 0, 0), utc(2024, 3, 11, 6, 30, 0)]
        );
        assert_eq!(
            firings(
                "CRON_TZ=America/New_York 0 30 1 * * *",
                utc(2024, 11, 3, 4, 0, 0),
                2
            ),
            [utc(2024, 11, 3, 5, 30, 0), utc(2024, 11, 4, 6, 30, 0)]
        );
    }

    #[test]
    fn local_time_is_the_default() {
        let schedule = parse("0 * * * * *");
        let next = schedule.first(utc(2024, 5, 1, 12, 0, 30)).expect("fires");
        assert_eq!(next.timestamp() % 60, 0, "{next}");
    }

    #[test]
    fn bad_schedules_say_what_is_wrong() {
        for (raw, says) in [
            ("", "empty"),
            ("INVALID_SCHEDULE", "fields"),
            ("* * * *", "has 4 fields"),
            ("* * * * * * *", "has 7 fields"),
            ("60 * * * * *", "the second field \"60\" is invalid"),
            ("* 24 * * *", "the hour field \"24\" is invalid"),
            ("*/0 * * * * *", "the second field \"*/0\" is invalid"),
            ("0 0 * * 8", "the day-of-week field \"8\" is invalid"),
            ("0 0 * foo *", "the month field \"foo\" is invalid"),
            ("@every", "needs a duration"),
            ("@every15s", "needs a duration"),
            ("@every 15", "not a duration"),
            ("@every soon", "not a duration"),
            ("@every 0s", "at least 1ms"),
            ("@every 1us", "at least 1ms"),
            ("@fortnightly", "unknown descriptor"),
            (
                "CRON_TZ=Mars/Olympus_Mons * * * * *",
                "not an IANA time zone",
            ),
            ("CRON_TZ=UTC", "no schedule"),
        ] {
            let err = Schedule::parse(raw).expect_err(raw);
            assert!(err.contains(says), "{raw:?}: {err}");
        }
    }
}

mod config {
    use super::*;

    fn spec(schedule: &str) -> ComponentSpec {
        ComponentSpec::new("ticker", TYPE_NAME).with_metadata(SCHEDULE, schedule)
    }

    #[test]
    fn errors_name_the_component_and_the_field() {
        let missing = CronConfig::from_spec(&ComponentSpec::new("ticker", TYPE_NAME))
            .expect_err("no schedule");
        assert!(
            missing
                .to_string()
                .contains("metadata.schedule: is required"),
            "{missing}"
        );
        let bad = CronConfig::from_spec(&spec("* * *")).expect_err("bad schedule");
        assert_eq!(bad.kind(), ErrorKind::InvalidArgument);
        let message = bad.to_string();
        assert!(message.contains("\"ticker\""), "{message}");
        assert!(message.contains("metadata.schedule"), "{message}");
        assert!(message.contains("has 3 fields"), "{message}");
    }

    #[test]
    fn a_schedule_that_never_fires_is_refused() {
        let err = CronConfig::from_spec(&spec("0 0 31 2 *")).expect_err("February 31st");
        assert!(err.to_string().contains("never fires"), "{err}");
    }

    #[test]
    fn direction_is_checked_against_what_cron_supports() {
        let mut registry = Registry::new();
        crate::register_all(&mut registry);
        for direction in ["input", "output", "input, output", " Input ,OUTPUT "] {
            let spec = spec("@every 1s").with_metadata("direction", direction);
            assert!(registry.build(&spec).is_ok(), "{direction}");
        }
        let err = registry
            .build(&spec("@every 1s").with_metadata("direction", "sideways"))
            .expect_err("unknown direction");
        assert!(err.to_string().contains("metadata.direction"), "{err}");
        let http = ComponentSpec::new("web", crate::bindings::http::TYPE_NAME)
            .with_metadata(crate::bindings::http::URL, "http://127.0.0.1:1")
            .with_metadata("direction", "input");
        let err = registry.build(&http).expect_err("http has no input side");
        assert!(
            err.to_string()
                .contains("metadata.direction: bindings.http cannot be an input binding"),
            "{err}"
        );
    }
}

#[test]
fn times_are_written_as_go_writes_them() {
    let t = utc(2024, 5, 1, 9, 5, 7);
    assert_eq!(go_utc(t), "2024-05-01 09:05:07 +0000 UTC");
    assert_eq!(
        go_utc(t + TimeDelta::nanoseconds(123_456_789)),
        "2024-05-01 09:05:07.123456789 +0000 UTC"
    );
    assert_eq!(
        go_utc(t + TimeDelta::milliseconds(250)),
        "2024-05-01 09:05:07.25 +0000 UTC"
    );
}

/// Wall time that moves with tokio's clock, so paused-time tests are deterministic.
#[derive(Debug)]
struct PausedClock {
    base: DateTime<Utc>,
    start: Instant,
}

impl Clock for PausedClock {
    fn now(&self) -> DateTime<Utc> {
        self.base + TimeDelta::from_std(self.start.elapsed()).unwrap_or_default()
    }
}

const BASE: (i32, u32, u32, u32, u32, u32) = (2024, 5, 1, 12, 0, 0);

fn binding(schedule: &str) -> CronBinding {
    let (y, mo, d, h, mi, s) = BASE;
    let clock = PausedClock {
        base: utc(y, mo, d, h, mi, s),
        start: Instant::now(),
    };
    let config = CronConfig {
        schedule: parse(schedule),
    };
    CronBinding::with_clock("ticker", config, Arc::new(clock))
}

fn at(seconds: i64) -> String {
    let (y, mo, d, h, mi, s) = BASE;
    go_utc(utc(y, mo, d, h, mi, s) + TimeDelta::seconds(seconds))
}

async fn open(binding: &CronBinding) -> mpsc::Receiver<InputDelivery> {
    binding
        .read(ReadRequest { max_in_flight: 1 })
        .await
        .expect("read")
        .receiver
}

/// The next delivery, failing when none comes within an hour of (paused) time.
async fn next(rx: &mut mpsc::Receiver<InputDelivery>) -> InputDelivery {
    timeout(Duration::from_secs(3600), rx.recv())
        .await
        .expect("a firing within the hour")
        .expect("the stream is open")
}

fn read_time(delivery: &InputDelivery) -> &str {
    delivery
        .event
        .metadata
        .get(READ_TIME_UTC)
        .map(String::as_str)
        .unwrap_or_default()
}

#[tokio::test(start_paused = true)]
async fn fires_on_schedule_with_dapr_metadata() {
    let binding = binding("CRON_TZ=UTC */2 * * * * *");
    let mut rx = open(&binding).await;
    for seconds in [2, 4, 6] {
        let delivery = next(&mut rx).await;
        assert!(delivery.event.data.is_empty());
        assert_eq!(read_time(&delivery), at(seconds));
        assert_eq!(
            delivery.event.metadata.get(TIME_ZONE).map(String::as_str),
            Some("UTC")
        );
        assert_eq!(delivery.event.metadata.len(), 2);
        delivery.ack().await.expect("ack");
    }
}

#[tokio::test(start_paused = true)]
async fn every_starts_counting_when_reading_starts() {
    let binding = binding("@every 10s");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut rx = open(&binding).await;
    let first = next(&mut rx).await;
    assert_eq!(read_time(&first), at(13));
    assert_eq!(
        first.event.metadata.get(TIME_ZONE).map(String::as_str),
        Some("Local")
    );
    first.ack().await.expect("ack");
    assert_eq!(read_time(&next(&mut rx).await), at(23));
}

#[tokio::test(start_paused = true)]
async fn a_slow_reader_gets_one_pending_firing_and_the_rest_are_skipped() {
    let binding = binding("@every 1s");
    let mut rx = open(&binding).await;
    let first = next(&mut rx).await;
    assert_eq!(read_time(&first), at(1));
    // The app holds the first firing while four more come due: the first of them waits,
    // the other three are skipped.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert!(
        rx.try_recv().is_err(),
        "nothing beyond the in-flight budget"
    );
    assert_eq!(binding.skipped(), 3);
    first.ack().await.expect("ack");
    let waiting = next(&mut rx).await;
    assert_eq!(read_time(&waiting), at(2));
    waiting.ack().await.expect("ack");
    // Then the schedule goes on in its phase.
    assert_eq!(read_time(&next(&mut rx).await), at(6));
}

#[tokio::test(start_paused = true)]
async fn a_nacked_or_dropped_firing_is_not_redelivered() {
    let binding = binding("@every 1s");
    let mut rx = open(&binding).await;
    next(&mut rx).await.nack().await.expect("nack");
    let second = next(&mut rx).await;
    assert_eq!(read_time(&second), at(2));
    drop(second);
    assert_eq!(read_time(&next(&mut rx).await), at(3));
}

#[tokio::test(start_paused = true)]
async fn delete_stops_the_schedule_and_keeps_readers_open() {
    let binding = binding("@every 1s");
    let mut rx = open(&binding).await;
    next(&mut rx).await.ack().await.expect("ack");
    assert_eq!(binding.operations(), ["delete"]);
    let wrong = binding
        .invoke(BindingRequest {
            operation: "create".into(),
            ..Default::default()
        })
        .await
        .expect_err("only delete");
    assert_eq!(wrong.kind(), ErrorKind::InvalidArgument);
    binding
        .invoke(BindingRequest {
            operation: DELETE.into(),
            ..Default::default()
        })
        .await
        .expect("delete");
    assert!(
        timeout(Duration::from_secs(3600), rx.recv()).await.is_err(),
        "no firing after delete, and the stream stays open"
    );
    let mut later = open(&binding).await;
    assert!(
        timeout(Duration::from_secs(3600), later.recv())
            .await
            .is_err()
    );
}

#[tokio::test(start_paused = true)]
async fn close_ends_every_reader() {
    let binding = binding("@every 1s");
    let mut one = open(&binding).await;
    let mut two = open(&binding).await;
    binding.close().await;
    assert!(one.recv().await.is_none());
    assert!(two.recv().await.is_none());
    let err = binding
        .read(ReadRequest { max_in_flight: 1 })
        .await
        .expect_err("closed");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
}

#[tokio::test(start_paused = true)]
async fn in_flight_budget_lets_more_firings_out() {
    let binding = binding("@every 1s");
    let mut rx = binding
        .read(ReadRequest { max_in_flight: 3 })
        .await
        .expect("read")
        .receiver;
    let held: Vec<_> = [
        next(&mut rx).await,
        next(&mut rx).await,
        next(&mut rx).await,
    ]
    .into_iter()
    .collect();
    let times: Vec<_> = held.iter().map(|d| read_time(d).to_owned()).collect();
    assert_eq!(times, [at(1), at(2), at(3)]);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(rx.try_recv().is_err(), "the budget is spent");
    drop(held);
    assert_eq!(read_time(&next(&mut rx).await), at(4));
}
