//! Sharing the results dir between processes (#22; the protocol is in the
//! store's header): per-process temp dirs, node and shard locks, unique
//! temp names, and finishing a replacement a crash interrupted.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use fs2::FileExt;

use super::{read_dir_sorted, Store};

impl Store {
    /// Writes `target` (a file under the results dir) through `write`,
    /// which is given a temp path in this process's temp dir: the file is
    /// fsynced and renamed into place, so readers see the old or the new
    /// file whole, and two processes never share a temp name.
    pub fn replace_file(&self, target: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
        let owner = self.process_tmp()?;
        let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = owner.dir.join(format!("{}-{name}", unique_suffix()));
        let written = write(&tmp).and_then(|()| Ok(File::open(&tmp)?.sync_all()?));
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        let dir = target.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir)?;
        fs::rename(&tmp, target)
            .with_context(|| format!("cannot move `{}` to `{}`", tmp.display(), target.display()))?;
        File::open(dir).and_then(|f| f.sync_all()).ok();
        Ok(())
    }

    /// This process's temp dir `tmp/proc-<pid>-<nonce>/`, made on first
    /// use and locked (advisory, exclusive) until the process ends: it is
    /// made as `tmp/.new-…`, locked, then renamed, so a `proc-` dir is
    /// always either locked by its live owner or free to remove.
    pub(super) fn process_tmp(&self) -> Result<Arc<ProcessTmp>> {
        let mut slot = self.process_tmp.lock().expect("temp dir slot poisoned");
        if let Some(owner) = slot.as_ref() {
            return Ok(owner.clone());
        }
        let tmp = self.root.join("tmp");
        let id = unique_suffix();
        let staging = tmp.join(format!(".new-{id}"));
        fs::create_dir_all(&staging).with_context(|| format!("cannot create `{}`", staging.display()))?;
        let lock = self.open_lock_file(&staging.join(PROCESS_LOCK))?;
        lock.try_lock_exclusive().with_context(|| format!("cannot lock `{}`", staging.display()))?;
        let dir = tmp.join(format!("proc-{id}"));
        fs::rename(&staging, &dir).with_context(|| format!("cannot move `{}` to `{}`", staging.display(), dir.display()))?;
        let owner = Arc::new(ProcessTmp { dir, _lock: lock });
        *slot = Some(owner.clone());
        Ok(owner)
    }

    pub(super) fn open_lock_file(&self, path: &Path) -> Result<File> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
        }
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .with_context(|| format!("cannot open the lock file `{}`", path.display()))
    }

    /// The lock file of a node: `locks/<stage>/<key>.lock`.
    pub fn node_lock_path(&self, stage: &str, key: &str) -> PathBuf {
        self.root.join("locks").join(stage).join(format!("{key}.lock"))
    }

    /// Tries to take a node's lock without waiting. Unsharded: the node's
    /// lock, exclusive (the holder is written into the lock file for
    /// whoever waits). Sharded (`(i, n)`): the node's lock shared (shards
    /// run side by side; an unsharded run of the node waits for them) and
    /// the shard's own lock `<key>.shard-<i>-of-<n>.lock` exclusive (two
    /// runs of one shard take turns, the second reusing the first's
    /// journaled items).
    pub fn try_lock_node(&self, stage: &str, key: &str, shard: Option<(u32, u32)>) -> Result<LockAttempt> {
        anyhow::ensure!(!self.read_only, "internal error: locking in a store opened read-only");
        let path = self.node_lock_path(stage, key);
        let node = self.open_lock_file(&path)?;
        let Some((i, n)) = shard else {
            if node.try_lock_exclusive().is_err() {
                return Ok(LockAttempt::Held(holder(&path)));
            }
            let lock = NodeLock { files: vec![node] };
            lock.mark_holder()?;
            return Ok(LockAttempt::Acquired(lock));
        };
        if node.try_lock_shared().is_err() {
            return Ok(LockAttempt::Held(holder(&path)));
        }
        let shard_path = path.with_file_name(format!("{key}.shard-{i}-of-{n}.lock"));
        let own = self.open_lock_file(&shard_path)?;
        if own.try_lock_exclusive().is_err() {
            return Ok(LockAttempt::Held(holder(&shard_path)));
        }
        let lock = NodeLock { files: vec![own, node] };
        lock.mark_holder()?;
        Ok(LockAttempt::Acquired(lock))
    }

    /// Whether a live process holds a node's lock (computing it now).
    pub fn node_is_locked(&self, stage: &str, key: &str) -> bool {
        let path = self.node_lock_path(stage, key);
        if self.read_only || !path.exists() {
            return false;
        }
        match self.open_lock_file(&path) {
            Ok(f) => f.try_lock_exclusive().is_err(),
            Err(_) => false,
        }
    }

    /// Finishes a replacement of a node's artifact that a crash
    /// interrupted (see [`ArtifactWriter::commit`]): with only the backup
    /// left, it is put back; with both, the backup goes. Call it holding
    /// the node's lock.
    pub fn recover_replaced(&self, stage: &str, key: &str) -> Result<()> {
        let dir = self.artifact_dir(stage, key);
        let backup = replaced_backup(&dir);
        if !backup.exists() {
            return Ok(());
        }
        if dir.exists() {
            fs::remove_dir_all(&backup).with_context(|| format!("cannot remove `{}`", backup.display()))?;
        } else {
            tracing::warn!("`{}`: a replacement was interrupted; the previous artifact is put back", dir.display());
            fs::rename(&backup, &dir)
                .with_context(|| format!("cannot move `{}` to `{}`", backup.display(), dir.display()))?;
        }
        Ok(())
    }

    /// Removes leftovers of interrupted writes that no live process owns:
    /// a process dir `tmp/proc-…` whose lock can be taken (its owner is
    /// gone), and anything else under `tmp/` (a dir being set up, or the
    /// layout of an older version) once it is an hour old. Returns how
    /// many entries it removed.
    pub fn clean_tmp(&self) -> Result<usize> {
        let tmp = self.root.join("tmp");
        let mut n = 0;
        for name in read_dir_sorted(&tmp)? {
            let p = tmp.join(&name);
            let removable = if name.starts_with("proc-") {
                // Our own dir is locked through another open file, so it
                // reads as live here too. The lock is held while removing.
                match File::open(p.join(PROCESS_LOCK)) {
                    Ok(f) => f.try_lock_exclusive().is_ok(),
                    Err(_) => older_than(&p, STALE_TMP),
                }
            } else {
                older_than(&p, STALE_TMP)
            };
            if removable && fs::remove_dir_all(&p).or_else(|_| fs::remove_file(&p)).is_ok() {
                n += 1;
            }
        }
        Ok(n)
    }
}

