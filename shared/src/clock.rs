//! Time as a dependency, so expiry, throttling and retention can be tested with a controlled clock.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Timelike, Utc};

pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;

    fn now_epoch(&self) -> i64 {
        self.now().timestamp()
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
