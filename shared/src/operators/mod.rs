//! Operators: who they are (`credentials`: a named token and roles each, from one secret) and what each role
//! may do (`roles`). How they sign in (an authenticator, sessions) is the `operator_auth` module's.

mod credentials;
mod roles;

pub use credentials::{Credential, OperatorCredentials};
pub use roles::{OPERATOR_ROUTES, OperatorRoute, Role, permits, roles_for};
