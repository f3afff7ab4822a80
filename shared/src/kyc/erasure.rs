//! The one-time erasure of the full Aadhaar numbers held before DigiLocker (Aadhaar Act s.8A(4)(b) and s.29,
//! and the UIDAI Aadhaar Data Vault circular of 2017 leave storing them to licensed entities; DPDP Act
//! s.8(7): erase what the purpose no longer needs). Run by the jobs until it is done: it walks the vault
//! table in key order, and for each legacy Aadhaar entry deletes the entry, the claim built on its
//! fingerprint and the record's references to both in one transaction, keeping the last four digits. Its
//! place (`MIGRATION#aadhaar-erasure` / `CURSOR`) is saved after every page, so a run killed at any moment
//! resumes where the last page ended, and an entry erased twice is no error (idempotent).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::store::KycStore;
use super::{DocumentKind, KYC_SK, KycRecord, VaultEntry};
use crate::accounts::user_pk;
use crate::error::ApiResult;
use crate::store::schema::{self, kyc_claim_pk, vault_pk};
use crate::store::{Condition, Delete, Item, ItemStore, Put, StoreError, Table, WriteOp};

const PAGE: u32 = 100;
const CURSOR_SK: &str = schema::sk::CURSOR;

/// Where the erasure stands, as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErasureState {
    /// The last vault item looked at.
    pub after: Option<(String, String)>,
    /// Aadhaar numbers erased so far.
    pub erased: u64,
    pub done_at: Option<DateTime<Utc>>,
}

/// The erasure's state (what `GET /v1/admin/...` and the jobs' report show).
pub async fn state(store: &dyn ItemStore) -> ApiResult<ErasureState> {
    let item = store.get(Table::Main, schema::AADHAAR_ERASURE_PK, CURSOR_SK).await?;
    Ok(item.map(|i| i.record()).transpose()?.unwrap_or_default())
}

async fn save_state(store: &dyn ItemStore, state: &ErasureState, now: DateTime<Utc>) -> ApiResult<()> {
    let expires_at = (now + crate::retention::MIGRATION_RECORD_LIFETIME).timestamp();
    let item = Item::from_record(schema::AADHAAR_ERASURE_PK, CURSOR_SK, state, Some(expires_at))?;
    store.put(Put { table: Table::Main, item, condition: Condition::Always }).await?;
    Ok(())
}

/// One run: at most `pages` pages of the vault table. Returns the state after it (`done_at` once the whole
/// table was walked).
pub async fn run(store: &dyn ItemStore, now: DateTime<Utc>, pages: usize) -> ApiResult<ErasureState> {
    run_pages(store, now, pages, PAGE).await
}

/// As [`run`], with pages of `page_size` items.
pub async fn run_pages(
    store: &dyn ItemStore,
    now: DateTime<Utc>,
    pages: usize,
    page_size: u32,
) -> ApiResult<ErasureState> {
    let mut state = state(store).await?;
    if state.done_at.is_some() {
        return Ok(state);
    }
    for _ in 0..pages {
        let page = store.scan(Table::Vault, page_size, state.after.clone()).await?;
        for item in &page.items {
            if erase_entry(store, item, now).await? {
                state.erased += 1;
            }
        }
        state.after = page.next.clone();
        if page.next.is_none() {
            state.done_at = Some(now);
        }
        save_state(store, &state, now).await?;
        if state.done_at.is_some() {
            tracing::info!(erased = state.erased, "every legacy Aadhaar number is erased");
            break;
        }
    }
    Ok(state)
}

/// How often one entry is tried when its record keeps changing under the erasure.
const ATTEMPTS: usize = 5;

/// Erases one vault item if it is a legacy Aadhaar entry; true when it was. A record that keeps changing
/// is read again; one that changes [`ATTEMPTS`] times in a row fails the run, whose saved place is the
/// page before, so the next run tries it again (never skipped).
async fn erase_entry(store: &dyn ItemStore, item: &Item, now: DateTime<Utc>) -> ApiResult<bool> {
    let Ok(entry) = item.record::<VaultEntry>() else { return Ok(false) };
    if entry.kind != DocumentKind::Aadhaar {
        return Ok(false);
    }
    for _ in 0..ATTEMPTS {
        match store.transact(erasure_ops(store, item, &entry.user_id, now).await?).await {
            Err(StoreError::ConditionFailed) => continue,
            other => return other.map(|()| true).map_err(Into::into),
        }
    }
    Err(crate::error::ApiError::Internal(
        "a legacy Aadhaar entry's record kept changing; the next run tries again".into(),
    ))
}

/// The writes that erase one legacy entry: the entry; and, when its record points at it, the record's
/// references and the claim on the number's fingerprint if this account holds it (a claim another account
/// holds is that account's own record's to release).
async fn erasure_ops(store: &dyn ItemStore, item: &Item, user_id: &str, now: DateTime<Utc>) -> ApiResult<Vec<WriteOp>> {
    let reference = item.pk.strip_prefix(&vault_pk("")).unwrap_or_default().to_owned();
    let delete_entry = WriteOp::Delete(Delete {
        table: Table::Vault,
        pk: item.pk.clone(),
        sk: item.sk.clone(),
        condition: Condition::Always,
    });
    let raw = store.get(Table::Main, &user_pk(user_id), KYC_SK).await?;
    let record = raw.as_ref().map(Item::record::<KycRecord>).transpose()?;
    let (Some(raw), Some(record)) = (raw, record.filter(|r| r.aadhaar_ref.as_deref() == Some(reference.as_str())))
    else {
        // No record points at it (replaced, or its account's data already gone): the entry alone goes.
        return Ok(vec![delete_entry]);
    };
    let mut ops = vec![delete_entry, record_update(&record, raw.expires_at, now)?];
    if let Some(fingerprint) = &record.aadhaar_fingerprint
        && store.claim_holder(fingerprint).await?.as_deref() == Some(user_id)
    {
        ops.push(WriteOp::Delete(Delete {
            table: Table::Main,
            pk: kyc_claim_pk(fingerprint),
            sk: schema::sk::CLAIM.into(),
            condition: Condition::AbsentOrEquals("user_id".into(), json!(record.user_id)),
        }));
    }
    Ok(ops)
}

/// The record without its references to the number: the last four digits stay, and so does the expiry a
/// closed account's record carries.
fn record_update(record: &KycRecord, expires_at: Option<i64>, now: DateTime<Utc>) -> ApiResult<WriteOp> {
    let mut erased = record.clone();
    erased.aadhaar_ref = None;
    erased.aadhaar_fingerprint = None;
    erased.legacy_aadhaar_erased_at = Some(now);
    erased.revision += 1;
    let item = Item::from_record(user_pk(&record.user_id), KYC_SK, &erased, expires_at)?;
    let condition = Condition::AttrEquals("revision".into(), json!(record.revision));
    Ok(WriteOp::Put(Put { table: Table::Main, item, condition }))
}
