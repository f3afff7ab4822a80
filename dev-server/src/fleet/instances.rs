//! Lambda's execution model for one function, with its real binary: an instance serves one invocation at a
//! time; when all are busy a new one starts (a cold start), up to the concurrency limit, and further
//! invocations wait for one; between invocations an instance is frozen (SIGSTOP) and it is thawed
//! (SIGCONT) for its next one; an instance idle too long, or past its function's timeout, is killed.
//!
//! An instance is frozen once it asks the runtime API for its next invocation and none is waiting: as in
//! Lambda, nothing it left running (a task after its answer, a timer) runs until its next invocation. A new
//! instance is not: it was started for an invocation that is on its way, and waits for it running.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use shared::state::BoxError;

use super::cpu_share::CpuShares;
use super::runtime_api;
use super::template::FunctionSpec;

/// An invocation on its way to an instance.
#[derive(Debug)]
pub struct Invocation {
    pub id: String,
    pub payload: Bytes,
    pub deadline: SystemTime,
    pub answer: oneshot::Sender<Answer>,
}

/// An invocation as the runtime API hands it to the instance.
#[derive(Debug)]
pub struct Handed {
    pub id: String,
    pub payload: Bytes,
    pub deadline: SystemTime,
}

/// What an invocation came back with.
#[derive(Debug)]
pub enum Answer {
    /// The whole response payload (a function that does not stream).
    Buffered(Bytes),
    /// Lambda's streaming format: the metadata prelude (JSON), then the body as the function writes it.
    Streaming {
        prelude: Bytes,
        body: mpsc::Receiver<Bytes>,
    },
    Failed(Failure),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The function answered with an error (`/invocation/{id}/error`), or an answer Lambda refuses.
    Function(String),
    /// It could not start (`/init/error`, or it exited before asking for its invocation).
    Init(String),
    /// Its process died mid-invocation.
    Died,
    /// It ran past its function's timeout and was stopped.
    TimedOut,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Starting,
    Busy,
    Frozen,
}

/// One running copy of a function's binary.
#[derive(Debug)]
pub struct Instance {
    pub function: String,
    pub pid: u32,
    state: Mutex<(State, Instant)>,
    inbox: tokio::sync::Mutex<mpsc::Receiver<Invocation>>,
    sender: mpsc::Sender<Invocation>,
    /// Set once its process has ended.
    ended: tokio::sync::watch::Sender<bool>,
    /// The invocation it is serving: its id, where its answer goes (until given), and whether it timed out.
    current: Mutex<Option<Current>>,
    /// Its place under the function's concurrency limit, held while it is busy.
    permit: Mutex<Option<OwnedSemaphorePermit>>,
    cold_start: Mutex<ColdStart>,
}

/// An instance's cold start: its init (from the process's start to its runtime's first request for an
/// invocation) and its first invocation (from being handed it to its answer's end).
#[derive(Debug)]
pub struct ColdStart {
    spawned: Instant,
    pub init: Option<Duration>,
    first_handed: Option<Instant>,
    pub first_call: Option<Duration>,
}

impl ColdStart {
    fn new() -> Self {
        Self { spawned: Instant::now(), init: None, first_handed: None, first_call: None }
    }
}

