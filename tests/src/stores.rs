//! Stores that wrap the real one to count its calls, hold or fail its writes: how tests reach the moments
//! a crash, a race or a throttled table would (our own store underneath, never replaced).

use std::sync::Arc;

use shared::store::{Item, ItemStore};

/// A store that counts calls, each one a round trip to DynamoDB.
pub struct CountingStore {
    inner: Arc<dyn ItemStore>,
    pub calls: std::sync::atomic::AtomicUsize,
    /// Writes per item (`pk sk`): every put, update and delete, and each part of a transaction (condition
    /// checks too: DynamoDB charges them a write on their item), attempted or not.
    writes: std::sync::Mutex<std::collections::HashMap<String, usize>>,
}

impl CountingStore {
    pub fn new(inner: Arc<dyn ItemStore>) -> Self {
        Self { inner, calls: std::sync::atomic::AtomicUsize::new(0), writes: Default::default() }
    }

    fn count(&self) {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    fn wrote(&self, pk: &str, sk: &str) {
        if let Ok(mut writes) = self.writes.lock() {
            *writes.entry(format!("{pk} {sk}")).or_default() += 1;
        }
    }

    /// The writes each item took so far.
    pub fn writes(&self) -> std::collections::HashMap<String, usize> {
        self.writes.lock().map(|w| w.clone()).unwrap_or_default()
    }
}

#[async_trait::async_trait]
impl ItemStore for CountingStore {
    async fn get(&self, table: shared::store::Table, pk: &str, sk: &str) -> shared::store::StoreResult<Option<Item>> {
        self.count();
        self.inner.get(table, pk, sk).await
    }
    async fn put(&self, put: shared::store::Put) -> shared::store::StoreResult<()> {
        self.count();
        self.wrote(&put.item.pk, &put.item.sk);
        self.inner.put(put).await
    }
    async fn update(&self, update: shared::store::Update) -> shared::store::StoreResult<Item> {
        self.count();
        self.wrote(&update.pk, &update.sk);
        self.inner.update(update).await
    }
    async fn delete(&self, delete: shared::store::Delete) -> shared::store::StoreResult<()> {
        self.count();
        self.wrote(&delete.pk, &delete.sk);
        self.inner.delete(delete).await
    }
    async fn query(&self, query: shared::store::Query) -> shared::store::StoreResult<shared::store::Page> {
        self.count();
        self.inner.query(query).await
    }
    async fn scan(
        &self,
        table: shared::store::Table,
        limit: u32,
        after: Option<(String, String)>,
    ) -> shared::store::StoreResult<shared::store::ScanPage> {
        self.count();
        self.inner.scan(table, limit, after).await
    }
    async fn transact(&self, ops: Vec<shared::store::WriteOp>) -> shared::store::StoreResult<()> {
        self.count();
        for op in &ops {
            match op {
                shared::store::WriteOp::Put(put) => self.wrote(&put.item.pk, &put.item.sk),
                shared::store::WriteOp::Update(update) => self.wrote(&update.pk, &update.sk),
                shared::store::WriteOp::Delete(delete) => self.wrote(&delete.pk, &delete.sk),
                shared::store::WriteOp::Check(check) => self.wrote(&check.pk, &check.sk),
            }
        }
        self.inner.transact(ops).await
    }
}

/// A store whose every call waits while its gate is closed (a store that does not answer), counting the
/// calls that arrived while it was.
pub struct GatedStore {
    inner: Arc<dyn ItemStore>,
    open: tokio::sync::watch::Sender<bool>,
    pub waited: std::sync::atomic::AtomicUsize,
}

impl GatedStore {
    pub fn new(inner: Arc<dyn ItemStore>) -> Self {
        Self { inner, open: tokio::sync::watch::Sender::new(true), waited: std::sync::atomic::AtomicUsize::new(0) }
    }

    pub fn close(&self) {
        self.open.send_replace(false);
    }

    pub fn open(&self) {
        self.open.send_replace(true);
    }

