//! Data rights (DPDP Act): correction, acceptance of a new policy, data export, account closure, and a
//! record of every access, correction and erasure request with its due date (30 days).
//!
//! Items (main table):
//! - `USER#<id>` / `PRIVACYREQ#<millis>#<rand>`: one request: kind, received, due, status and outcome.
//! - `USER#<id>` / `EXPORT#<id>`: one data export and the blob holding it; both go after the export window.
//! - `CLOSURES#PENDING` / `<user id>`: a closure whose follow-up (keys, exports, remaining sessions,
//!   consents, KYC decisions) has not finished; written in the closing transaction, deleted when the
//!   follow-up is done, and finished by the scheduled jobs if the request that closed the account could not.

use std::sync::Arc;

use crate::blobs::BlobStore;
use crate::error::{ApiError, ApiResult};
use crate::kyc::KycKeys;
use crate::ports::Ports;

mod requests;
pub use requests::{
    PrivacyRequest, PrivacyRequestView, ReceivedVia, RequestEvent, RequestEventView, RequestKind, RequestStatus,
    requests,
};
pub mod register;
pub use register::{Answer, DueFilter, DueReport, RegisterEntry};
mod evidence;
pub use evidence::{Corrected, EvidenceCorrection, correct_on_evidence};
mod intake;
pub use intake::{CustomerRequest, OutsideRequest, record_outside, submit};
mod consent;
pub use consent::{accept_policy, notice, unsubscribe};
mod correction;
pub use correction::{change_account, correct};
mod export;
pub use export::{
    DataExport, ExportJob, ExportRequest, ExportStatus, ExportView, build_export, create_export, export_document,
    export_jobs, export_link_target, export_view,
};
pub mod coverage;
mod nominee;
pub use nominee::{Nominee, NomineeRequest, nominee, put_nominee, remove_nominee};
mod closure;
pub use closure::{Closure, RetainedData, close_account, finish_closure, finish_pending_closures};

use crate::store::schema;

/// Our limit for answering a data principal's request, grievances included (the DPDP Rules, rule 14(3),
/// allow at most 90 days for a grievance; we promise 30 for every request).
pub const RESPONSE_DAYS: i64 = 30;
/// Where a person goes whose grievance we did not resolve: the DPDP Act s.13(3) has them exhaust our
/// grievance redressal first; the Board takes complaints under s.27 as a digital office (DPDP Rules).
pub const BOARD_COMPLAINT: &str = "If you are not satisfied with this answer, you may complain to the Data Protection Board of India (Digital Personal Data Protection Act, 2023, sections 13(3) and 27), through its online complaint platform.";
/// How long a download link of an export works.
pub const EXPORT_LINK_VALIDITY: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// What data-rights calls use (the HTTP layer builds it from its `AppState`): the ports, and where the function has them, the KYC keys (an export shows its owner the PAN) and the
/// blob store (export files).
#[derive(Clone)]
pub struct PrivacyContext {
    pub(crate) export_builds: ExportBuilds,
    pub(crate) ports: Ports,
    pub(crate) kyc_keys: Option<Arc<KycKeys>>,
    pub(crate) blobs: Option<Arc<dyn BlobStore>>,
}

/// Where a requested data export is built: never inside the request that asks for it (a heavy account's
/// export outlasts any request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExportBuilds {
    /// By a task of this process, started by the request (the local server, tests).
    #[default]
    InProcess,
    /// By the exports function: the export's insertion reaches it through the main table's stream (AWS).
    Queued,
}

impl PrivacyContext {
    fn kyc_keys(&self) -> ApiResult<&KycKeys> {
        self.kyc_keys
            .as_deref()
            .ok_or_else(|| ApiError::Internal("KYC keys are not configured for this function".into()))
    }

    fn blobs(&self) -> ApiResult<&dyn BlobStore> {
        self.blobs
            .as_deref()
            .ok_or_else(|| ApiError::Internal("blob storage is not configured for this function".into()))
    }
}

const REQUEST_PREFIX: &str = schema::prefix::PRIVACY_REQUEST;
const EXPORT_PREFIX: &str = schema::prefix::EXPORT;
const PENDING_CLOSURES_PK: &str = schema::PENDING_CLOSURES_PK;
/// Closing transactions retried when the wallet moved (a call settling) between the read and the write.
const CLOSE_ATTEMPTS: usize = 5;