#[derive(Debug)]
struct Current {
    id: String,
    answer: Option<oneshot::Sender<Answer>>,
    timed_out: bool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Instance {
    pub fn state(&self) -> State {
        lock(&self.state).0
    }

    /// Its init and first invocation's durations, once known.
    pub fn cold_start(&self) -> (Option<Duration>, Option<Duration>) {
        let cold = lock(&self.cold_start);
        (cold.init, cold.first_call)
    }

    fn set_state(&self, state: State) {
        *lock(&self.state) = (state, Instant::now());
    }

    fn signal(&self, signal: Signal) {
        let Ok(pid) = i32::try_from(self.pid) else { return };
        if let Err(e) = kill(Pid::from_raw(pid), signal) {
            tracing::debug!(pid = self.pid, ?signal, error = %e, "signal not delivered (the instance has exited)");
        }
    }

    /// Whether its process has ended (looked at without reaping it: its watcher does that).
    fn has_exited(&self) -> bool {
        use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
        let Ok(pid) = i32::try_from(self.pid) else { return true };
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        !matches!(waitid(Id::Pid(Pid::from_raw(pid)), flags), Ok(WaitStatus::StillAlive))
    }

    pub fn kill(&self) {
        self.signal(Signal::SIGKILL);
    }

    /// The runtime asks for its next invocation: one waiting is handed over at once; a new instance waits
    /// for the one it was started for; otherwise the instance is frozen, offered to the pool, and handed the
    /// next invocation the pool gives it.
    pub(super) async fn next(self: &Arc<Self>, pool: &Arc<Pool>) -> Option<Handed> {
        {
            let mut cold = lock(&self.cold_start);
            cold.init = cold.init.or_else(|| Some(cold.spawned.elapsed()));
        }
        let mut inbox = self.inbox.lock().await;
        // A new instance was started for an invocation that is on its way (`Pool::invoke` sends it as soon as
        // the start returns, with no await between: keep it so, or this wait could be for nothing): it waits
        // for it running. Frozen and offered to the pool instead, it would be handed
        // that invocation while stopped, with nothing to thaw it.
        let started_for_one = lock(&self.cold_start).first_handed.is_none();
        let invocation = match inbox.try_recv() {
            Ok(invocation) => invocation,
            Err(_) if started_for_one => self.wait_for_invocation(&mut inbox).await?,
            Err(_) => {
                self.set_state(State::Frozen);
                self.signal(Signal::SIGSTOP);
                pool.offer(Arc::clone(self));
                self.wait_for_invocation(&mut inbox).await?
            }
        };
        let Invocation { id, payload, deadline, answer } = invocation;
        *lock(&self.current) = Some(Current { id: id.clone(), answer: Some(answer), timed_out: false });
        lock(&self.cold_start).first_handed.get_or_insert_with(Instant::now);
        self.set_state(State::Busy);
        Some(Handed { id, payload, deadline })
    }

    /// The next invocation sent to it; none once it ended (what was sent then is refused).
    async fn wait_for_invocation(&self, inbox: &mut mpsc::Receiver<Invocation>) -> Option<Invocation> {
        let mut ended = self.ended.subscribe();
        tokio::select! {
            invocation = inbox.recv() => invocation,
            _ = ended.wait_for(|ended| *ended) => {
                refuse_waiting(inbox);
                None
            }
        }
    }

    /// Gives the answer of invocation `id`; false when it is not the one being served (or answered).
    pub(super) fn answer(&self, id: &str, answer: Answer) -> bool {
        let sender = lock(&self.current).as_mut().filter(|c| c.id == id).and_then(|c| c.answer.take());
        match sender {
            Some(sender) => {
                // The caller may have gone (a client that hung up): the function ran all the same.
                let _ = sender.send(answer);
                true
            }
            None => false,
        }
    }

    /// The invocation ended (its answer given, whole): the next `next` freezes the instance.
    pub(super) fn ended(&self, id: &str) {
        let mut current = lock(&self.current);
        if current.as_ref().is_some_and(|c| c.id == id) {
            *current = None;
            let mut cold = lock(&self.cold_start);
            if cold.first_call.is_none() {
                cold.first_call = cold.first_handed.map(|handed| handed.elapsed());
            }
        }
    }

    fn is_serving(&self, id: &str) -> bool {
        lock(&self.current).as_ref().is_some_and(|c| c.id == id)
    }
}

/// No invocation reaches an instance whose process ended: the waiting ones go back to the pool (which runs
/// them elsewhere), and later ones cannot be handed in.
fn refuse_waiting(inbox: &mut mpsc::Receiver<Invocation>) {
    inbox.close();
    while let Ok(invocation) = inbox.try_recv() {
        drop(invocation);
    }
}

/// Everything about one function in the fleet: how to start it, its instances and its concurrency limit.
#[derive(Debug)]
pub struct Pool {
    pub spec: FunctionSpec,
    binary: PathBuf,
    env: Vec<(String, String)>,
    log_file: PathBuf,
    limit: Arc<Semaphore>,
    idle: Mutex<Vec<Arc<Instance>>>,
    all: Mutex<Vec<Arc<Instance>>>,
    cpu_shares: Option<Arc<CpuShares>>,
}

/// What a pool's instances may have: how many at once, and each one's share of the CPU (when limited).
pub struct Resources {
    pub concurrency: usize,
    pub cpu_shares: Option<Arc<CpuShares>>,
}

/// How many instances an invocation is offered to before it fails (each can end before taking it).
const HANDOVER_ATTEMPTS: usize = 3;

/// Past this size an instance log starts over (the previous one kept as `.1`).
const LOG_FILE_MAX_BYTES: u64 = 64 * 1024 * 1024;

impl Pool {
    pub fn new(
        spec: FunctionSpec,
        binary: PathBuf,
        env: Vec<(String, String)>,
        log_file: PathBuf,
        resources: Resources,
    ) -> Arc<Self> {
        Arc::new(Self {
            spec,
            binary,
            env,
            log_file,
            limit: Arc::new(Semaphore::new(resources.concurrency)),
            idle: Mutex::new(Vec::new()),
            all: Mutex::new(Vec::new()),
            cpu_shares: resources.cpu_shares,
        })
    }

