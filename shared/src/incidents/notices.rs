//! Security notices: what the DPDP Rules, 2025 (rule 7(1)) ask each affected person be told of a breach, in
//! plain words and without delay: what happened (its nature, extent, timing and location), the
//! consequences likely for them, what we did and are doing, what they can do, and who answers their
//! questions. It is account mail: it goes whatever their marketing choice, to closed accounts' last address
//! too.
//!
//! The people are chosen by their ids or by what the incident touched in a time window (accounts with a
//! successful sign-in, an API key created or used, or a KYC decision or reveal in it; open accounts, walked
//! through the registry). A preview (`dry_run`) counts them and shows the message; sending writes each one
//! message and a marker `NOTICE#security-<incident>-<notice>` / `<user id>` in one transaction (a resend,
//! or a run carried on after its budget, reaches nobody twice), and records on the incident who sent it,
//! when and to how many. Every message stays in the outbox and the delivery records like any other.

use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Event, EventKind, add_event, text};
use crate::accounts::{Account, AccountStore};
use crate::auth::LoginStore;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::keys::KeyStore;
use crate::notifications::{MailKind, OutboxMail, enqueue};
use crate::ports::Ports;
use crate::retention::NOTICE_LIFETIME;
use crate::store::schema;
use crate::store::{Condition, Conditional, Item, Put, Table, WriteOp};

/// People named at most, by id, in one notice.
pub const MAX_NAMED: usize = 1000;
/// Ids a preview shows.
const SAMPLE: usize = 20;

/// What the message says (rule 7(1)(a) to (e)), each 1 to 2,000 characters.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityMessage {
    pub what_happened: String,
    pub when: String,
    pub data: String,
    pub consequences: String,
    pub measures: String,
    pub safety: String,
    pub contact: String,
}

/// What the incident touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Touch {
    Sessions,
    ApiKeys,
    Kyc,
}

/// Who is told.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Recipients {
    UserIds(Vec<String>),
    Touched { what: Vec<Touch>, from: DateTime<Utc>, to: DateTime<Utc> },
}

/// One notice of an incident.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityNotice {
    /// Sending the same id again reaches nobody twice.
    pub notice_id: String,
    pub recipients: Recipients,
    pub message: SecurityMessage,
    /// Count and show, send nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// What a preview or a send did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NoticeOutcome {
    /// Accounts it goes to (a preview), or messages queued by this run (a send).
    pub recipients: usize,
    pub sample_user_ids: Vec<String>,
    /// Every account was considered; `false`: send (or preview) again to carry on.
    pub complete: bool,
    pub subject: String,
}

impl SecurityNotice {
    fn check(&self) -> ApiResult<SecurityMessage> {
        let valid_id = !self.notice_id.is_empty()
            && self.notice_id.len() <= 64
            && self.notice_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid_id {
            let message = "notice_id must be 1-64 letters, digits, - or _";
            return Err(ApiError::invalid(ErrorCode::InvalidIncident, "notice_id", message));
        }
        match &self.recipients {
            Recipients::UserIds(ids) if ids.is_empty() || ids.len() > MAX_NAMED => {
                let message = format!("recipients.user_ids must name 1 to {MAX_NAMED} accounts");
                return Err(ApiError::invalid(ErrorCode::InvalidIncident, "recipients", message));
            }
            Recipients::Touched { what, from, to } if what.is_empty() || from >= to => {
                let message = "recipients.touched needs what (sessions, api_keys, kyc) and from before to";
                return Err(ApiError::invalid(ErrorCode::InvalidIncident, "recipients", message));
            }
            _ => {}
        }
        let m = &self.message;
        Ok(SecurityMessage {
            what_happened: text(&m.what_happened, "message.what_happened")?,
            when: text(&m.when, "message.when")?,
            data: text(&m.data, "message.data")?,
            consequences: text(&m.consequences, "message.consequences")?,
            measures: text(&m.measures, "message.measures")?,
            safety: text(&m.safety, "message.safety")?,
            contact: text(&m.contact, "message.contact")?,
        })
    }
}

