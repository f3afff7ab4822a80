//! `make run`'s mail service: messages as `.eml` files in a folder.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use chrono::Utc;

use super::{MailError, Mailer, Outgoing};

/// `make run`'s mail service: one `.eml` file per message in a folder, the newest [`FileMailer::KEEP`] kept.
#[derive(Debug, Clone)]
pub struct FileMailer {
    dir: PathBuf,
}

impl FileMailer {
    /// The folder holds at most this many messages; older ones are deleted as new ones arrive.
    pub const KEEP: usize = 500;

    pub fn new(dir: impl AsRef<Path>) -> Self {
        Self { dir: dir.as_ref().to_path_buf() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The messages in the folder, newest first: (file name, raw message).
    pub async fn messages(&self) -> std::io::Result<Vec<(String, Vec<u8>)>> {
        let mut names = self.names().await?;
        names.sort_unstable_by(|a, b| b.cmp(a));
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            if let Ok(raw) = tokio::fs::read(self.dir.join(&name)).await {
                out.push((name, raw));
            }
        }
        Ok(out)
    }

    async fn names(&self) -> std::io::Result<Vec<String>> {
        let mut names = Vec::new();
        let mut entries = match tokio::fs::read_dir(&self.dir).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(names),
            Err(e) => return Err(e),
        };
        while let Some(entry) = entries.next_entry().await? {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".eml") {
                names.push(name);
            }
        }
        Ok(names)
    }

    async fn prune(&self) -> std::io::Result<()> {
        let mut names = self.names().await?;
        if names.len() <= Self::KEEP {
            return Ok(());
        }
        names.sort_unstable();
        for name in &names[..names.len() - Self::KEEP] {
            tokio::fs::remove_file(self.dir.join(name)).await.ok();
        }
        Ok(())
    }
}

#[async_trait]
impl Mailer for FileMailer {
    async fn send(&self, message: &Outgoing) -> Result<String, MailError> {
        let failed = |e: std::io::Error| MailError::Failed(e.to_string());
        tokio::fs::create_dir_all(&self.dir).await.map_err(failed)?;
        // Names sort by time; the id keeps them unique. Written under a temporary name, then renamed, so a
        // reader never sees half a message.
        let name = format!("{}-{}.eml", Utc::now().format("%Y%m%dT%H%M%S%.6f"), message.id);
        let partial = self.dir.join(format!(".{name}.part"));
        tokio::fs::write(&partial, &message.raw).await.map_err(failed)?;
        tokio::fs::rename(&partial, self.dir.join(&name)).await.map_err(failed)?;
        self.prune().await.map_err(failed)?;
        Ok(name)
    }
}
