//! The capacity units this process's DynamoDB requests consumed, as DynamoDB reports them: every request
//! asks for `ReturnConsumedCapacity = TOTAL`, and each answer's units are added here, reads and writes
//! apart. On-demand tables bill exactly these (a read request unit per 4 KB read strongly consistently, a
//! write request unit per 1 KB written, twice that inside a transaction), so units per call are the
//! store's cost per call. A conditional write whose condition fails is billed too, but its error carries
//! no figure: it is counted as one write unit (the minimum, our items being under 1 KB).
//!
//! A Lambda instance serves one invocation at a time, so what the counters gained between two invocations
//! is what the first consumed: [`log_previous_invocation`] logs it when the next begins.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_dynamodb::types::ConsumedCapacity;

/// Units are fractional (an eventually consistent read is half a unit): counted in thousandths.
static READ_MILLIUNITS: AtomicU64 = AtomicU64::new(0);
static WRITE_MILLIUNITS: AtomicU64 = AtomicU64::new(0);
/// The counters when the last invocation's figure was logged.
static LOGGED: Mutex<Consumed> = Mutex::new(Consumed { read_units: 0.0, write_units: 0.0 });

/// Capacity units consumed since the process started.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Consumed {
    pub read_units: f64,
    pub write_units: f64,
}

fn add(counter: &AtomicU64, units: f64) {
    if units.is_finite() && units > 0.0 {
        counter.fetch_add((units * 1000.0).round() as u64, Ordering::Relaxed);
    }
}

fn units(capacity: &ConsumedCapacity) -> f64 {
    capacity.capacity_units().unwrap_or(0.0)
}

pub(super) fn read(capacity: Option<&ConsumedCapacity>) {
    add(&READ_MILLIUNITS, capacity.map_or(0.0, units));
}

pub(super) fn write(capacity: Option<&ConsumedCapacity>) {
    add(&WRITE_MILLIUNITS, capacity.map_or(0.0, units));
}

/// A transaction's answer: one figure per table it wrote.
pub(super) fn write_all(capacities: &[ConsumedCapacity]) {
    add(&WRITE_MILLIUNITS, capacities.iter().map(units).sum());
}

/// Conditional writes refused by their condition (one per item a refused transaction held): billed, but
/// unreported (see the module's note).
pub(super) fn refused_writes(items: usize) {
    add(&WRITE_MILLIUNITS, items as f64);
}

/// What this process's requests consumed so far.
pub fn consumed() -> Consumed {
    Consumed {
        read_units: READ_MILLIUNITS.load(Ordering::Relaxed) as f64 / 1000.0,
        write_units: WRITE_MILLIUNITS.load(Ordering::Relaxed) as f64 / 1000.0,
    }
}

/// Logs (target `store_capacity`) the units consumed since the last such line, when there were any: called
/// as each Lambda invocation begins, it reports the previous one, its streamed answer included.
pub fn log_previous_invocation() {
    let now = consumed();
    let Ok(mut logged) = LOGGED.lock() else { return };
    let read_units = now.read_units - logged.read_units;
    let write_units = now.write_units - logged.write_units;
    *logged = now;
    if read_units > 0.0 || write_units > 0.0 {
        tracing::info!(target: "store_capacity", read_units, write_units, "store capacity of the previous invocation");
    }
}