/// Whether the incident touched this account in the window.
async fn touched(
    ports: &Ports,
    account: &Account,
    what: &[Touch],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> ApiResult<bool> {
    let store = ports.store();
    let within = |at: DateTime<Utc>| at >= from && at <= to;
    for touch in what {
        let hit = match touch {
            Touch::Sessions => store.login_history(&account.id, 1000).await?.iter().any(|l| l.success && within(l.at)),
            Touch::ApiKeys => store
                .keys(&account.id)
                .await?
                .iter()
                .any(|(_, k)| within(k.created_at) || k.last_used_at.is_some_and(within)),
            Touch::Kyc => crate::kyc::decisions(store, &account.id).await?.iter().any(|d| {
                d.get("at")
                    .and_then(|a| a.as_str())
                    .and_then(|a| DateTime::parse_from_rfc3339(a).ok())
                    .is_some_and(|a| within(a.to_utc()))
            }),
        };
        if hit {
            return Ok(true);
        }
    }
    Ok(false)
}

fn mail(incident_id: &str, message: &SecurityMessage, user_id: &str, now: DateTime<Utc>) -> OutboxMail {
    OutboxMail::new(MailKind::SecurityNotice, user_id, now)
        .param("incident", incident_id.to_owned())
        .param("what_happened", message.what_happened.clone())
        .param("when", message.when.clone())
        .param("data", message.data.clone())
        .param("consequences", message.consequences.clone())
        .param("measures", message.measures.clone())
        .param("safety", message.safety.clone())
        .param("contact", message.contact.clone())
}

/// Queues the notice to one account once; whether it was queued now.
async fn queue_one(ports: &Ports, marker_pk: &str, mail: &OutboxMail, by: &str, now: DateTime<Utc>) -> ApiResult<bool> {
    let marker = Item::from_record(
        marker_pk,
        &mail.user_id,
        &json!({ "message_id": mail.id, "by": by, "at": now }),
        Some((now + NOTICE_LIFETIME).timestamp()),
    )?;
    let ops =
        vec![WriteOp::Put(Put { table: Table::Main, item: marker, condition: Condition::NotExists }), enqueue(mail)?];
    Ok(ports.store().transact(ops).await.applied()?.is_some())
}

/// Where a send stands, kept with its markers (`NOTICE#…` / `COMPLETE`): the recipients it was sent to (a
/// digest), where it stopped, and how many it has queued.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Progress {
    recipients: String,
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    queued: usize,
    #[serde(default)]
    complete: bool,
}

/// Previews (`dry_run`) or sends an incident's security notice, within `budget`. A send that meets its budget
/// saves where it stopped; sending the same notice again carries on from there, and the incident records
/// the send once it has reached everyone. A `notice_id` keeps the recipients it was first sent to.
pub async fn send_notice(
    ports: &Ports,
    incident_id: &str,
    notice: SecurityNotice,
    by: &str,
    budget: std::time::Duration,
) -> ApiResult<NoticeOutcome> {
    let store = ports.store();
    super::get(store, incident_id).await?;
    let message = notice.check()?;
    let now = ports.clock().now();
    let run = Run {
        ports,
        incident_id,
        message: &message,
        by,
        now,
        dry_run: notice.dry_run,
        marker_pk: schema::notice_pk(&format!("security-{incident_id}-{}", notice.notice_id)),
        started: Instant::now(),
        budget,
    };
    let mut progress = run.progress(&notice.recipients).await?;
    let subject = crate::notifications::messages::SECURITY_NOTICE_SUBJECT.to_owned();
    let mut outcome = NoticeOutcome { subject, complete: true, ..Default::default() };
    if progress.complete {
        return Ok(outcome);
    }
    outcome.complete = match &notice.recipients {
        Recipients::UserIds(ids) => run.named(ids, &mut progress, &mut outcome).await?,
        Recipients::Touched { what, from, to } => run.walk(what, (*from, *to), &mut progress, &mut outcome).await?,
    };
    if !notice.dry_run {
        progress.queued += outcome.recipients;
        progress.complete = outcome.complete;
        run.save(&progress).await?;
        if outcome.complete {
            let note = format!("notice {} queued to {} accounts", notice.notice_id, progress.queued);
            let event = Event { kind: EventKind::NoticeSent, at: now, recorded_at: now, by: by.to_owned(), note };
            add_event(ports, incident_id, event).await?;
        }
    }
    Ok(outcome)
}

