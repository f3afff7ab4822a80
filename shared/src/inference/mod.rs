//! The inference gateway: authenticate the API key (cached), hold the request's maximum cost, forward to
//! the model's provider routes with fallback, read the usage the provider reports, settle, and log usage.
//! Prompts and completions pass through memory only: nothing here stores or logs their text.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::catalog::{Catalog, Model};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::keys::{KeyOwner, KeyStore, RateCounter, RateWindow};
use crate::ports::Ports;
use crate::secrets::sha256_hex;
use crate::spend;
use crate::usage::UsageRecord;
use crate::wallet::metering::{self, BalanceHints, Hold, Leases};

mod providers;
mod served;
pub use providers::{Provider, Providers};
pub use served::ServedBy;
mod back_pressure;
mod context;
mod in_flight;
mod request;
pub use request::{Endpoint, Prepared, prepare, prompt_token_bound};
mod upstream;
pub use upstream::Usage;
mod relay;
use relay::{StreamCall, relay_stream};
use upstream::{Attempt, forward, generated_bytes, reported_usage};

/// The most keys whose last use a gateway remembers (it writes `last_used_at` at most once a minute each).
const KEYS_TRACKED: usize = 100_000;
/// A revoked or expired key keeps working for at most this long (the cache's lifetime).
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(60);
/// The inference function's `Timeout` in template.yaml (a test keeps the two equal). Everything a call does
/// fits inside it, so no settlement is ever cut off by the platform.
pub const FUNCTION_TIMEOUT: Duration = Duration::from_secs(300);
/// How long settlement may keep retrying on a busy wallet.
pub const SETTLE_BUDGET: Duration = Duration::from_secs(30);
/// From the request's arrival, how long the upstream may take to answer, stream and (after a client left)
/// be drained for its usage: the function's timeout less settlement and a margin of the same size.
pub const UPSTREAM_DEADLINE: Duration = FUNCTION_TIMEOUT.saturating_sub(SETTLE_BUDGET).saturating_sub(SETTLE_BUDGET);
/// A non-streaming answer that takes longer than this is given up (within the deadline above).
const NON_STREAMING_TIMEOUT: Duration = Duration::from_secs(120);
/// The largest single SSE event read from a provider (a stream without event ends stops there).
const MAX_EVENT_BYTES: usize = 4 << 20;
/// After the client disconnects, how much longer the upstream is read to learn the usage.
const DRAIN_LIMIT_TIME: Duration = Duration::from_secs(30);
/// Largest request body accepted by the inference endpoints.
pub const MAX_INFERENCE_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Everything the inference function keeps for the life of the process.
pub struct Gateway {
    pub catalog: Catalog,
    pub providers: Providers,
    http: reqwest::Client,
    keys: Mutex<HashMap<String, (Option<KeyOwner>, Instant)>>,
    key_ttl: Duration,
    /// When each key's `last_used_at` was last written, to write it at most once a minute.
    uses: Mutex<HashMap<String, Instant>>,
    /// Latest wallet balances seen, so that concurrent requests on one wallet settle at the first try.
    balances: Arc<BalanceHints>,
    /// Busy accounts' budget leases: their calls' holds come from memory, not the store.
    leases: Leases,
    /// Whether calls may be served from leases (see [`Gateway::one_call_at_a_time`]).
    leases_on: bool,
    /// A Lambda instance's purses (see [`Gateway::one_call_at_a_time`]); without them, each call holds on
    /// the wallet itself.
    purses: Option<Arc<metering::Purses>>,
    /// Keys' rate windows this instance found full.
    rates: RateCounter,
    /// How long a non-streaming answer may take ([`NON_STREAMING_TIMEOUT`]; shorter in tests).
    answer_timeout: Duration,
}

