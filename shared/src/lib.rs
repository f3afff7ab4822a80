//! InferexAI's shared library: domain rules, the storage port and its adapters, and the HTTP plumbing
//! every Lambda function uses. Handlers in `functions/*` stay thin and call into these modules.

pub mod accounts;
pub mod alerts;
pub mod auth;
pub mod blobs;
pub mod body;
pub mod catalog;
pub mod clock;
pub mod config;
pub mod env;
pub mod error;
pub mod http;
pub mod inference;
pub mod keys;
pub mod kyc;
pub mod links;
pub mod money;
pub mod notifications;
pub mod operators;
pub mod pages;
pub mod passwords;
pub mod ports;
pub mod privacy;
pub mod razorpay;
pub mod retention;
pub mod runtime_secrets;
pub mod secrets;
pub mod state;
pub mod store;
pub mod tasks;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod usage;
pub mod verification;
pub mod wallet;
