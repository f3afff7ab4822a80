//! Usage logs: the entry each settled call writes (`entry_put`, in the settlement's transaction), and how
//! the account sees them: a filtered, newest-first list and per-day or per-model summaries. Entries live at
//! `USER#<id>` / `USAGE#<millis>#<rand>` for 12 months.

use crate::error::ErrorCode;
use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::accounts::{timestamp, today_in_india, user_pk};
use crate::error::{ApiError, ApiResult};
use crate::money::format_inr;
use crate::store::{Condition, Item, ItemStore, Put, Query, SortKeyRange, StoreResult, Table, WriteOp};

const USAGE_PREFIX: &str = crate::store::schema::prefix::USAGE;
/// How many stored entries one summary may read (about 12 months of a busy account's traffic would be
/// more; summaries over such ranges should use shorter windows).
const SUMMARY_SCAN_LIMIT: usize = 200_000;

/// What a call used, as logged (never any prompt or completion text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRecord {
    pub id: String,
    pub key_id: String,
    pub model: String,
    pub provider: String,
    /// Where the provider ran the call (ISO 3166 alpha-2); empty when not known (a call the sweeper
    /// settled, or logged before it was recorded), and then not stored.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub country: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    /// Charged, in wallet units.
    pub cost: i64,
    pub latency_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<u64>,
    pub status: String,
    pub estimated: bool,
    /// How much of `cost` exceeded the hold (a provider report above the request's bound); 0 normally.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub over_hold: i64,
    pub created_at: DateTime<Utc>,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// The usage entry of the call settled under hold `hold_id` (`<millis>_<rand>` becomes `USAGE#<millis>#<rand>`):
/// one entry per hold, whoever settles it.
fn entry_sort_key(hold_id: &str) -> String {
    crate::store::schema::prefixed(USAGE_PREFIX, &hold_id.replacen('_', "#", 1))
}

/// Writes a call's usage entry, in the settlement's transaction; fails there if the hold's entry exists.
pub(crate) fn entry_put(user_id: &str, hold_id: &str, record: &UsageRecord, expires_at: i64) -> StoreResult<WriteOp> {
    Ok(WriteOp::Put(Put {
        table: Table::Main,
        item: Item::from_record(user_pk(user_id), entry_sort_key(hold_id), record, Some(expires_at))?,
        condition: Condition::NotExists,
    }))
}

/// The usage entry written for hold `hold_id`, if its settlement committed.
pub(crate) async fn entry<S: ItemStore + ?Sized>(
    store: &S,
    user_id: &str,
    hold_id: &str,
) -> StoreResult<Option<UsageRecord>> {
    store.get(Table::Main, &user_pk(user_id), &entry_sort_key(hold_id)).await?.map(|i| i.record()).transpose()
}

/// Query parameters shared by the list and the summary.
#[derive(Debug, Deserialize, Default)]
pub struct UsageQuery {
    pub from: Option<String>,
    pub to: Option<String>,
    pub model: Option<String>,
    pub key_id: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    pub group_by: Option<String>,
}

fn parse_time(raw: &str, param: &str) -> ApiResult<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(raw.trim())
        .map(|d| d.to_utc())
        .map_err(|_| ApiError::invalid(ErrorCode::InvalidTime, param, format!("{param} must be an RFC 3339 timestamp")))
}

/// The `[from, to]` window: defaults to the last 30 days.
/// Every usage record of the account, as the API shows them (for its export).
pub async fn export_for(store: &dyn ItemStore, user_id: &str) -> StoreResult<Vec<UsageView>> {
    let items = crate::store::user_items(store, user_id, USAGE_PREFIX).await?;
    items.iter().map(|item| item.record::<UsageRecord>().map(|record| UsageView::from(&record))).collect()
}

/// A page cursor of `GET /v1/usage`, checked: it must name one of the account's usage records.
pub fn page_cursor(cursor: Option<&str>) -> crate::error::ApiResult<Option<String>> {
    crate::pages::decode_cursor(cursor, USAGE_PREFIX)
}

pub fn window(query: &UsageQuery, now: DateTime<Utc>) -> ApiResult<(DateTime<Utc>, DateTime<Utc>)> {
    let to = query.to.as_deref().map(|t| parse_time(t, "to")).transpose()?.unwrap_or(now);
    let from = query.from.as_deref().map(|f| parse_time(f, "from")).transpose()?.unwrap_or(to - Duration::days(30));
    if from > to {
        return Err(ApiError::invalid(ErrorCode::InvalidTime, "from", "from must not be after to"));
    }
    Ok((from, to))
}

fn range(from: DateTime<Utc>, to: DateTime<Utc>) -> SortKeyRange {
    SortKeyRange::Between(
        format!("{USAGE_PREFIX}{:013}", from.timestamp_millis().max(0)),
        format!("{USAGE_PREFIX}{:013}#~", to.timestamp_millis().max(0)),
    )
}

/// How the API shows a usage entry.
#[derive(Debug, Clone, Serialize)]
pub struct UsageView {
    pub id: String,
    pub key_id: String,
    pub model: String,
    pub provider: String,
    /// The provider's country (ISO 3166 alpha-2).
    pub country: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub cost: i64,
    pub cost_inr: String,
    pub latency_ms: u64,
    pub ttft_ms: Option<u64>,
    pub status: String,
    pub estimated: bool,
    pub created_at: String,
}

impl From<&UsageRecord> for UsageView {
    fn from(r: &UsageRecord) -> Self {
        Self {
            id: r.id.clone(),
            key_id: r.key_id.clone(),
            model: r.model.clone(),
            provider: r.provider.clone(),
            country: r.country.clone(),
            prompt_tokens: r.prompt_tokens,
            completion_tokens: r.completion_tokens,
            total_tokens: r.total_tokens,
            cost: r.cost,
            cost_inr: format_inr(r.cost),
            latency_ms: r.latency_ms,
            ttft_ms: r.ttft_ms,
            status: r.status.clone(),
            estimated: r.estimated,
            created_at: timestamp(r.created_at),
        }
    }
}

