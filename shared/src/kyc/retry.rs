//! The jobs' part of KYC: a PAN check the provider did not answer is asked again, a DigiLocker session the
//! customer did not come back from is fetched, from the index of records waiting for the provider (never by
//! scanning), within a budget per run.

use chrono::Duration;
use serde::Serialize;

use super::steps::StepStatus;
use super::store::{KycStore, drop_index_entry, index_page, index_sk, waits_for_provider};
use super::submit::{ask_provider, save_after_answer, settle};
use super::{DocumentKind, KycContext, KycRecord, reveal};
use crate::accounts::AccountStore;
use crate::error::{ApiError, ApiResult};
use crate::store::schema;

/// After this long without an answer a PAN check fails (the customer may submit again); until then it is
/// asked again on every run.
pub const GIVE_UP_AFTER: Duration = Duration::days(3);
const UNREACHABLE: &str =
    "the Income Tax Department's records could not be reached for three days; submit your PAN again";
const PAGE: u32 = 50;

/// A check made (or a session started) this recently is left alone: the request that made it may still be
/// waiting for its answer.
const SETTLING: Duration = Duration::minutes(2);

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RetryReport {
    /// Records the provider was asked about again.
    pub asked: usize,
    /// Records whose check was given up.
    pub given_up: usize,
    /// Records that failed on our side (logged; asked again on the next run).
    pub failed: usize,
}

/// One pass over the records waiting for the provider, oldest first, for at most `budget` (what is left
/// waits for the next run). One record's failure does not stop the others.
pub async fn retry_pending_checks(ctx: &KycContext<'_>, budget: std::time::Duration) -> ApiResult<RetryReport> {
    let store = ctx.ports.store();
    let started = std::time::Instant::now();
    let mut report = RetryReport::default();
    let mut after = None;
    loop {
        let (entries, next) = index_page(store, schema::KYC_RETRY_PK, PAGE, after).await?;
        for (user_id, entry) in &entries {
            let Some(record) = waiting(ctx, user_id, &entry.sk).await? else {
                drop_index_entry(store, entry).await;
                continue;
            };
            if settling(ctx, &record) {
                continue;
            }
            if started.elapsed() >= budget {
                return Ok(report);
            }
            report.asked += 1;
            match retry_one(ctx, record).await {
                Ok(true) => report.given_up += 1,
                Ok(false) => {}
                Err(e) => {
                    report.failed += 1;
                    tracing::error!(%user_id, error = %e, "a KYC check could not be asked again; the next run tries again");
                }
            }
        }
        match next {
            Some(cursor) => after = Some(cursor),
            None => break,
        }
    }
    Ok(report)
}

/// The record an index entry names, if it still waits for the provider and its account is open.
async fn waiting(ctx: &KycContext<'_>, user_id: &str, sk: &str) -> ApiResult<Option<KycRecord>> {
    let store = ctx.ports.store();
    let record = store.kyc_record(user_id).await?.filter(|r| waits_for_provider(r) && index_sk(r) == sk);
    let Some(record) = record else { return Ok(None) };
    let open = store.account(user_id).await?.is_some_and(|a| a.status == crate::accounts::AccountStatus::Active);
    Ok(open.then_some(record))
}

fn settling(ctx: &KycContext<'_>, record: &KycRecord) -> bool {
    let asked = record.pan.checked_at.unwrap_or(record.submitted_at);
    let last = record.pan.requested_at.map_or(asked, |requested| requested.max(asked));
    record.pan.status == StepStatus::Pending && ctx.ports.now() - last < SETTLING
}

/// Asks again about one record; true when its PAN check was given up.
async fn retry_one(ctx: &KycContext<'_>, record: KycRecord) -> ApiResult<bool> {
    if record.aadhaar.status == StepStatus::Pending
        && let Some(verification_id) = record.aadhaar.verification_id.clone()
        && let Err(e) = super::complete_digilocker(ctx, &verification_id).await
    {
        tracing::warn!(user_id = %record.user_id, error = %e, "a DigiLocker session could not be fetched; the next run tries again");
    }
    let store = ctx.ports.store();
    let Some(record) = store.kyc_record(&record.user_id).await? else { return Ok(false) };
    if record.pan.status != StepStatus::Pending {
        return Ok(false);
    }
    if ctx.ports.now() - record.pan.requested_at.unwrap_or(record.submitted_at) > GIVE_UP_AFTER {
        let mut failed = record.clone();
        failed.pan.status = StepStatus::Failed;
        failed.rejection_reason = Some(UNREACHABLE.to_owned());
        settle(ctx, &mut failed);
        save_after_answer(ctx, &failed, &record).await?;
        return Ok(true);
    }
    let account = store.account(&record.user_id).await?;
    let account = account.ok_or_else(|| ApiError::Internal("the account vanished".into()))?;
    let pan = reveal(store, ctx.keys, &record, DocumentKind::Pan).await?;
    let pan = pan.ok_or_else(|| ApiError::Internal("a pending PAN has no vault entry".into()))?;
    ask_provider(ctx, record, &pan, account.date_of_birth).await?;
    Ok(false)
}