    async fn pass(&self) {
        let mut open = self.open.subscribe();
        if !*open.borrow() {
            self.waited.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = open.wait_for(|open| *open).await;
        }
    }
}

#[async_trait::async_trait]
impl ItemStore for GatedStore {
    async fn get(&self, table: shared::store::Table, pk: &str, sk: &str) -> shared::store::StoreResult<Option<Item>> {
        self.pass().await;
        self.inner.get(table, pk, sk).await
    }
    async fn put(&self, put: shared::store::Put) -> shared::store::StoreResult<()> {
        self.pass().await;
        self.inner.put(put).await
    }
    async fn update(&self, update: shared::store::Update) -> shared::store::StoreResult<Item> {
        self.pass().await;
        self.inner.update(update).await
    }
    async fn delete(&self, delete: shared::store::Delete) -> shared::store::StoreResult<()> {
        self.pass().await;
        self.inner.delete(delete).await
    }
    async fn query(&self, query: shared::store::Query) -> shared::store::StoreResult<shared::store::Page> {
        self.pass().await;
        self.inner.query(query).await
    }
    async fn scan(
        &self,
        table: shared::store::Table,
        limit: u32,
        after: Option<(String, String)>,
    ) -> shared::store::StoreResult<shared::store::ScanPage> {
        self.pass().await;
        self.inner.scan(table, limit, after).await
    }
    async fn transact(&self, ops: Vec<shared::store::WriteOp>) -> shared::store::StoreResult<()> {
        self.pass().await;
        self.inner.transact(ops).await
    }
}

/// How a [`FaultyStore`] misbehaves.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Every write is sent twice, as an SDK does when a write's response is lost after it committed: the
    /// first attempt applies, and the caller sees only the second attempt's answer.
    RepeatWrites,
    /// Transactions (settlements) commit, after this long.
    DelayTransactions(std::time::Duration),
    /// Transactions always lose to a concurrent change (a wallet too busy to settle on).
    TransactionsConflict,
    /// While the flag is up, every single-item update fails as an unreachable store would.
    RefuseUpdatesWhile(Arc<std::sync::atomic::AtomicBool>),
    /// Transactions wait at the gate until the test opens it (the test knows one is waiting: no sleep
    /// guesses how long the caller takes to get there).
    HoldTransactions(Arc<Gate>),
}

/// Where a [`Fault::HoldTransactions`] store keeps transactions until the test opens it.
pub struct Gate {
    reached: tokio::sync::Notify,
    open: tokio::sync::watch::Sender<bool>,
}

impl Default for Gate {
    fn default() -> Self {
        Self { reached: tokio::sync::Notify::new(), open: tokio::sync::watch::channel(false).0 }
    }
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gate(open: {})", *self.open.borrow())
    }
}

impl Gate {
    /// Returns once a transaction waits at the gate.
    pub async fn reached(&self) {
        self.reached.notified().await;
    }

    /// Lets every transaction through, now and later.
    pub fn open(&self) {
        self.open.send_replace(true);
    }

    async fn pass(&self) {
        self.reached.notify_one();
        let mut open = self.open.subscribe();
        let _ = open.wait_for(|open| *open).await;
    }
}

/// A store that misbehaves as told; reads pass through.
pub struct FaultyStore {
    inner: Arc<dyn ItemStore>,
    fault: Fault,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn ItemStore>, fault: Fault) -> Self {
        Self { inner, fault }
    }

    fn repeats(&self) -> bool {
        matches!(self.fault, Fault::RepeatWrites)
    }
}

#[async_trait::async_trait]
impl ItemStore for FaultyStore {
    async fn get(&self, table: shared::store::Table, pk: &str, sk: &str) -> shared::store::StoreResult<Option<Item>> {
        self.inner.get(table, pk, sk).await
    }
    async fn put(&self, put: shared::store::Put) -> shared::store::StoreResult<()> {
        if self.repeats() {
            let _lost = self.inner.put(put.clone()).await;
        }
        self.inner.put(put).await
    }
    async fn update(&self, update: shared::store::Update) -> shared::store::StoreResult<Item> {
        if let Fault::RefuseUpdatesWhile(refusing) = &self.fault
            && refusing.load(std::sync::atomic::Ordering::SeqCst)
        {
            return Err(shared::store::StoreError::Backend("the store is unreachable".into()));
        }
        if self.repeats() {
            let _lost = self.inner.update(update.clone()).await;
        }
        self.inner.update(update).await
    }
    async fn delete(&self, delete: shared::store::Delete) -> shared::store::StoreResult<()> {
        self.inner.delete(delete).await
    }
    async fn query(&self, query: shared::store::Query) -> shared::store::StoreResult<shared::store::Page> {
        self.inner.query(query).await
    }
    async fn scan(
        &self,
        table: shared::store::Table,
        limit: u32,
        after: Option<(String, String)>,
    ) -> shared::store::StoreResult<shared::store::ScanPage> {
        self.inner.scan(table, limit, after).await
    }
    async fn transact(&self, ops: Vec<shared::store::WriteOp>) -> shared::store::StoreResult<()> {
        match &self.fault {
            Fault::RepeatWrites => {
                let _lost = self.inner.transact(ops.clone()).await;
                self.inner.transact(ops).await
            }
            Fault::DelayTransactions(wait) => {
                tokio::time::sleep(*wait).await;
                self.inner.transact(ops).await
            }
            Fault::TransactionsConflict => Err(shared::store::StoreError::ConditionFailed),
            Fault::RefuseUpdatesWhile(_) => self.inner.transact(ops).await,
            Fault::HoldTransactions(gate) => {
                gate.pass().await;
                self.inner.transact(ops).await
            }
        }
    }
}
