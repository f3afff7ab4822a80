//! `make fleet`: the API as it runs in AWS, on this machine. Each request becomes the API Gateway event
//! template.yaml produces and goes to the real function binaries through the Lambda Runtime API, one
//! invocation per instance at a time, instances frozen (SIGSTOP) between invocations; the jobs function
//! runs on its schedule; the store is DynamoDB Local and the other AWS services are moto's.
//!
//! Neither cargo lambda's emulator (`cargo lambda watch`: one process per function, never frozen, no
//! concurrency limit) nor AWS's runtime interface emulator (one function per container, one instance)
//! runs many frozen instances per function, so the fleet runs its own runtime API (`runtime_api`) and
//! execution model (`instances`); nothing of it is in the Lambda binaries.

pub mod cpu_share;
pub mod gateway;
pub mod harness;
pub mod instances;
pub mod mail;
pub mod resources;
pub mod runtime_api;
pub mod streams;
pub mod template;
pub mod write_counter;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use serde_json::{Value, json};

use shared::state::BoxError;

use crate::machine::{cpu_ms, memory_kib};
use cpu_share::CpuShares;
use instances::{Answer, Pool, Resources};
use resources::Refs;
use template::{EnvValue, FunctionSpec, Template, Trigger};

/// How the fleet runs: read from the environment by `fleet`'s main (see docs/architecture.md, `make fleet`).
#[derive(Debug, Clone)]
pub struct Settings {
    pub addr: SocketAddr,
    /// The function binaries (`<dir>/<binary>`).
    pub bin_dir: PathBuf,
    /// Instance logs and the mailbox.
    pub data_dir: PathBuf,
    /// Instances per function at most (`INFEREX_FLEET_CONCURRENCY`).
    pub concurrency: usize,
    /// How often the jobs function runs (`INFEREX_FLEET_JOBS_EVERY_SECONDS`).
    pub jobs_every: Duration,
    /// How long a frozen instance is kept before it is killed.
    pub idle_for: Duration,
    /// Give each instance its memory's share of a vCPU, as Lambda does (`INFEREX_FLEET_CPU_SHARE`).
    pub cpu_share: bool,
}

/// The running fleet: a pool of instances per function and the routes to them.
pub struct Fleet {
    pub template: Template,
    pools: BTreeMap<String, Arc<Pool>>,
    /// Each instance's CPU group, when asked for and the machine allows.
    cpu_shares: Option<Arc<CpuShares>>,
    /// CloudFront's edge secret: what the fleet, standing where CloudFront stands, adds to every request with
    /// the viewer's address and origin, as the distribution's function does.
    edge: Option<String>,
}

impl Fleet {
    /// The pools of every function the fleet drives (API routes, the schedule, the table's stream), each
    /// with its environment from template.yaml, `!Ref`s resolved by `refs` and `extra` set over it.
    pub fn new(
        template: Template,
        settings: &Settings,
        refs: &Refs,
        extra: &[(String, String)],
    ) -> Result<Self, BoxError> {
        let logs = settings.data_dir.join("logs");
        std::fs::create_dir_all(&logs)?;
        let cpu_shares = settings.cpu_share.then(cpu_shares).flatten();
        let mut pools = BTreeMap::new();
        for spec in &template.functions {
            if spec.triggers.iter().all(|t| *t == Trigger::Other) {
                continue;
            }
            let binary = settings.bin_dir.join(&spec.name);
            if !binary.is_file() {
                return Err(
                    format!("{} is missing: build the functions first (make fleet does)", binary.display()).into()
                );
            }
            let env = environment(spec, &template, refs, extra)?;
            let log = logs.join(format!("{}.log", spec.name));
            let resources = Resources { concurrency: settings.concurrency, cpu_shares: cpu_shares.clone() };
            let pool = Pool::new(spec.clone(), binary, env, log, resources);
            pools.insert(spec.name.clone(), pool);
        }
        Ok(Self { template, pools, cpu_shares, edge: None })
    }

    /// Requests get CloudFront's headers: the edge secret, the viewer's address and origin.
    pub fn behind_cloudfront(mut self, edge_secret: String) -> Self {
        self.edge = Some(edge_secret);
        self
    }

    pub fn pool(&self, function: &str) -> Option<&Arc<Pool>> {
        self.pools.get(function)
    }

