//! Operator roles and the one table of which role may use which operator route. Roles add up (an operator
//! may hold several) and none includes another: `admin` runs the service's own settings and mail to
//! everyone, not the KYC numbers or the money. A route missing from the table is refused to everyone.

use serde::{Deserialize, Serialize};

/// What an operator may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reviews KYC submissions: the queue, decisions, revealing a number (limited per day), and corrections
    /// of the date of birth or the name on the PAN on evidence.
    KycReviewer,
    /// Money: refund requests and bank payouts, payment reviews, disputes, the GSTR-1 files.
    Payments,
    /// Customer support: an account's rate-limit ceiling, data-rights requests and grievances received
    /// outside the dashboard.
    Support,
    /// The service itself: product news to consenting accounts, security notices and incidents, the
    /// legacy Aadhaar erasure's progress, and a closed account's numbers for a stated legal reason.
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::KycReviewer, Role::Payments, Role::Support, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::KycReviewer => "kyc_reviewer",
            Role::Payments => "payments",
            Role::Support => "support",
            Role::Admin => "admin",
        }
    }
}

/// An operator route and the roles allowed on it.
#[derive(Debug, Clone, Copy)]
pub struct OperatorRoute {
    pub method: &'static str,
    pub path: &'static str,
    pub roles: &'static [Role],
}

const EVERY_ROLE: &[Role] = &Role::ALL;

const fn route(method: &'static str, path: &'static str, roles: &'static [Role]) -> OperatorRoute {
    OperatorRoute { method, path, roles }
}

/// Every operator route that takes a session (the sign-in routes take the token instead), with its roles.
/// The README's operator table and `tests/tests/operator_sign_in.rs` follow this.
pub const OPERATOR_ROUTES: &[OperatorRoute] = &[
    route("GET", "/v1/admin/me", EVERY_ROLE),
    route("DELETE", "/v1/admin/sessions", EVERY_ROLE),
    route("GET", "/v1/admin/kyc/queue", &[Role::KycReviewer]),
    route("POST", "/v1/admin/kyc/{user_id}/decision", &[Role::KycReviewer]),
    // Open accounts' numbers to kyc_reviewer, closed accounts' to admin (checked in `kyc::reveal_for_operator`).
    route("POST", "/v1/admin/kyc/{user_id}/reveal", &[Role::KycReviewer, Role::Admin]),
    route("GET", "/v1/admin/kyc/aadhaar-erasure", &[Role::KycReviewer, Role::Admin]),
    route("GET", "/v1/admin/refund-requests", &[Role::Payments]),
    route("POST", "/v1/admin/refund-requests/{user_id}/payout", &[Role::Payments]),
    route("GET", "/v1/admin/payment-reviews", &[Role::Payments]),
    route("POST", "/v1/admin/payment-reviews/{review_id}/handled", &[Role::Payments]),
    route("GET", "/v1/admin/disputes", &[Role::Payments]),
    route("POST", "/v1/admin/disputes/{dispute_id}/handled", &[Role::Payments]),
    route("GET", "/v1/admin/gstr1/{period}", &[Role::Payments]),
    route("GET", "/v1/admin/gstr1/{period}/csv/{section}", &[Role::Payments]),
    route("PUT", "/v1/admin/accounts/{user_id}/limits", &[Role::Support]),
    route("POST", "/v1/admin/campaigns", &[Role::Admin]),
    route("POST", "/v1/admin/accounts/{user_id}/revoke-access", &[Role::Admin]),
    route("POST", "/v1/admin/revoke-access", &[Role::Admin]),
    route("GET", "/v1/admin/incidents", &[Role::Admin]),
    route("POST", "/v1/admin/incidents", &[Role::Admin]),
    route("GET", "/v1/admin/incidents/{incident_id}", &[Role::Admin]),
    route("POST", "/v1/admin/incidents/{incident_id}/events", &[Role::Admin]),
    route("POST", "/v1/admin/incidents/{incident_id}/notices", &[Role::Admin]),
    // Data-rights requests and grievances from outside the dashboard: support answers them, admin oversees.
    route("GET", "/v1/admin/privacy-requests", &[Role::Support, Role::Admin]),
    route("POST", "/v1/admin/privacy-requests", &[Role::Support, Role::Admin]),
    route("POST", "/v1/admin/privacy-requests/{request_id}/events", &[Role::Support, Role::Admin]),
    route("POST", "/v1/admin/privacy-requests/{request_id}/answer", &[Role::Support, Role::Admin]),
    // Corrections on evidence weigh documents and may send a PAN to be checked again: KYC reviewers'.
    route("POST", "/v1/admin/accounts/{user_id}/corrections", &[Role::KycReviewer]),
];

/// The roles allowed on a route (its template, as the router matched it); none for a route not listed.
pub fn roles_for(method: &str, path: &str) -> &'static [Role] {
    OPERATOR_ROUTES.iter().find(|r| r.method == method && r.path == path).map_or(&[], |r| r.roles)
}

/// Whether an operator holding `held` may use a route allowing `allowed`.
pub fn permits(held: &[Role], allowed: &[Role]) -> bool {
    held.iter().any(|role| allowed.contains(role))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unlisted_route_is_allowed_to_no_one() {
        assert!(roles_for("POST", "/v1/admin/something-new").is_empty());
        assert!(roles_for("GET", "/v1/admin/kyc/{user_id}/reveal").is_empty(), "the method counts");
        assert!(!permits(&Role::ALL, roles_for("POST", "/v1/admin/something-new")));
        assert!(permits(&[Role::Support, Role::KycReviewer], roles_for("GET", "/v1/admin/kyc/queue")));
        assert!(!permits(&[Role::Support], roles_for("POST", "/v1/admin/kyc/{user_id}/reveal")));
    }
}
