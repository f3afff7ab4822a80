//! How operators sign in: the token enrols an authenticator once (`totp`), and the token with a code opens
//! a short session (`sign_in`, `sessions`) that every other operator route takes. Who the operators are and
//! what their roles allow is `crate::operators`'.

pub mod sessions;
mod sign_in;
pub mod totp;

pub use sessions::OpenedSession;
pub use sign_in::{ATTEMPTS_PER_ADDRESS, ATTEMPTS_PER_OPERATOR, Attempt, sign_in};