    pub fn instances(&self) -> Vec<Arc<Instance>> {
        lock(&self.all).clone()
    }

    /// Runs one invocation: on a frozen instance if there is one (the most recently used), else on a new
    /// one, waiting for a free place under the concurrency limit first. An invocation that an instance
    /// never took (its process ended first) runs on another, as in Lambda.
    pub async fn invoke(self: &Arc<Self>, payload: Bytes) -> Answer {
        for _ in 0..HANDOVER_ATTEMPTS {
            let Ok(permit) = Arc::clone(&self.limit).acquire_owned().await else {
                return Answer::Failed(Failure::Init("the fleet is stopping".into()));
            };
            let (answer, answered) = oneshot::channel();
            let id = shared::secrets::random_token();
            let deadline = SystemTime::now() + self.spec.timeout;
            let invocation = Invocation { id: id.clone(), payload: payload.clone(), deadline, answer };
            let instance = match self.instance_for_next().await {
                Ok(instance) => instance,
                Err(e) => return Answer::Failed(Failure::Init(e.to_string())),
            };
            *lock(&instance.permit) = Some(permit);
            if instance.sender.try_send(invocation).is_err() {
                drop(lock(&instance.permit).take());
                continue;
            }
            self.watch_deadline(&instance, &id);
            match answered.await {
                Ok(answer) => return answer,
                // Dropped untaken: its instance ended before it could take it.
                Err(_) => continue,
            }
        }
        Answer::Failed(Failure::Died)
    }

    /// A frozen instance, thawed (the most recently used), or a new one.
    async fn instance_for_next(self: &Arc<Self>) -> Result<Arc<Instance>, BoxError> {
        let thawed = loop {
            let candidate = lock(&self.idle).pop();
            match candidate {
                // Killed while frozen and not yet seen to end: left for its watcher to forget.
                Some(instance) if instance.has_exited() => continue,
                other => break other,
            }
        };
        match thawed {
            Some(instance) => {
                instance.set_state(State::Busy);
                instance.signal(Signal::SIGCONT);
                Ok(instance)
            }
            None => self.start().await,
        }
    }

    /// An instance that asked for work and got none: frozen, it waits here for the next invocation.
    fn offer(&self, instance: Arc<Instance>) {
        let permit = lock(&instance.permit).take();
        lock(&self.idle).push(instance);
        drop(permit);
    }

    /// Stops an instance still serving invocation `id` at its function's timeout, as Lambda does.
    fn watch_deadline(&self, instance: &Arc<Instance>, id: &str) {
        let (instance, id, timeout) = (Arc::clone(instance), id.to_owned(), self.spec.timeout);
        shared::tasks::spawn("fleet invocation deadline", async move {
            tokio::time::sleep(timeout).await;
            if instance.is_serving(&id) {
                if let Some(current) = lock(&instance.current).as_mut() {
                    current.timed_out = true;
                }
                tracing::warn!(function = %instance.function, pid = instance.pid, "invocation timed out; instance stopped");
                instance.kill();
            }
        });
    }

