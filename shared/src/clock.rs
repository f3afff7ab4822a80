//! Time as a dependency, so expiry, throttling and retention can be tested with a controlled clock.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Timelike, Utc};

pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;

    fn now_epoch(&self) -> i64 {
        self.now().timestamp()
    }
}

/// India Standard Time's offset from UTC: India keeps no daylight saving.
pub const IST_OFFSET: Duration = Duration::minutes(330);

/// 00:00 IST of a date, in UTC.
pub fn ist_midnight(date: chrono::NaiveDate) -> DateTime<Utc> {
    date.and_time(chrono::NaiveTime::MIN).and_utc() - IST_OFFSET
}

/// An Indian financial year (1 April to 31 March, IST), named by the calendar year it starts in: the year
/// GST returns, document series and tax-record retention count in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct FinancialYear(pub i32);

impl FinancialYear {
    pub fn of(at: DateTime<Utc>) -> Self {
        use chrono::Datelike;
        let ist = at + IST_OFFSET;
        Self(if ist.month() >= 4 { ist.year() } else { ist.year() - 1 })
    }

    /// When financial year `start` begins: 1 April, 00:00 IST.
    fn begins(start: i32) -> DateTime<Utc> {
        ist_midnight(chrono::NaiveDate::from_ymd_opt(start, 4, 1).unwrap_or(chrono::NaiveDate::MAX))
    }

    /// The end of the `years`-th financial year after this one (tax records are kept to then).
    pub fn after(self, years: u32) -> DateTime<Utc> {
        Self::begins(self.0.saturating_add(1).saturating_add(i32::try_from(years).unwrap_or(i32::MAX - 1)))
    }

    /// "2026-27", as GST returns name it.
    pub fn label(self) -> String {
        format!("{}-{:02}", self.0, (self.0 + 1).rem_euclid(100))
    }

    /// "2627", as a document number carries it.
    pub fn short(self) -> String {
        format!("{:02}{:02}", self.0.rem_euclid(100), (self.0 + 1).rem_euclid(100))
    }
}

/// The real wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to; shared between the code under test and the test.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<DateTime<Utc>>>,
}

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        Self { now: Arc::new(Mutex::new(start)) }
    }

    /// A clock that starts at the real current time, rounded up to the next whole second (so timestamps
    /// read back exactly). Tests start here rather than at a fixed instant: anything that runs on the real
    /// clock beside them (DynamoDB Local's TTL sweeper) then never sees an item a test wrote as already
    /// expired, whatever the date the suite runs on.
    pub fn starting_now() -> Self {
        let now = Utc::now();
        let start = now.with_nanosecond(0).map_or(now, |whole| whole + Duration::seconds(1));
        Self::new(start)
    }

    pub fn advance(&self, by: Duration) {
        if let Ok(mut now) = self.now.lock() {
            *now += by;
        }
    }

    pub fn set(&self, to: DateTime<Utc>) {
        if let Ok(mut now) = self.now.lock() {
            *now = to;
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        // A poisoned lock still holds a valid time.
        match self.now.lock() {
            Ok(now) => *now,
            Err(poisoned) => *poisoned.into_inner(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_starting_now_is_never_behind_the_real_clock() {
        let before = Utc::now();
        let clock = ManualClock::starting_now();
        let start = clock.now();
        assert!(start > before && start <= Utc::now() + Duration::seconds(1), "{before} -> {start}");
        assert_eq!(start.nanosecond(), 0, "whole seconds, so timestamps read back exactly");
        clock.advance(Duration::days(1));
        assert_eq!(clock.now() - start, Duration::days(1));
    }
}
