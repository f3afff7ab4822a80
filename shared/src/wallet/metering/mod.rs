//! Metering: what a call may cost is held before it is forwarded, what it cost is charged after, and what
//! dead processes left behind is settled by the sweeper. One file per part:
//!
//! - `holds`: a call's hold on the wallet (and its release when the call never reached a provider);
//! - `settlement`: the charge, its ledger entry and usage log, in one transaction;
//! - `reservations`: budget leases' reserves on the wallet, and the calls recorded beside them;
//! - `leases`: the per-process lease keeper (`make run`; a Lambda instance serves one call at a time and
//!   takes no lease);
//! - `purses`: a Lambda instance's purse of each account's money, so that no item is written per call
//!   by every instance;
//! - `heartbeats`: running calls' signs of life;
//! - `sweeper`: holds and leases of processes that died, charged and given back.

mod heartbeats;
mod holds;
mod leases;
mod purses;
mod reservations;
mod settlement;
mod sweeper;

pub use heartbeats::*;
pub use holds::*;
pub use leases::*;
pub use purses::*;
pub use reservations::*;
pub use settlement::*;
pub use sweeper::*;
