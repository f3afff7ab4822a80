//! The operator extractors. [`OperatorToken`] (the bare token) is taken only by the sign-in routes:
//! enrolling the authenticator and opening a session. Every other operator route takes [`Operator`]: an
//! open session, whose operator holds one of the roles the route allows (`operators::OPERATOR_ROUTES`,
//! read by the route the router matched, so a route missing from the table is refused to everyone). While
//! no operator credentials are configured the operator routes do not exist (404).

use axum::extract::{FromRequestParts, MatchedPath};
use axum::http::request::Parts;

use super::{bearer_token, route_not_found};
use crate::accounts::ClientInfo;
use crate::error::{ApiError, ErrorCode};
use crate::operator_auth;
use crate::operators::{self, Credential, OperatorCredentials, Role};
use crate::state::AppState;

/// A signed-in operator: the name their credential carries (recorded with every action; nothing the caller
/// asserts) and the roles it holds now.
#[derive(Debug, Clone)]
pub struct Operator {
    pub name: String,
    pub roles: Vec<Role>,
}

/// The operator named by the bare token of `Authorization: Bearer <token>` (sign-in routes only).
#[derive(Clone)]
pub struct OperatorToken(pub Credential);

/// The operators' credentials, once the caller is seen to come from a network operators may work from
/// (`Config::operator_networks`: the caller's address as `ClientInfo` has it, so behind CloudFront the
/// browser's, proven by the edge secret). 404 while no operator is configured.
async fn credentials(parts: &mut Parts, state: &AppState) -> Result<std::sync::Arc<OperatorCredentials>, ApiError> {
    let Some(credentials) = &state.operator_token else {
        return Err(route_not_found(parts.method.clone(), parts.uri.clone()).await);
    };
    let networks = &state.config.operator_networks;
    if !networks.is_empty() {
        let client = ClientInfo::from_request_parts(parts, state).await?;
        let address = client.ip.as_deref().and_then(|ip| ip.parse::<std::net::IpAddr>().ok());
        if !address.is_some_and(|ip| networks.iter().any(|network| network.contains(&ip))) {
            return Err(ApiError::Forbidden {
                code: ErrorCode::OperatorNetworkNotAllowed,
                message: "operators work only from the networks this service allows".into(),
            });
        }
    }
    Ok(credentials.current().await)
}

impl FromRequestParts<AppState> for OperatorToken {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let credentials = credentials(parts, state).await?;
        let presented = bearer_token(&parts.headers).unwrap_or_default();
        match credentials.who(presented) {
            Some(credential) => Ok(OperatorToken(credential.clone())),
            None => Err(ApiError::unauthenticated(ErrorCode::InvalidAdminToken, "a valid operator token is required")),
        }
    }
}

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let credentials = credentials(parts, state).await?;
        let presented = bearer_token(&parts.headers).unwrap_or_default();
        let signed_out = || {
            ApiError::unauthenticated(
                ErrorCode::InvalidOperatorSession,
                "an operator session is required: sign in with POST /v1/admin/sessions (your token and a code)",
            )
        };
        let owner = operator_auth::sessions::operator_of(state.store(), presented, state.clock.now())
            .await?
            .ok_or_else(signed_out)?;
        // An operator removed from the credentials, or whose token was replaced, since signing in has no
        // session any more.
        let operator = credentials
            .named(&owner.operator)
            .filter(|c| c.token_digest == owner.token_digest)
            .ok_or_else(signed_out)?;
        let route = parts.extensions.get::<MatchedPath>().map(MatchedPath::as_str).unwrap_or_default();
        let allowed = operators::roles_for(parts.method.as_str(), route);
        if !operators::permits(&operator.roles, allowed) {
            let needed: Vec<&str> = allowed.iter().map(|r| r.as_str()).collect();
            return Err(ApiError::Forbidden {
                code: ErrorCode::RoleRequired,
                message: match needed.as_slice() {
                    [] => "no operator role may use this route".into(),
                    needed => format!("this route needs the role {}", needed.join(" or ")),
                },
            });
        }
        Ok(Operator { name: owner.operator, roles: operator.roles.clone() })
    }
}
