//! Metadata of `bindings.cron`, and its schedules.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Local, TimeDelta, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use plinth_core::metadata::parse_duration;
use plinth_core::{ComponentSpec, Result};

/// Component metadata: when the binding fires (required). See [`Schedule::parse`].
pub const SCHEDULE: &str = "schedule";

/// The shortest `@every` interval accepted.
pub const MIN_EVERY: Duration = Duration::from_millis(1);

/// The settings of a cron binding.
#[derive(Debug, Clone)]
pub struct CronConfig {
    /// When it fires.
    pub schedule: Schedule,
}

impl CronConfig {
    /// Read the settings from component metadata. A schedule that cannot be parsed, or that
    /// never fires, is an error naming the field.
    pub fn from_spec(spec: &ComponentSpec) -> Result<Self> {
        let raw = spec.require(SCHEDULE)?;
        let field = format!("metadata.{SCHEDULE}");
        let schedule = Schedule::parse(raw).map_err(|e| spec.invalid(&field, e))?;
        if schedule.first(Utc::now()).is_none() {
            return Err(spec.invalid(&field, format!("{raw:?} never fires")));
        }
        Ok(Self { schedule })
    }
}

/// The time zone a cron expression is read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zone {
    /// The process's local time zone (the `TZ` variable or `/etc/localtime`), as in Dapr.
    Local,
    /// A zone named with a `CRON_TZ=` or `TZ=` prefix.
    Named(chrono_tz::Tz),
}

impl Zone {
    /// The name sent in the event's `timeZone` metadata: `Local`, as Dapr sends, or the
    /// zone named in the schedule.
    pub fn name(&self) -> &'static str {
        match self {
            Zone::Local => "Local",
            Zone::Named(tz) => tz.name(),
        }
    }
}

#[derive(Clone)]
enum Kind {
    /// `@every <duration>`: from the time reading starts, at that interval.
    Every(Duration),
    /// A cron expression.
    Cron(Box<Cron>),
}

/// When a cron binding fires.
#[derive(Clone)]
pub struct Schedule {
    raw: String,
    zone: Zone,
    kind: Kind,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Schedule").field(&self.raw).finish()
    }
}

/// Descriptors and the 6-field expressions they stand for, as Dapr's parser defines them:
/// aligned to the clock, not to the time reading starts.
const DESCRIPTORS: &[(&str, &str)] = &[
    ("@yearly", "0 0 0 1 1 *"),
    ("@annually", "0 0 0 1 1 *"),
    ("@monthly", "0 0 0 1 * *"),
    ("@weekly", "0 0 0 * * 0"),
    ("@daily", "0 0 0 * * *"),
    ("@midnight", "0 0 0 * * *"),
    ("@hourly", "0 0 * * * *"),
];

impl Schedule {
    /// Parse a schedule in the syntax of Dapr's cron binding:
    ///
    /// - a cron expression of 6 fields (second minute hour day-of-month month day-of-week)
    ///   or 5 (the same without seconds, which are then 0). Fields take `*`, `?` (day
    ///   fields), numbers, ranges `a-b`, steps `*/n`, `a-b/n` and `a/n` (from `a` to the
    ///   end), lists `a,b`, month names `JAN`-`DEC` and weekday names `SUN`-`SAT`; weekday 0
    ///   and 7 are Sunday. A day-of-month and a day-of-week both restricted match either,
    ///   as in Vixie cron.
    /// - `@yearly` (`@annually`), `@monthly`, `@weekly`, `@daily` (`@midnight`), `@hourly`:
    ///   at the start of each period, by the clock.
    /// - `@every <duration>` with Go's units (`15s`, `1m30s`, `2h`, `500ms`): at that
    ///   interval from the time reading starts.
    ///
    /// A `CRON_TZ=<IANA zone> ` or `TZ=<IANA zone> ` prefix reads the expression in that time
    /// zone; without it, the process's local time zone is used.
    pub fn parse(raw: &str) -> std::result::Result<Self, String> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err("the schedule is empty".into());
        }
        let (zone, spec) = match raw
            .strip_prefix("CRON_TZ=")
            .or_else(|| raw.strip_prefix("TZ="))
        {
            Some(rest) => {
                let (name, spec) = rest
                    .split_once(char::is_whitespace)
                    .ok_or_else(|| format!("{raw:?} names a time zone but no schedule"))?;
                let zone = match name {
                    "Local" => Zone::Local,
                    _ => Zone::Named(name.parse::<chrono_tz::Tz>().map_err(|_| {
                        format!("{name:?} is not an IANA time zone such as Europe/Paris or UTC")
                    })?),
                };
                (zone, spec.trim())
            }
            None => (Zone::Local, raw),
        };
        let kind = if let Some(every) = spec.strip_prefix("@every") {
            Kind::Every(parse_every(every)?)
        } else if spec.starts_with('@') {
            let expression = DESCRIPTORS
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(spec))
                .map(|(_, expression)| *expression)
                .ok_or_else(|| {
                    format!(
                        "unknown descriptor {spec:?}; use @yearly, @annually, @monthly, @weekly, \
                         @daily, @midnight, @hourly or @every <duration>"
                    )
                })?;
            Kind::Cron(Box::new(parse_cron(expression)?))
        } else {
            Kind::Cron(Box::new(parse_cron(spec)?))
        };
        Ok(Self {
            raw: raw.to_owned(),
            zone,
            kind,
        })
    }

    /// The schedule as configured.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The time zone the expression is read in.
    pub fn zone(&self) -> Zone {
        self.zone
    }

    /// The `@every` interval, if that is the schedule's form.
    pub fn every(&self) -> Option<Duration> {
        match &self.kind {
            Kind::Every(d) => Some(*d),
            Kind::Cron(_) => None,
        }
    }

    /// The first firing when reading starts at `start`: strictly after it. `None` when the
    /// schedule never fires again.
    pub fn first(&self, start: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.kind {
            Kind::Every(d) => start.checked_add_signed(TimeDelta::from_std(*d).ok()?),
            Kind::Cron(cron) => next_occurrence(cron, self.zone, start),
        }
    }

    /// The firing after the one due at `due`, seen at `now` (at or after `due`): the first
    /// one strictly after `now`, so the firings missed meanwhile are skipped, not made up.
    pub fn following(&self, due: DateTime<Utc>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let now = now.max(due);
        match &self.kind {
            Kind::Every(d) => {
                // Keep the interval's phase: due + k·d for the smallest k that is after now.
                let step = i128::try_from(d.as_nanos()).ok()?.max(1);
                let behind = i128::from((now - due).num_nanoseconds()?);
                let periods = behind / step + 1;
                let ahead = i64::try_from(periods.checked_mul(step)?).ok()?;
                due.checked_add_signed(TimeDelta::nanoseconds(ahead))
            }
            Kind::Cron(cron) => next_occurrence(cron, self.zone, now),
        }
    }
}

