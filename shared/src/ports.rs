//! The ports the domain works with: the item store, the clock and the configuration. Built once per process
//! (once per Lambda cold start) by the HTTP layer's `AppState` and passed to every domain function as one
//! value, so no function takes them separately or in tuples. Cheap to clone: three `Arc`s, which a call's
//! detached tasks each keep.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::clock::Clock;
use crate::config::Config;
use crate::store::ItemStore;

#[derive(Clone)]
pub struct Ports {
    pub store: Arc<dyn ItemStore>,
    pub clock: Arc<dyn Clock>,
    pub config: Arc<Config>,
}

impl Ports {
    pub fn new(store: Arc<dyn ItemStore>, clock: Arc<dyn Clock>, config: Config) -> Self {
        Self { store, clock, config: Arc::new(config) }
    }

    pub fn store(&self) -> &dyn ItemStore {
        self.store.as_ref()
    }

    pub fn clock(&self) -> &dyn Clock {
        self.clock.as_ref()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The same clock and configuration over another store (tests count or fail a store's writes).
    pub fn with_store(&self, store: Arc<dyn ItemStore>) -> Self {
        Self { store, clock: Arc::clone(&self.clock), config: Arc::clone(&self.config) }
    }
}