    /// The functions the table's stream feeds, with their mappings.
    pub fn stream_consumers(&self) -> Vec<streams::Consumer> {
        let mut consumers = Vec::new();
        for pool in self.pools.values() {
            for trigger in &pool.spec.triggers {
                if let Trigger::TableStream(mapping) = trigger {
                    consumers.push(streams::Consumer { pool: Arc::clone(pool), mapping: mapping.clone() });
                }
            }
        }
        consumers
    }

    /// Every instance: `{"cpu_share": bool, "instances": [{"function", "pid", "state", "init_ms",
    /// "first_call_ms", "rss_kib", "peak_rss_kib", "cpu_ms"}]}`: whether instances have Lambda's share of a
    /// vCPU (`cpu_share`), each one's cold start (null until known), its memory and CPU time as the kernel
    /// counts them.
    pub fn listing(&self) -> Value {
        let instances: Vec<Value> = self
            .pools
            .values()
            .flat_map(|pool| pool.instances())
            .map(|i| {
                let (init, first_call) = i.cold_start();
                let ms = |d: Option<std::time::Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
                json!({
                    "function": i.function,
                    "pid": i.pid,
                    "state": i.state(),
                    "init_ms": ms(init),
                    "first_call_ms": ms(first_call),
                    "rss_kib": memory_kib(i.pid, "VmRSS"),
                    "peak_rss_kib": memory_kib(i.pid, "VmHWM"),
                    "cpu_ms": cpu_ms(i.pid),
                })
            })
            .collect();
        json!({ "cpu_share": self.cpu_shares.is_some(), "instances": instances })
    }

    /// Runs the jobs function once, as its schedule does; returns what it answered.
    pub async fn run_jobs(&self) -> Result<Value, String> {
        let pool = self.pool("jobs").ok_or("no jobs function")?;
        let event = json!({"source": "aws.scheduler", "detail-type": "Scheduled Event", "detail": {}});
        match pool.invoke(Bytes::from(event.to_string())).await {
            Answer::Buffered(payload) => Ok(serde_json::from_slice(&payload).unwrap_or(Value::Null)),
            Answer::Streaming { .. } => Err("the jobs function streamed".into()),
            Answer::Failed(failure) => Err(format!("{failure:?}")),
        }
    }

    /// Invokes the jobs function every `every`, and kills instances frozen longer than `idle_for`.
    pub async fn run_schedule(self: Arc<Self>, every: Duration, idle_for: Duration) {
        let mut jobs = tokio::time::interval(every);
        jobs.tick().await;
        let mut reaper = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = jobs.tick() => match self.run_jobs().await {
                    Ok(report) => tracing::info!(%report, "scheduled jobs ran"),
                    Err(e) => tracing::warn!(error = %e, "scheduled jobs failed"),
                },
                _ = reaper.tick() => {
                    let reaped: usize = self.pools.values().map(|pool| pool.reap_idle(idle_for)).sum();
                    if reaped > 0 {
                        tracing::debug!(reaped, "idle instances stopped");
                    }
                }
            }
        }
    }

    /// Kills every instance (the fleet is stopping), then removes their CPU groups.
    pub fn kill_all(&self) {
        for pool in self.pools.values() {
            pool.kill_all();
        }
        if let Some(shares) = &self.cpu_shares {
            shares.remove_all();
        }
    }

    /// The API, as API Gateway serves it, plus `/_fleet` (the instances) and `POST /_fleet/jobs`.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/_fleet", get(listing))
            .route("/_fleet/jobs", post(jobs_now))
            .fallback(proxy)
            .with_state(Arc::clone(self))
    }
}

/// A function's environment: the template's variables with `!Ref` and `!Sub` resolved, then `extra`.
fn environment(
    spec: &FunctionSpec,
    template: &Template,
    refs: &Refs,
    extra: &[(String, String)],
) -> Result<Vec<(String, String)>, BoxError> {
    let resolve = |name: &str| refs.get(name).or_else(|| template.parameters.get(name)).cloned();
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    let overridden: Vec<&str> = extra.iter().map(|(k, _)| k.as_str()).collect();
    for (key, value) in &spec.env {
        let resolved = match value {
            EnvValue::Literal(text) => Some(text.clone()),
            EnvValue::Ref(name) => resolve(name),
            EnvValue::Sub(text) => substitute(text, &resolve),
            EnvValue::Computed => None,
        };
        match resolved {
            Some(value) => {
                env.insert(key.clone(), value);
            }
            None if overridden.contains(&key.as_str()) => {}
            None => return Err(format!("{}: the fleet cannot resolve {key} ({value:?})", spec.name).into()),
        }
    }
    for (key, value) in extra {
        env.insert(key.clone(), value.clone());
    }
    env.insert("AWS_LAMBDA_FUNCTION_NAME".into(), spec.name.clone());
    env.insert("AWS_LAMBDA_FUNCTION_VERSION".into(), "$LATEST".into());
    env.insert("AWS_LAMBDA_FUNCTION_MEMORY_SIZE".into(), spec.memory_mb.to_string());
    env.insert("AWS_LAMBDA_LOG_GROUP_NAME".into(), format!("/aws/lambda/fleet/{}", spec.name));
    env.insert("AWS_LAMBDA_LOG_STREAM_NAME".into(), "fleet".into());
    Ok(env.into_iter().collect())
}