impl Gateway {
    pub fn new(catalog: Catalog, providers: Providers) -> ApiResult<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            // Below the providers' own keep-alive (uvicorn's 5 s): a request sent on a connection the server
            // has closed fails after it was written, and such a call is charged as possibly billed.
            .pool_idle_timeout(Duration::from_secs(4))
            .tcp_nodelay(true)
            // No redirect: it could carry the prompt outside the country the catalog places the provider in.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ApiError::Internal(format!("HTTP client: {e}")))?;
        Ok(Self {
            catalog,
            providers,
            http,
            keys: Mutex::new(HashMap::new()),
            key_ttl: KEY_CACHE_TTL,
            uses: Mutex::new(HashMap::new()),
            balances: Arc::default(),
            leases: Leases::default(),
            leases_on: true,
            purses: None,
            rates: RateCounter::default(),
            answer_timeout: NON_STREAMING_TIMEOUT,
        })
    }

    /// What a key may do with this request, before the wallet is held: call this model (403
    /// `model_not_allowed`), where its residency allows (400 `residency_unavailable`), within its rate limits (429 `rate_limit_exceeded`) and its and its account's
    /// spend limits (429 `spend_limit_reached`: the call's hold is taken from their windows, kept in
    /// `prepared.spend`). Returns where the call left the key's rate window, for the answer's
    /// `x-ratelimit-*` headers.
    pub async fn admit(
        &self,
        ports: &Ports,
        owner: &KeyOwner,
        prepared: &mut Prepared,
    ) -> ApiResult<Option<RateWindow>> {
        owner.check_model(&prepared.model.id)?;
        served::check_residency(self, prepared, owner)?;
        prepared.fit_output_to(owner.rate_limits.tokens_per_minute);
        let now = ports.clock.now();
        // The slot first: a call refused for the account's concurrency uses none of its key's minute or
        // spend, and a slot is the one step that can be undone.
        let limit = owner.calls_in_flight.or(ports.config.calls_in_flight_per_account).filter(|n| *n > 0);
        if let Some(limit) = limit.map(|n| n.min(crate::account_limits::MAX_CALLS_IN_FLIGHT)) {
            let call = &prepared.request_id;
            prepared.in_flight = Some(in_flight::enter(ports.store(), &owner.user_id, limit, call, now).await?);
        }
        let admitted = self.count_and_hold(ports, owner, prepared, now).await;
        if admitted.is_err() {
            in_flight::leave(ports.store(), prepared.in_flight.as_ref()).await;
        }
        admitted
    }

    /// The key's minute (rate limits) and its and its account's spend windows (the call's hold).
    async fn count_and_hold(
        &self,
        ports: &Ports,
        owner: &KeyOwner,
        prepared: &mut Prepared,
        now: chrono::DateTime<chrono::Utc>,
    ) -> ApiResult<Option<RateWindow>> {
        let tokens = prepared.prompt_bound.saturating_add(prepared.max_tokens);
        let window = self.rates.count(ports.store.as_ref(), owner, tokens, now).await?;
        let windows = owner.limited().windows(now);
        let whose = (owner.user_id.as_str(), owner.key_id.as_str());
        prepared.spend = spend::take(ports.store(), whose, windows, call_hold_amount(prepared), now).await?;
        Ok(window)
    }

    /// For a process that serves one call at a time and is frozen between calls (a Lambda instance): no
    /// leases, so it reserves nothing but its current call's hold. A lease would stay reserved while the
    /// instance sleeps (minutes, or for ever), and a few frozen instances' leases would refuse calls the
    /// balance covers; one call at a time, a lease saves nothing anyway.
    pub fn one_call_at_a_time(mut self) -> Self {
        self.leases_on = false;
        self.purses = Some(Arc::new(metering::Purses::new()));
        self
    }

    /// Shortens how long a non-streaming answer may take (tests of a provider that never answers).
    pub fn with_answer_timeout(mut self, timeout: Duration) -> Self {
        self.answer_timeout = timeout;
        self
    }

    /// Shortens the key cache's lifetime (tests of revocation).
    pub fn with_key_cache_ttl(mut self, ttl: Duration) -> Self {
        self.key_ttl = ttl;
        self
    }

    /// Resolves a presented API key, from the cache when it was looked up in the last minute.
    pub async fn authenticate(&self, ports: &Ports, presented: Option<&str>) -> ApiResult<KeyOwner> {
        let invalid = || {
            ApiError::Unauthenticated {
            code: ErrorCode::InvalidApiKey,
            message: "Incorrect API key provided. Create a key in the dashboard and send it as `Authorization: Bearer sk-inferex-...`.".into(),
        }
        };
        let key = presented.filter(|k| k.starts_with(crate::keys::KEY_PREFIX) && k.len() < 200).ok_or_else(invalid)?;
        let hash = sha256_hex(key);
        let cached = self.keys.lock().ok().and_then(|cache| {
            cache.get(&hash).filter(|(_, at)| at.elapsed() < self.key_ttl).map(|(owner, _)| owner.clone())
        });
        let owner = match cached {
            Some(owner) => owner,
            None => {
                let mut owner = ports.store.key_owner(&hash).await?;
                if let Some(owner) = owner.as_mut() {
                    // The account's limits, read with the key: its monthly spend limit, and what its rate
                    // limits are once the account's defaults and ceiling apply.
                    let account = crate::account_limits::account_limits(ports.store(), &owner.user_id).await?;
                    owner.account_monthly_limit = account.monthly_spend;
                    owner.rate_limits = account.rate_limits_of(owner.rate_limits);
                    owner.calls_in_flight = account.calls_in_flight;
                    owner.account_residency = account.data_residency;
                }
                if let Ok(mut cache) = self.keys.lock() {
                    if cache.len() > 100_000 {
                        cache.clear();
                    }
                    cache.insert(hash, (owner.clone(), Instant::now()));
                }
                owner
            }
        };
        owner.ok_or_else(invalid)
    }

    /// Forgets the account's cached keys (their limits changed).
    pub fn forget_keys_of(&self, user_id: &str) {
        if let Ok(mut cache) = self.keys.lock() {
            cache.retain(|_, (owner, _)| owner.as_ref().is_none_or(|owner| owner.user_id != user_id));
        }
    }

    /// Updates the key's `last_used_at` in the background, at most once a minute per key.
    pub fn note_use(&self, ports: &Ports, owner: &KeyOwner) {
        let due = self.uses.lock().is_ok_and(|mut uses| {
            let due = uses.get(&owner.key_id).is_none_or(|at| at.elapsed() >= Duration::from_secs(60));
            if due {
                if uses.len() >= KEYS_TRACKED && !uses.contains_key(&owner.key_id) {
                    // Bounded: forgetting only costs a few early `last_used_at` writes.
                    uses.retain(|_, at| at.elapsed() < Duration::from_secs(60));
                    if uses.len() >= KEYS_TRACKED {
                        uses.clear();
                    }
                }
                uses.insert(owner.key_id.clone(), Instant::now());
            }
            due
        });
        if due {
            let (store, owner, at) = (ports.store.clone(), owner.clone(), ports.clock.now());
            crate::tasks::spawn("key use", async move {
                if let Err(e) = crate::keys::record_use(store.as_ref(), &owner, at).await {
                    tracing::warn!(error = %e, key_id = %owner.key_id, "recording key use failed");
                }
            });
        }
    }

    /// How many of the account's calls are running on a budget lease of this process (their holds are not on
    /// the wallet one by one, so only this process can tell).
    pub fn lease_calls_running(&self, user_id: &str) -> usize {
        self.leases.running(user_id)
    }

    /// A graceful shutdown: the leases go back now rather than wait for the sweeper (see
    /// `Leases::return_all`); returns how many are left for it.
    pub async fn return_leases(&self, patience: Duration) -> usize {
        self.leases.return_all(patience).await
    }

    /// How many budget leases this process has opened.
    pub fn leases_opened(&self) -> usize {
        self.leases.opened()
    }

    pub fn model(&self, id: &str) -> ApiResult<&Model> {
        self.catalog.model(id).ok_or_else(|| ApiError::NotFound {
            code: ErrorCode::ModelNotFound,
            message: format!("The model `{id}` does not exist. GET /v1/models lists the available models."),
        })
    }
}

