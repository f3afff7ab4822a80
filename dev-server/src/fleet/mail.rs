//! `/_mail` under the fleet: the mailer function sends with SES (moto's), and the messages moto accepted
//! are copied into the same local mailbox `make run` lists, each time it is read.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::Value;
use shared::notifications::delivery::FileMailer;
use tokio::sync::Mutex;

use crate::mailbox;

pub struct SesMailbox {
    moto: String,
    folder: FileMailer,
    http: reqwest::Client,
    /// How many of moto's messages are in the folder already.
    copied: Mutex<usize>,
}

impl SesMailbox {
    /// A mailbox in `dir`, emptied first (moto starts empty with each fleet).
    pub fn new(moto: &str, dir: &std::path::Path) -> std::io::Result<Arc<Self>> {
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
        std::fs::create_dir_all(dir)?;
        Ok(Arc::new(Self {
            moto: moto.to_owned(),
            folder: FileMailer::new(dir),
            http: reqwest::Client::new(),
            copied: Mutex::new(0),
        }))
    }

    /// Copies the messages SES accepted since the last look into the folder.
    pub async fn sync(&self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let mut copied = self.copied.lock().await;
        let data: Value = self.http.get(format!("{}/moto-api/data.json", self.moto)).send().await?.json().await?;
        let sent = data.pointer("/ses/RawMessage").and_then(Value::as_array).cloned().unwrap_or_default();
        for (index, message) in sent.iter().enumerate().skip(*copied) {
            let raw = message.get("raw_data").and_then(Value::as_str).unwrap_or_default();
            // Names sort by the order SES took them, as the folder's own names sort by time.
            let name = format!("{index:010}.eml");
            tokio::fs::write(self.folder.dir().join(name), raw).await?;
            *copied = index + 1;
        }
        Ok(())
    }

    pub fn router(self: &Arc<Self>) -> Router {
        mailbox::router(FileMailer::new(self.folder.dir()))
            .layer(axum::middleware::from_fn_with_state(Arc::clone(self), synced))
    }
}

async fn synced(State(mailbox): State<Arc<SesMailbox>>, request: Request, next: Next) -> Response {
    if let Err(e) = mailbox.sync().await {
        tracing::warn!(error = %e, "reading moto's sent mail failed");
    }
    next.run(request).await
}