/// The lock file inside a process's temp dir.
pub(super) const PROCESS_LOCK: &str = "lock";

/// Age after which an entry of `tmp/` that is not a process dir is garbage.
const STALE_TMP: Duration = Duration::from_secs(3600);

fn older_than(path: &Path, age: Duration) -> bool {
    fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t.elapsed().is_ok_and(|e| e > age))
}

/// A name part no other process (and no other call of this one) uses:
/// `<pid>-<nanoseconds>-<counter>`.
pub fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{:x}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// This process's temp dir, locked while it lives; removed when the last
/// store handle and artifact writer of the process drop it (a killed
/// process leaves it to the next run's [`Store::clean_tmp`]).
#[derive(Debug)]
pub(super) struct ProcessTmp {
    pub(super) dir: PathBuf,
    _lock: File,
}

impl Drop for ProcessTmp {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The outcome of [`Store::try_lock_node`].
#[derive(Debug)]
pub enum LockAttempt {
    Acquired(NodeLock),
    /// Someone else holds it: who, for a log line.
    Held(String),
}

/// A node's lock (and a shard's), held until dropped; the kernel releases
/// it if the process dies.
#[derive(Debug)]
pub struct NodeLock {
    /// The exclusive one first: it carries the holder's name.
    files: Vec<File>,
}

impl NodeLock {
    fn mark_holder(&self) -> Result<()> {
        let mut f = &self.files[0];
        let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let text = format!("process {} on `{}` since {}", std::process::id(), host.trim(), chrono::Utc::now().to_rfc3339());
        f.set_len(0)?;
        f.write_all(text.as_bytes())?;
        Ok(())
    }
}

impl Drop for NodeLock {
    fn drop(&mut self) {
        // Only an exclusive holder wrote its name; clear it so that a
        // waiter never names a process that is gone.
        let _ = self.files[0].set_len(0);
    }
}

/// Who holds a lock, as its file says (shard runs share the node's lock
/// and write nothing into it).
fn holder(path: &Path) -> String {
    match fs::read_to_string(path) {
        Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
        _ => "a sharded run (`--shard`)".to_string(),
    }
}

/// Where a replaced artifact waits while its successor moves in.
pub(super) fn replaced_backup(final_dir: &Path) -> PathBuf {
    let name = final_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    final_dir.with_file_name(format!(".{name}.replaced"))
}