/// The duration of `@every <duration>`, with Go's units and at least [`MIN_EVERY`].
fn parse_every(rest: &str) -> std::result::Result<Duration, String> {
    let raw = rest.trim();
    if raw.is_empty() || !rest.starts_with(char::is_whitespace) {
        return Err("@every needs a duration, such as \"@every 15s\" or \"@every 1h30m\"".into());
    }
    // Go's durations need a unit; `parse_duration` would take a bare number as seconds.
    let duration = if raw.parse::<f64>().is_ok() {
        None
    } else {
        parse_duration(raw)
    };
    let duration = duration.ok_or_else(|| {
        format!(
            "@every {raw:?}: not a duration; use units ns, us, ms, s, m, h such as 15s or 1h30m"
        )
    })?;
    if duration < MIN_EVERY {
        return Err(format!(
            "@every {raw:?}: the interval must be at least {}ms",
            MIN_EVERY.as_millis()
        ));
    }
    Ok(duration)
}

/// A 5- or 6-field cron expression.
fn parse_cron(expression: &str) -> std::result::Result<Cron, String> {
    let fields = expression.split_whitespace().count();
    if !(5..=6).contains(&fields) {
        return Err(format!(
            "{expression:?} has {fields} fields; a cron expression has 6 (second minute hour \
             day-of-month month day-of-week) or 5 (without the second)"
        ));
    }
    let parser = CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        // Dapr's parser reads `a/n` as "from a to the end, every n".
        .sloppy_ranges(true)
        .build();
    parser.parse(expression).map_err(|e| {
        // Name the field at fault: croner's messages do not.
        let parts: Vec<&str> = expression.split_whitespace().collect();
        let names = &FIELD_NAMES[FIELD_NAMES.len() - parts.len()..];
        let culprit = (0..parts.len()).find(|&i| {
            let probe: Vec<&str> = (0..parts.len())
                .map(|j| if j == i { parts[j] } else { "*" })
                .collect();
            parser.parse(&probe.join(" ")).is_err()
        });
        match culprit {
            Some(i) => format!(
                "{expression:?} is not a valid cron expression: the {} field {:?} is invalid ({e})",
                names[i], parts[i]
            ),
            None => format!("{expression:?} is not a valid cron expression: {e}"),
        }
    })
}

/// The fields of a 6-field expression; a 5-field one has all but the first.
const FIELD_NAMES: [&str; 6] = [
    "second",
    "minute",
    "hour",
    "day-of-month",
    "month",
    "day-of-week",
];

fn next_occurrence(cron: &Cron, zone: Zone, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match zone {
        Zone::Local => cron
            .find_next_occurrence(&after.with_timezone(&Local), false)
            .ok()
            .map(|t| t.with_timezone(&Utc)),
        Zone::Named(tz) => cron
            .find_next_occurrence(&after.with_timezone(&tz), false)
            .ok()
            .map(|t| t.with_timezone(&Utc)),
    }
}