/// `!Sub`'s `${Name}` references, each resolved (all of them, or none of the text).
fn substitute(text: &str, resolve: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}')? + start;
        out.push_str(&resolve(&rest[start + 2..end])?);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

async fn listing(State(fleet): State<Arc<Fleet>>) -> axum::Json<Value> {
    axum::Json(fleet.listing())
}

/// Runs the jobs now (tests drive the schedule themselves instead of waiting for it).
async fn jobs_now(State(fleet): State<Arc<Fleet>>) -> Response {
    match fleet.run_jobs().await {
        Ok(report) => axum::Json(report).into_response(),
        Err(e) => (StatusCode::BAD_GATEWAY, axum::Json(json!({"error": e}))).into_response(),
    }
}

/// API Gateway: the route's function gets the proxy event; its answer becomes the response.
async fn proxy(
    State(fleet): State<Arc<Fleet>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: axum::extract::Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let (method, uri, mut headers) = (parts.method, parts.uri, parts.headers);
    if let Some(edge) = &fleet.edge {
        cloudfront_headers(&mut headers, edge, peer);
    }
    let Some((route, params)) = gateway::route(&fleet.template.routes, &method, uri.path()) else {
        return gateway::no_such_route();
    };
    let Some(pool) = fleet.pool(&route.function) else { return gateway::no_such_route() };
    let Ok(body) = axum::body::to_bytes(body, gateway::REQUEST_MAX_BYTES).await else {
        return gateway::too_large();
    };
    let incoming = gateway::Incoming {
        method: &method,
        uri: &uri,
        headers: &headers,
        body: &body,
        peer,
        stage: &fleet.template.stage,
    };
    let event = gateway::proxy_event(&incoming, route, &params);
    gateway::response(pool.invoke(Bytes::from(event.to_string())).await)
}

/// What our distribution adds (template.yaml: the origin's custom header and `ViewerAddressFunction`),
/// over whatever the client sent under those names.
fn cloudfront_headers(headers: &mut axum::http::HeaderMap, edge: &str, peer: SocketAddr) {
    let host = headers.get(axum::http::header::HOST).and_then(|h| h.to_str().ok()).map(str::to_owned);
    let mut set = |name: &'static str, value: String| match axum::http::HeaderValue::from_str(&value) {
        Ok(value) => {
            headers.insert(name, value);
        }
        Err(_) => {
            headers.remove(name);
        }
    };
    set(shared::http::EDGE_PROOF_HEADER, edge.to_owned());
    set(shared::http::VIEWER_ADDRESS_HEADER, peer.ip().to_string());
    set(shared::http::VIEWER_ORIGIN_HEADER, host.map(|h| format!("http://{h}")).unwrap_or_default());
}

/// The instances' CPU groups, or none (and a warning saying why) when the machine has no CPU controller this
/// process may write.
fn cpu_shares() -> Option<Arc<CpuShares>> {
    CpuShares::new()
        .inspect_err(|why| tracing::warn!(%why, "instances run without Lambda's share of a vCPU: no CPU cgroup to use"))
        .ok()
        .map(Arc::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_resolves_every_reference_or_nothing() {
        let resolve = |name: &str| (name == "MailDomain").then(|| "inferexai.in".to_owned());
        assert_eq!(
            substitute("InferexAI <no-reply@${MailDomain}>", &resolve).as_deref(),
            Some("InferexAI <no-reply@inferexai.in>")
        );
        assert_eq!(substitute("https://${Distribution.DomainName}", &resolve), None);
        assert_eq!(substitute("plain", &resolve).as_deref(), Some("plain"));
    }
}