/// One preview or send of a notice.
struct Run<'a> {
    ports: &'a Ports,
    incident_id: &'a str,
    message: &'a SecurityMessage,
    by: &'a str,
    now: DateTime<Utc>,
    dry_run: bool,
    marker_pk: String,
    started: Instant,
    budget: std::time::Duration,
}

impl Run<'_> {
    /// Where this notice's sends stand (a preview always starts afresh); refused when the same `notice_id`
    /// was sent to other recipients.
    async fn progress(&self, recipients: &Recipients) -> ApiResult<Progress> {
        let digest = crate::secrets::sha256_hex(&serde_json::to_string(recipients).unwrap_or_default());
        let fresh = Progress { recipients: digest.clone(), ..Progress::default() };
        if self.dry_run {
            return Ok(fresh);
        }
        let Some(item) = self.ports.store().get(Table::Main, &self.marker_pk, schema::sk::COMPLETE).await? else {
            return Ok(fresh);
        };
        let progress: Progress = item.record()?;
        if progress.recipients != digest {
            let message = "this notice_id was sent to other recipients; a notice to others needs a new notice_id";
            return Err(ApiError::invalid(ErrorCode::InvalidIncident, "notice_id", message));
        }
        Ok(progress)
    }

    fn out_of_time(&self) -> bool {
        self.started.elapsed() > self.budget
    }

    /// Counts the account (a preview) or queues its message once (a send).
    async fn reach(&self, account: &Account, outcome: &mut NoticeOutcome) -> ApiResult<()> {
        let mail = mail(self.incident_id, self.message, &account.id, self.now);
        let reached = self.dry_run || queue_one(self.ports, &self.marker_pk, &mail, self.by, self.now).await?;
        if reached {
            outcome.recipients += 1;
            if outcome.sample_user_ids.len() < SAMPLE {
                outcome.sample_user_ids.push(account.id.clone());
            }
        }
        Ok(())
    }

    /// Reaches the named accounts from where an earlier send stopped; whether all were reached.
    async fn named(&self, ids: &[String], progress: &mut Progress, outcome: &mut NoticeOutcome) -> ApiResult<bool> {
        let store = self.ports.store();
        let start = progress.after.as_deref().and_then(|a| a.parse::<usize>().ok()).unwrap_or(0);
        for (index, id) in ids.iter().enumerate().skip(start) {
            if self.out_of_time() {
                progress.after = Some(index.to_string());
                return Ok(false);
            }
            let account = store.account(id).await?.ok_or_else(|| {
                ApiError::invalid(ErrorCode::InvalidIncident, "recipients", format!("no account {id}"))
            })?;
            self.reach(&account, outcome).await?;
        }
        progress.after = None;
        Ok(true)
    }

    /// Walks the registry of open accounts from where an earlier send stopped, reaching those the incident
    /// touched; whether the walk is complete.
    async fn walk(
        &self,
        what: &[Touch],
        window: (DateTime<Utc>, DateTime<Utc>),
        progress: &mut Progress,
        outcome: &mut NoticeOutcome,
    ) -> ApiResult<bool> {
        let store = self.ports.store();
        loop {
            let page = crate::accounts::registry_page(store, progress.after.clone()).await?;
            for entry in &page.items {
                if self.out_of_time() {
                    return Ok(false);
                }
                if let Some(account) = store.account(&entry.sk).await?
                    && touched(self.ports, &account, what, window.0, window.1).await?
                {
                    self.reach(&account, outcome).await?;
                }
                progress.after = Some(entry.sk.clone());
            }
            if page.next.is_none() {
                progress.after = None;
                return Ok(true);
            }
        }
    }

    /// Saves where a send stands.
    async fn save(&self, progress: &Progress) -> ApiResult<()> {
        let expires = (self.now + NOTICE_LIFETIME).timestamp();
        let item = Item::from_record(&self.marker_pk, schema::sk::COMPLETE, progress, Some(expires))?;
        self.ports.store().put(Put { table: Table::Main, item, condition: Condition::Always }).await?;
        Ok(())
    }
}
