//! Messages to many accounts: the policy update notice (every open account that has not accepted the new
//! version, once per version) and product news (only accounts with marketing consent, once per campaign).
//!
//! Both walk the registry of open accounts (`ACCOUNTS` / `<user id>`). Each account's message is written
//! with a "must not exist" marker `NOTICE#<what>` / `<user id>` in one transaction, so a rerun, a retried
//! job or two jobs at once never send an account the same notice twice. A run stops at its budget and
//! records where (`NOTICE#<what>` / `COMPLETE`, `complete: false, after`); the next one carries on from
//! there, and `complete: true` ends the walking.

use crate::error::ErrorCode;
use crate::ports::Ports;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{MailKind, OutboxMail, enqueue};
use crate::accounts::{Account, AccountStatus, AccountStore, require_active};
use crate::error::{ApiError, ApiResult};
use crate::retention::NOTICE_LIFETIME;
use crate::store::schema::{self, sk};
use crate::store::{Condition, Conditional, Item, ItemStore, Put, Table, WriteOp};

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NoticeReport {
    /// Messages queued by this run.
    pub queued: usize,
    /// Every account has been handled (now or before).
    pub complete: bool,
}

/// Product news written by an operator.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Campaign {
    /// The campaign's id: sending the same id again reaches nobody twice.
    pub id: String,
    pub subject: String,
    pub body: String,
}

impl Campaign {
    pub fn check(&self) -> ApiResult<()> {
        let valid_id = !self.id.is_empty()
            && self.id.len() <= 64
            && self.id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid_id {
            return Err(ApiError::invalid(ErrorCode::InvalidCampaign, "id", "id must be 1-64 letters, digits, - or _"));
        }
        if self.subject.trim().is_empty() || self.subject.chars().count() > 150 {
            return Err(ApiError::invalid(ErrorCode::InvalidCampaign, "subject", "subject must be 1-150 characters"));
        }
        if self.body.trim().is_empty() || self.body.chars().count() > 5000 {
            return Err(ApiError::invalid(ErrorCode::InvalidCampaign, "body", "body must be 1-5000 characters"));
        }
        Ok(())
    }
}

/// Sends the policy update notice for the configured version to every open account that accepted an older
/// one, with the version's effective date.
pub async fn announce_policy(
    ports: &Ports,
    now: DateTime<Utc>,
    budget: std::time::Duration,
) -> ApiResult<NoticeReport> {
    let store = ports.store();
    let config = ports.config();
    let version = config.policy_version.clone();
    let effective = config.policy_effective_date.clone();
    let what = format!("policy-{version}");
    walk(store, &what, now, budget, |account| {
        (account.accepted_policy_version != version).then(|| {
            OutboxMail::new(MailKind::PolicyUpdate, &account.id, now)
                .param("version", version.clone())
                .param("effective_date", effective.clone())
        })
    })
    .await
}

/// Queues product news for every open account with marketing consent (checked again at delivery).
pub async fn send_campaign<S: ItemStore + ?Sized>(
    store: &S,
    campaign: &Campaign,
    now: DateTime<Utc>,
    budget: std::time::Duration,
) -> ApiResult<NoticeReport> {
    campaign.check()?;
    let what = format!("campaign-{}", campaign.id);
    walk(store, &what, now, budget, |account| {
        account.marketing_consent.then(|| {
            OutboxMail::new(MailKind::ProductNews, &account.id, now)
                .param("subject", campaign.subject.clone())
                .param("body", campaign.body.clone())
                .param("campaign", campaign.id.clone())
        })
    })
    .await
}

async fn walk<S: ItemStore + ?Sized>(
    store: &S,
    what: &str,
    now: DateTime<Utc>,
    budget: std::time::Duration,
    message_for: impl Fn(&Account) -> Option<OutboxMail>,
) -> ApiResult<NoticeReport> {
    let marker_pk = schema::notice_pk(what);
    let expires_at = (now + NOTICE_LIFETIME).timestamp();
    // The walk's progress: complete, or where the last run stopped (so a run never walks again what an
    // earlier one covered, however many accounts there are).
    let progress = store.get(Table::Main, &marker_pk, sk::COMPLETE).await?;
    if progress.as_ref().and_then(|p| p.attrs.get("complete")) == Some(&json!(true)) {
        return Ok(NoticeReport { queued: 0, complete: true });
    }
    let save = |after: Option<String>, complete: bool| -> crate::store::StoreResult<Put> {
        Ok(Put {
            table: Table::Main,
            item: Item::from_record(
                &marker_pk,
                sk::COMPLETE,
                &json!({ "complete": complete, "after": after, "at": now }),
                Some(expires_at),
            )?,
            condition: Condition::Always,
        })
    };
    let started = Instant::now();
    let mut report = NoticeReport::default();
    let mut after = progress.and_then(|p| p.attrs.get("after").and_then(|a| a.as_str()).map(str::to_owned));
    loop {
        let page = crate::accounts::registry_page(store, after.clone()).await?;
        for entry in &page.items {
            if started.elapsed() > budget {
                store.put(save(after, false)?).await?;
                return Ok(report);
            }
            after = Some(entry.sk.clone());
            let Some(account) = store.account(&entry.sk).await?.filter(|a| a.status == AccountStatus::Active) else {
                continue;
            };
            let Some(mail) = message_for(&account) else { continue };
            let marker = Put {
                table: Table::Main,
                item: Item::from_record(
                    &marker_pk,
                    &account.id,
                    &json!({ "message_id": mail.id, "at": now }),
                    Some(expires_at),
                )?,
                condition: Condition::NotExists,
            };
            // Not applied: this account has it already, or closed meanwhile.
            let ops = vec![WriteOp::Put(marker), enqueue(&mail)?, require_active(&account.id)];
            if store.transact(ops).await.applied()?.is_some() {
                report.queued += 1;
            }
        }
        if page.next.is_none() {
            break;
        }
        store.put(save(after.clone(), false)?).await?;
    }
    store.put(save(None, true)?).await?;
    report.complete = true;
    Ok(report)
}
