//! InferexAI's shared library: domain rules, the storage port and its adapters, and the HTTP plumbing
//! every Lambda function uses. Handlers in `functions/*` stay thin and call into these modules.
//!
//! The modules, grouped by layer, lowest first. Their imports form no cycle and only the edge knows
//! `AppState` and HTTP (both held by `shared/tests/module_graph.rs`).

// Foundation: time, configuration, errors, money, secrets and tasks; no knowledge of any item.
pub mod body;
pub mod clock;
pub mod config;
pub mod env;
pub mod error;
pub mod money;
pub mod pages;
pub mod passwords;
pub mod runtime_secrets;
pub mod secrets;
pub mod tasks;

// Storage: the item store port with its DynamoDB and SQLite adapters, every key (`store::schema`) and who
// owns it (`store::owners`), blob storage, retention windows, and the ports the domain is given.
pub mod blobs;
pub mod ports;
pub mod retention;
pub mod store;

// Domain: each module owns its items and offers what others need of them.
pub mod account_limits;
pub mod accounts;
pub mod alerts;
pub mod auth;
pub mod billing;
pub mod catalog;
pub mod gst;
pub mod incidents;
pub mod inference;
pub mod keys;
pub mod kyc;
pub mod links;
pub mod notifications;
pub mod operator_auth;
pub mod operators;
pub mod privacy;
pub mod razorpay;
pub mod residency;
pub mod spend;
pub mod usage;
pub mod verification;
pub mod wallet;

// Edge: HTTP extraction and answers, process wiring (`AppState`), logging, and test support.
pub mod http;
pub mod state;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