    /// A cold start: the binary with its function's environment and a runtime API of its own.
    async fn start(self: &Arc<Self>) -> Result<Arc<Instance>, BoxError> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let runtime_api = listener.local_addr()?;
        let log = self.log_output()?;
        let mut child = tokio::process::Command::new(&self.binary)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("AWS_LAMBDA_RUNTIME_API", runtime_api.to_string())
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.binary.display()))?;
        let pid = child.id().ok_or("the instance exited at once")?;
        let cpu_group = match &self.cpu_shares {
            Some(shares) => Some(shares.confine(pid, self.spec.memory_mb)?),
            None => None,
        };
        let (sender, inbox) = mpsc::channel(1);
        let instance = Arc::new(Instance {
            function: self.spec.name.clone(),
            pid,
            state: Mutex::new((State::Starting, Instant::now())),
            inbox: tokio::sync::Mutex::new(inbox),
            sender,
            ended: tokio::sync::watch::Sender::new(false),
            current: Mutex::new(None),
            permit: Mutex::new(None),
            cold_start: Mutex::new(ColdStart::new()),
        });
        lock(&self.all).push(Arc::clone(&instance));
        let server = runtime_api::serve(listener, Arc::clone(self), Arc::clone(&instance));
        let (pool, watched) = (Arc::clone(self), Arc::clone(&instance));
        shared::tasks::spawn("fleet instance", async move {
            let status = child.wait().await;
            drop(cpu_group);
            server.abort();
            pool.forget(&watched, status.ok());
        });
        Ok(instance)
    }

    /// An instance's process ended: it leaves the pool, and an invocation it was serving fails.
    fn forget(&self, instance: &Arc<Instance>, status: Option<std::process::ExitStatus>) {
        lock(&self.all).retain(|i| !Arc::ptr_eq(i, instance));
        lock(&self.idle).retain(|i| !Arc::ptr_eq(i, instance));
        // Its runtime API's waiting `next` (if any) refuses what waits for it; otherwise it is refused here.
        instance.ended.send_replace(true);
        if let Ok(mut inbox) = instance.inbox.try_lock() {
            refuse_waiting(&mut inbox);
        }
        let current = lock(&instance.current).take();
        if let Some(Current { answer: Some(answer), timed_out, .. }) = current {
            let failure = match (timed_out, instance.state()) {
                (true, _) => Failure::TimedOut,
                (false, State::Starting) => Failure::Init(format!("the instance exited: {status:?}")),
                (false, _) => Failure::Died,
            };
            let _ = answer.send(Answer::Failed(failure));
        }
        drop(lock(&instance.permit).take());
        tracing::debug!(function = %instance.function, pid = instance.pid, ?status, "instance ended");
    }

    /// Kills the frozen instances idle for longer than `idle`; returns how many.
    pub fn reap_idle(&self, idle: Duration) -> usize {
        let stale: Vec<Arc<Instance>> = {
            let mut frozen = lock(&self.idle);
            let (stale, kept) = frozen.drain(..).partition(|i| lock(&i.state).1.elapsed() >= idle);
            *frozen = kept;
            stale
        };
        for instance in &stale {
            instance.kill();
        }
        stale.len()
    }

    pub fn kill_all(&self) {
        for instance in self.instances() {
            instance.kill();
        }
    }

    /// Where the instances' output goes: one file per function, started over past its size limit.
    fn log_output(&self) -> Result<std::fs::File, BoxError> {
        if std::fs::metadata(&self.log_file).is_ok_and(|m| m.len() > LOG_FILE_MAX_BYTES) {
            std::fs::rename(&self.log_file, self.log_file.with_extension("log.1"))?;
        }
        Ok(std::fs::OpenOptions::new().create(true).append(true).open(&self.log_file)?)
    }
}