pub(super) struct CallFacts<'a> {
    owner: &'a KeyOwner,
    prepared: &'a Prepared,
    hold: &'a Hold,
    balances: &'a BalanceHints,
    served: ServedBy,
    started: Instant,
    ttft: Option<Duration>,
}

pub(super) async fn settle_call(
    ports: &Ports,
    facts: CallFacts<'_>,
    usage: Usage,
    status: &str,
) -> ApiResult<UsageRecord> {
    let model = &facts.prepared.model;
    let record = UsageRecord {
        id: facts.prepared.request_id.clone(),
        key_id: facts.owner.key_id.clone(),
        model: model.id.clone(),
        provider: facts.served.provider,
        country: facts.served.country,
        prompt_tokens: usage.prompt_tokens,
        completion_tokens: usage.completion_tokens,
        total_tokens: usage.prompt_tokens.saturating_add(usage.completion_tokens),
        cost: 0,
        latency_ms: u64::try_from(facts.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        ttft_ms: facts.ttft.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        status: status.into(),
        estimated: usage.estimated,
        over_hold: 0,
        created_at: ports.clock.now(),
    };
    let cost = model.cost(usage.prompt_tokens, usage.completion_tokens);
    let now = ports.clock.now();
    let expiry = metering::expiries(&ports.config, now);
    let deadline = facts.prepared.settle_deadline();
    let settled = metering::settle(
        ports.store.as_ref(),
        facts.balances,
        facts.hold,
        metering::Settlement { cost, usage: record, expiries: expiry, deadline },
    )
    .await;
    // A call settled gives its hold back to its lease; one that could not stays on the lease's record for
    // the sweeper to charge.
    if let Some(lease) = &facts.hold.lease {
        match &settled {
            Ok(_) => lease.reserve.clone().finished(&facts.hold.id),
            Err(_) => lease.reserve.clone().abandoned(&facts.hold.id),
        }
    }
    // A purse posts what it spent to the wallet now and then, within the invocation (never after it).
    if let Some(book) = facts.hold.purse.as_ref().and_then(|purse| purse.book.as_ref())
        && let Err(e) = book.post_if_due(ports, &facts.hold.user_id, expiry).await
    {
        tracing::warn!(error = %e, "a purse's spending not posted yet; the next call or the sweeper posts it");
    }
    // The spend windows learn what the call cost. A call left unsettled keeps its hold counted, as the
    // sweeper charges it; so does one the sweeper settled first (answered as charging nothing here), since
    // what the sweeper charged is at most the hold.
    if let Some(record) = settled.as_ref().ok().filter(|record| record.cost > 0) {
        spend::settle(ports.store(), &facts.prepared.spend, record.cost, now).await;
    }
    settled
}

/// What a call holds: the most it can cost (at least one unit, so that every call counts).
fn call_hold_amount(prepared: &Prepared) -> i64 {
    prepared.max_cost().max(1)
}

/// A finished non-streaming call: the upstream's JSON with our model id, ready to send.
pub struct Completed {
    pub status: u16,
    pub body: Value,
    /// What the call was charged, wallet units (the answer's `x-inferex-cost-inr`).
    pub cost: i64,
    pub served: ServedBy,
}

/// The answer to a streaming call: Server-Sent Events to relay to the client.
pub type EventStream = mpsc::Receiver<Result<Bytes, std::io::Error>>;

/// A streaming call's events, and who is serving it.
pub struct Streamed {
    pub events: EventStream,
    pub served: ServedBy,
}

pub enum Answer {
    Complete(Completed),
    Stream(Streamed),
}

/// Runs one call end to end. The hold is released on every failure path; a stream's settlement happens in
/// a task that outlives the client connection. The call's slot of calls in flight is freed before the
/// answer (a stream's when its relay ends), never after: a Lambda instance may freeze once it answered.
pub async fn call(ports: &Ports, gateway: &Gateway, owner: KeyOwner, prepared: Prepared) -> ApiResult<Answer> {
    let slot = prepared.in_flight.clone();
    let answer = run_call(ports, gateway, owner, prepared).await;
    if !matches!(answer, Ok(Answer::Stream(_))) {
        in_flight::leave(ports.store(), slot.as_ref()).await;
    }
    answer
}

async fn run_call(ports: &Ports, gateway: &Gateway, owner: KeyOwner, mut prepared: Prepared) -> ApiResult<Answer> {
    let started = Instant::now();
    // Whoever prepared the call, the key's and account's residency hold (a request only narrows it).
    prepared.residency = prepared.residency.narrowest(owner.residency(None));
    let balances = gateway.balances.as_ref();
    let hold = match hold_wallet(ports, gateway, &owner, &prepared).await {
        Ok(hold) => hold,
        Err(e) => {
            spend::release(ports.store(), &prepared.spend).await;
            return Err(e);
        }
    };
    // A hold of its own says while it runs that its call is alive (a lease's keeper records its calls).
    let beating = hold.lease.is_none().then(|| crate::wallet::metering::keep_beating(ports, &hold.user_id, &hold.id));
    let attempt = match forward(gateway, &mut prepared).await {
        Ok(attempt) => attempt,
        Err(e) => {
            release_unused(ports, &hold).await;
            spend::release(ports.store(), &prepared.spend).await;
            return Err(e);
        }
    };
    match attempt {
        Attempt::Complete { provider, status, body } => {
            let served = ServedBy::of(gateway, &provider);
            let facts =
                CallFacts { owner: &owner, prepared: &prepared, hold: &hold, balances, served, started, ttft: None };
            Ok(Answer::Complete(completed(ports, facts, status, body).await))
        }
        Attempt::Unreadable { provider, timed_out } => {
            let served = ServedBy::of(gateway, &provider);
            let facts =
                CallFacts { owner: &owner, prepared: &prepared, hold: &hold, balances, served, started, ttft: None };
            let status = if timed_out { "upstream_timeout" } else { "upstream_error" };
            settle_call(ports, facts, prepared.usage_upper_bound(), status).await?;
            Err(if timed_out {
                ApiError::GatewayTimeout { message: "the model provider did not answer in time".into() }
            } else {
                ApiError::BadGateway {
                    code: ErrorCode::UpstreamError,
                    message: "the model provider sent an unreadable answer".into(),
                }
            })
        }
        Attempt::Streaming { provider, response } => {
            let (tx, rx) = mpsc::channel(64);
            let (ports, balances) = (ports.clone(), gateway.balances.clone());
            let served = ServedBy::of(gateway, &provider);
            let call = StreamCall { ports, balances, owner, prepared, hold, served: served.clone(), started, beating };
            crate::tasks::spawn("stream relay", relay_stream(call, response, tx));
            Ok(Answer::Stream(Streamed { events: rx, served }))
        }
    }
}

/// A non-streaming answer, settled. The answer exists and the provider billed it: the caller gets it even
/// if the wallet could not be settled in time, since the hold (and the usage recorded beside it) leaves it to
/// the sweeper to charge; refusing it would make a retry pay twice.
async fn completed(ports: &Ports, facts: CallFacts<'_>, status: u16, mut body: Value) -> Completed {
    let prepared = facts.prepared;
    let usage = reported_usage(&body).unwrap_or_else(|| prepared.estimated_usage(generated_bytes(&body)));
    let cost = prepared.model.cost(usage.prompt_tokens, usage.completion_tokens);
    let served = facts.served.clone();
    if let Err(e) = settle_call(ports, facts, usage, "ok").await {
        tracing::error!(error = %e, request_id = %prepared.request_id, "settlement left to the sweeper");
    }
    if let Some(fields) = body.as_object_mut() {
        fields.insert("model".into(), json!(prepared.model.id));
    }
    Completed { status, body, cost, served }
}

/// Holds the call's most on the wallet: from this process's lease, this instance's purse, or the wallet.
async fn hold_wallet(ports: &Ports, gateway: &Gateway, owner: &KeyOwner, prepared: &Prepared) -> ApiResult<Hold> {
    let balances = gateway.balances.as_ref();
    let held_call = held_call(prepared, owner);
    if gateway.leases_on {
        let wanted = metering::CallHold { user_id: &owner.user_id, amount: prepared.max_cost(), call: &held_call };
        gateway.leases.hold(ports, balances, wanted).await
    } else if let Some(purses) = &gateway.purses {
        purses.hold(ports, &owner.user_id, call_hold_amount(prepared), &held_call).await
    } else {
        metering::place_call_hold(ports, balances, &owner.user_id, call_hold_amount(prepared), &held_call).await
    }
}

/// What a hold records of its call: the usage it was computed from, for the sweeper should the call die.
fn held_call(prepared: &Prepared, owner: &KeyOwner) -> metering::HeldCall {
    let bound = prepared.usage_upper_bound();
    metering::HeldCall {
        request_id: prepared.request_id.clone(),
        key_id: owner.key_id.clone(),
        model: prepared.model.id.clone(),
        prompt_tokens: bound.prompt_tokens,
        completion_tokens: bound.completion_tokens,
    }
}

/// Gives back the hold of a call that never reached a provider, retrying a failing store a few times; a hold
/// left behind would be charged in full by the sweeper.
async fn release_unused(ports: &Ports, hold: &Hold) {
    if let Some(lease) = &hold.lease {
        // Served from a lease: the hold goes back to it, with no store write.
        lease.reserve.clone().finished(&hold.id);
        return;
    }
    for attempt in 0..3u32 {
        let released = match &hold.purse {
            Some(_) => metering::release_in_purse(ports.store.as_ref(), hold).await,
            None => metering::release(ports.store.as_ref(), &hold.user_id, &hold.id, hold.amount).await,
        };
        match released {
            Ok(_) => return,
            Err(e) => {
                tracing::error!(error = %e, hold_id = %hold.id, attempt, "releasing an unused hold failed");
                tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
            }
        }
    }
}