fn matches(record: &UsageRecord, query: &UsageQuery) -> bool {
    query.model.as_deref().is_none_or(|m| record.model == m)
        && query.key_id.as_deref().is_none_or(|k| record.key_id == k)
}

/// One page of matching entries, newest first, and the sort key to continue after.
pub async fn list<S: ItemStore + ?Sized>(
    store: &S,
    user_id: &str,
    query: &UsageQuery,
    now: DateTime<Utc>,
    after: Option<String>,
) -> ApiResult<(Vec<UsageRecord>, Option<String>)> {
    let limit = query.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid(ErrorCode::InvalidLimit, "limit", "limit must be between 1 and 100"));
    }
    let (from, to) = window(query, now)?;
    let mut found = Vec::new();
    let mut after = after;
    // Filters apply after the range query, so keep reading until the page is full or the range ends.
    loop {
        let page = store
            .query(
                Query::new(Table::Main, user_pk(user_id))
                    .range(range(from, to))
                    .newest_first()
                    .limit(200)
                    .after(after.clone()),
            )
            .await?;
        for item in &page.items {
            let record: UsageRecord = item.record()?;
            if matches(&record, query) {
                found.push((item.sk.clone(), record));
                if found.len() == limit as usize {
                    let next = found.last().map(|(sk, _)| sk.clone());
                    return Ok((found.into_iter().map(|(_, r)| r).collect(), next));
                }
            }
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok((found.into_iter().map(|(_, r)| r).collect(), None)),
        }
    }
}

/// Totals for one group.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Totals {
    pub group: String,
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub cost: i64,
    pub cost_inr: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    /// Calendar days in India (IST).
    Day,
    Model,
}

pub fn group_by(query: &UsageQuery) -> ApiResult<GroupBy> {
    match query.group_by.as_deref().unwrap_or("day") {
        "day" => Ok(GroupBy::Day),
        "model" => Ok(GroupBy::Model),
        _ => Err(ApiError::invalid(ErrorCode::InvalidGroupBy, "group_by", "group_by must be day or model")),
    }
}

/// Sums requests, tokens and cost per group over the window.
pub async fn summary<S: ItemStore + ?Sized>(
    store: &S,
    user_id: &str,
    query: &UsageQuery,
    now: DateTime<Utc>,
) -> ApiResult<Vec<Totals>> {
    let grouping = group_by(query)?;
    let (from, to) = window(query, now)?;
    let mut groups: BTreeMap<String, Totals> = BTreeMap::new();
    let mut after = None;
    let mut read = 0usize;
    loop {
        let page = store
            .query(Query::new(Table::Main, user_pk(user_id)).range(range(from, to)).limit(1000).after(after))
            .await?;
        read += page.items.len();
        for record in page.items.iter().map(Item::record::<UsageRecord>).collect::<StoreResult<Vec<_>>>()? {
            if !matches(&record, query) {
                continue;
            }
            let key = match grouping {
                GroupBy::Day => today_in_india(record.created_at).to_string(),
                GroupBy::Model => record.model.clone(),
            };
            tally(&mut groups, key, &record);
        }
        after = page.next;
        if after.is_none() || read >= SUMMARY_SCAN_LIMIT {
            break;
        }
    }
    Ok(finished(groups))
}

fn tally(groups: &mut BTreeMap<String, Totals>, key: String, record: &UsageRecord) {
    let totals = groups.entry(key.clone()).or_insert_with(|| Totals { group: key, ..Totals::default() });
    totals.requests += 1;
    totals.prompt_tokens += record.prompt_tokens;
    totals.completion_tokens += record.completion_tokens;
    totals.total_tokens += record.total_tokens;
    totals.cost = totals.cost.saturating_add(record.cost);
}

fn finished(groups: BTreeMap<String, Totals>) -> Vec<Totals> {
    groups
        .into_values()
        .map(|mut t| {
            t.cost_inr = format_inr(t.cost);
            t
        })
        .collect()
}

/// An account's calls of a window summed per model, read a page at a time ([`tally_page`]), so a run
/// that stops can keep it and carry on where it stopped (a month's tax invoice of a heavy account).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ModelTally {
    /// Where the next page starts; `None` before the first page and once `done`.
    pub after: Option<String>,
    pub done: bool,
    /// Per model: tokens and cost (wallet units).
    pub models: BTreeMap<String, ModelUse>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ModelUse {
    pub tokens: u64,
    pub cost: i64,
}

/// Adds the next page (at most `page` calls) of `[from, to)` to the tally.
pub async fn tally_page<S: ItemStore + ?Sized>(
    store: &S,
    user_id: &str,
    window: (DateTime<Utc>, DateTime<Utc>),
    tally: &mut ModelTally,
    page: u32,
) -> StoreResult<()> {
    if tally.done {
        return Ok(());
    }
    let last = window.1 - Duration::milliseconds(1);
    let query =
        Query::new(Table::Main, user_pk(user_id)).range(range(window.0, last)).limit(page).after(tally.after.take());
    let read = store.query(query).await?;
    for record in read.items.iter().map(Item::record::<UsageRecord>).collect::<StoreResult<Vec<_>>>()? {
        let used = tally.models.entry(record.model).or_default();
        used.tokens = used.tokens.saturating_add(record.total_tokens);
        used.cost = used.cost.saturating_add(record.cost);
    }
    tally.done = read.next.is_none();
    tally.after = read.next;
    Ok(())
}
