//! The store: everything a run writes under the results dir.
//!
//! ```text
//! results/
//!   artifacts/<stage>/<key>/   a finished stage output: manifest.json + files
//!   tmp/proc-<pid>-<nonce>/     one dir per live process: the artifacts and
//!                               files it is writing (never read as done),
//!                               and its `lock`
//!   locks/<stage>/<key>.lock    a node's lock (see below); never removed
//!   items/<stage>/*.jsonl       item journals: one line per finished item
//!   <experiment>/<table>.parquet  collated results, one row per thing
//!   <experiment>/index.json     each node's last key, config and inputs (why a
//!                               node reruns)
//!   train/<stage>/<key>/        a training's checkpoints while it runs (removed
//!                               once its artifact is committed)
//!   train/dpo/<key>.reference.jsonl  DPO's reference scores while it trains
//!   runs/<time>-<experiment>.log  one log file per run
//! ```
//!
//! Every path under the results dir is built here; stages ask the store for
//! a place rather than joining names onto its root.
//!
//! Invariants:
//! - An artifact directory exists under `artifacts/` only if it is complete:
//!   it is written under `tmp/`, every file is fsynced, the manifest is
//!   written last, and the directory is renamed into place (atomic on one
//!   filesystem). A crash leaves at most garbage under `tmp/`.
//! - Item journals are append-only. A line is written with one `write` call
//!   as soon as its item finishes, so a SIGKILL loses at most the item being
//!   written; a torn last line is ignored on reading. Every process appends
//!   to its own segment file, so a torn line is never followed by new data.
//! - Items are memoised by their own key (not the stage's), so stages that
//!   differ only in how many items they want share the items they have in
//!   common (M = 3 then M = 5 samples only 2 more plans).
//!
//! Sharing a results dir (#22). Any number of processes — runs of the same
//! or different specs, the shards of a `--shard i/N` job array, `status`,
//! `report` — may use one results dir at once:
//! - Temp files are private. Each writing process makes its own
//!   `tmp/proc-<pid>-<nonce>/` and holds an exclusive advisory lock on its
//!   `lock` file while it lives; artifacts and collated tables are written
//!   there and renamed into place. Other temp names (training checkpoints,
//!   figures) carry [`unique_suffix`]. [`Store::clean_tmp`] (every run, at
//!   start) removes only process dirs whose lock it can take, i.e. whose
//!   owner is gone.
//! - A node is computed by one process at a time. Before it runs, the
//!   executor takes `locks/<stage>/<key>.lock` ([`Store::try_lock_node`]):
//!   exclusive for a plain run (the holder writes its pid and host into
//!   the file); shared for a sharded run, plus an exclusive lock on
//!   `<key>.shard-<i>-of-<n>.lock`. A process that finds the lock held
//!   logs who holds it and polls; once it gets the lock it looks again and
//!   reports the node `cached` if the holder committed it, or runs it
//!   reusing every item the holder journaled (journals are re-read before
//!   a node runs). So two runs never compute a node's items twice, shards
//!   of one job array run side by side on disjoint items, two runs of one
//!   shard take turns, and the assembling plain run waits for the shards
//!   still running.
//! - No deadlock: locks are only tried (never awaited while another is
//!   held), a task holds at most one node's locks, and only while it
//!   computes that node, whose inputs are already committed; a task never
//!   holds a job slot while it waits for a lock. A killed holder's locks
//!   are released by the kernel.
//! - Limits: two *different* nodes whose items overlap (`mc_rollouts` and
//!   `eval` share `episodes`) may still compute a shared item in both
//!   processes if they run at the very same time (the journal keeps one
//!   value per key). `mpo-run clean` run beside other runs may remove an
//!   artifact that a run of another spec is about to read.
//! - `--force STAGE` replaces: the forced node's new artifact is swapped in
//!   under its lock (old renamed to `.<key>.replaced`, new renamed into
//!   place, backup removed; [`Store::recover_replaced`] finishes a swap a
//!   crash interrupted), so the artifact agrees with the journal's forced
//!   records, and a corrupt artifact is repaired.
//! - Needs one POSIX filesystem shared by every process, with working
//!   `flock(2)` and atomic `rename(2)`: a local disk, or a cluster
//!   filesystem that supports both (Lustre, GPFS, BeeGFS with flock
//!   enabled). On NFS, Linux emulates `flock` with byte-range locks (NFSv4
//!   or v3 with lockd): it works if every client mounts without `nolock`
//!   and `local_lock=none`, but a client that loses its lease loses its
//!   locks; prefer a local disk or a lock-coherent cluster filesystem.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use fs2::FileExt;
use serde::{Deserialize, Serialize};

mod sharing;
pub mod table;

use sharing::{replaced_backup, ProcessTmp};
pub use sharing::{unique_suffix, LockAttempt, NodeLock};

/// The version of the on-disk layout; bump on purpose when it changes.
pub const LAYOUT_VERSION: u32 = 1;

/// What a finished artifact says about itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub stage: String,
    pub key: String,
    pub label: String,
    /// Keys of the artifacts this one was computed from.
    pub inputs: Vec<String>,
    /// The canonical config slice that went into the key.
    pub config: serde_json::Value,
    pub tool_version: String,
    pub created: String,
    /// Rows per table file.
    pub rows: BTreeMap<String, usize>,
    /// Items reused from the journal vs computed in this run.
    pub items_reused: usize,
    pub items_computed: usize,
    /// Items recorded as transient failures (environment failures after
    /// their retries): their rows say so, they are not journaled, and the
    /// artifact is not final — the next run reruns the stage, reusing every
    /// finished item and retrying only these.
    #[serde(default)]
    pub items_failed: usize,
}

/// What the index remembers of a node from the last time a plan of this
/// experiment ran, to explain why something reruns.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct IndexEntry {
    pub key: String,
    pub config: serde_json::Value,
    /// Labels of its inputs.
    pub inputs: Vec<String>,
}

/// Label → last key and config, per experiment (`<experiment>/index.json`).
pub type Index = BTreeMap<String, IndexEntry>;

/// The results directory.
#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
    journals: Arc<Mutex<HashMap<String, Arc<Journal>>>>,
    /// This process's own temp dir under `tmp/`, made on first use.
    process_tmp: Arc<Mutex<Option<Arc<ProcessTmp>>>>,
    /// Opened only to look (dry run, status, report): creates nothing.
    read_only: bool,
}

impl Store {
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        for sub in ["artifacts", "tmp", "items", "runs"] {
            fs::create_dir_all(root.join(sub))
                .with_context(|| format!("cannot create `{}`", root.join(sub).display()))?;
        }
        Ok(Self { root, journals: Arc::default(), process_tmp: Arc::default(), read_only: false })
    }

    /// A store to look at without creating or writing anything (a missing
    /// results dir reads as empty).
    pub fn open_read_only(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into(), journals: Arc::default(), process_tmp: Arc::default(), read_only: true }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn artifact_dir(&self, stage: &str, key: &str) -> PathBuf {
        self.root.join("artifacts").join(stage).join(key)
    }

    /// Where a training stage's node keeps its checkpoints while it runs.
    pub fn checkpoint_dir(&self, stage: &str, key: &str) -> PathBuf {
        self.root.join("train").join(stage).join(key)
    }

    /// Where a training stage's node keeps scores computed once before it
    /// trains (DPO's reference log-probabilities), until it is committed.
    pub fn training_scores_path(&self, stage: &str, key: &str, what: &str) -> PathBuf {
        self.root.join("train").join(stage).join(format!("{key}.{what}.jsonl"))
    }

    /// The directory of an experiment's collated tables and index.
    pub fn experiment_dir(&self, experiment: &str) -> PathBuf {
        self.root.join(experiment)
    }

    /// Where run logs go.
    pub fn runs_dir(&self) -> PathBuf {
        self.root.join("runs")
    }

    /// Where item journals go.
    pub fn items_dir(&self) -> PathBuf {
        self.root.join("items")
    }

    /// The index of an experiment; empty when there is none (or it cannot
    /// be read: it only explains reruns, never decides them).
    pub fn load_index(&self, experiment: &str) -> Index {
        fs::read_to_string(self.experiment_dir(experiment).join("index.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    /// Adds or replaces `entries` in an experiment's index.
    pub fn update_index(&self, experiment: &str, entries: impl IntoIterator<Item = (String, IndexEntry)>) -> Result<()> {
        // Runs of one experiment finishing together must not lose each
        // other's entries (read-modify-write under a short lock).
        let lock = self.open_lock_file(&self.root.join("locks").join(format!("index-{experiment}.lock")))?;
        lock.lock_exclusive().context("cannot lock the index")?;
        let mut index = self.load_index(experiment);
        index.extend(entries);
        write_atomic(&self.experiment_dir(experiment).join("index.json"), serde_json::to_string_pretty(&index)?.as_bytes())
    }

    /// Training checkpoints and scores left by trainings whose artifact is
    /// not committed (a killed run leaves them to resume from): `(stage,
    /// key or file name)` pairs under `train/`.
    pub fn training_leftovers(&self) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        let Ok(stages) = fs::read_dir(self.root.join("train")) else { return Ok(out) };
        for stage in stages {
            let stage = stage?;
            if !stage.file_type()?.is_dir() {
                continue;
            }
            for entry in fs::read_dir(stage.path())? {
                out.push((stage.file_name().to_string_lossy().into_owned(), entry?.file_name().to_string_lossy().into_owned()));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Removes a training's leftovers (`name`: a key or a scores file name).
    pub fn remove_training_leftover(&self, stage: &str, name: &str) -> Result<()> {
        let path = self.root.join("train").join(stage).join(name);
        if path.is_dir() {
            fs::remove_dir_all(&path)?;
        } else if path.exists() {
            fs::remove_file(&path)?;
        }
        Ok(())
    }

    /// The manifest of a finished artifact, if there is one.
    pub fn manifest(&self, stage: &str, key: &str) -> Option<Manifest> {
        let path = self.artifact_dir(stage, key).join("manifest.json");
        let text = fs::read_to_string(path).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// A committed artifact (possibly with transient failures to retry).
    pub fn exists(&self, stage: &str, key: &str) -> bool {
        self.manifest(stage, key).is_some()
    }

    /// A committed artifact without transient failures: nothing to redo.
    pub fn is_done(&self, stage: &str, key: &str) -> bool {
        self.manifest(stage, key).is_some_and(|m| m.items_failed == 0)
    }

    /// Starts writing an artifact (in this process's temp dir). Its commit
    /// keeps a complete artifact committed first by another process.
    pub fn begin(&self, stage: &str, key: &str) -> Result<ArtifactWriter> {
        anyhow::ensure!(!self.read_only, "internal error: writing to a store opened read-only");
        let owner = self.process_tmp()?;
        let dir = owner.dir.join(format!("{stage}-{key}-{}", unique_suffix()));
        fs::create_dir_all(&dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
        Ok(ArtifactWriter { dir, final_dir: self.artifact_dir(stage, key), replace: false, _owner: owner })
    }

    /// Starts writing an artifact recomputed on purpose (`--force`): its
    /// commit replaces whatever is committed under the key, atomically.
    pub fn begin_replacing(&self, stage: &str, key: &str) -> Result<ArtifactWriter> {
        Ok(ArtifactWriter { replace: true, ..self.begin(stage, key)? })
    }

    /// The journal of items of one namespace (normally the stage name),
    /// shared by every node of this process.
    pub fn journal(&self, namespace: &str) -> Result<Arc<Journal>> {
        let mut map = self.journals.lock().expect("journal map poisoned");
        if let Some(j) = map.get(namespace) {
            return Ok(j.clone());
        }
        let j = Arc::new(Journal::open(&self.root.join("items").join(namespace), !self.read_only)?);
        map.insert(namespace.to_string(), j.clone());
        Ok(j)
    }

    /// Every committed artifact: (stage, key).
    pub fn artifacts(&self) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        let base = self.root.join("artifacts");
        for stage in read_dir_sorted(&base)? {
            for key in read_dir_sorted(&base.join(&stage))? {
                // `.<key>.replaced`: the backup of a replacement under way.
                if key.starts_with('.') {
                    continue;
                }
                out.push((stage.clone(), key));
            }
        }
        Ok(out)
    }

}

fn read_dir_sorted(dir: &Path) -> Result<Vec<String>> {
    if !dir.exists() {
        return Ok(vec![]);
    }
    let mut names: Vec<String> = fs::read_dir(dir)
        .with_context(|| format!("cannot list `{}`", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names)
}

/// An artifact being written. Dropped without [`ArtifactWriter::commit`], it
/// leaves only a directory in its process's temp dir.
pub struct ArtifactWriter {
    dir: PathBuf,
    final_dir: PathBuf,
    /// Recomputed on purpose (`--force`): replaces a complete artifact.
    replace: bool,
    /// Keeps the process's temp dir (and its lock) alive while writing.
    _owner: Arc<ProcessTmp>,
}

impl ArtifactWriter {
    /// Where to put files of this artifact.
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    pub fn write_json<T: Serialize>(&self, file: &str, value: &T) -> Result<()> {
        let text = serde_json::to_vec_pretty(value)?;
        fs::write(self.path(file), text)?;
        Ok(())
    }

    /// Writes the manifest, fsyncs everything and renames the directory into
    /// place. If another process committed the same key first, ours is
    /// discarded (same key, same content) — unless this writer replaces
    /// ([`Store::begin_replacing`]).
    ///
    /// A replacement is a swap: the old directory is renamed to
    /// `.<key>.replaced`, the new one into place, then the backup removed.
    /// A crash in between leaves the old artifact (as the backup) or the
    /// new one, and [`Store::recover_replaced`] finishes the job; the
    /// caller holds the node's lock, so no two swaps of a key interleave.
    pub fn commit(self, manifest: &Manifest) -> Result<PathBuf> {
        self.write_json("manifest.json", manifest)?;
        sync_tree(&self.dir)?;
        if let Some(parent) = self.final_dir.parent() {
            fs::create_dir_all(parent)?;
        }
        let existing: Option<Manifest> = fs::read_to_string(self.final_dir.join("manifest.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        if !self.replace && existing.as_ref().is_some_and(|m| m.items_failed == 0) {
            // Another process committed the same key first (same content).
            let _ = fs::remove_dir_all(&self.dir);
            return Ok(self.final_dir);
        }
        let moved = |from: &Path, to: &Path| {
            fs::rename(from, to).with_context(|| format!("cannot move `{}` to `{}`", from.display(), to.display()))
        };
        let backup = replaced_backup(&self.final_dir);
        if backup.exists() {
            // Left by a crash after a swap whose new artifact is in place.
            if self.final_dir.exists() {
                fs::remove_dir_all(&backup)?;
            } else {
                moved(&backup, &self.final_dir)?;
            }
        }
        let replacing = self.final_dir.exists();
        if replacing {
            // A complete artifact recomputed on purpose, an earlier attempt
            // with transient failures, or garbage without a manifest.
            moved(&self.final_dir, &backup)?;
        }
        if let Err(e) = moved(&self.dir, &self.final_dir) {
            if replacing {
                let _ = fs::rename(&backup, &self.final_dir);
            }
            return Err(e);
        }
        if let Some(parent) = self.final_dir.parent() {
            File::open(parent).and_then(|f| f.sync_all()).ok();
        }
        if replacing {
            fs::remove_dir_all(&backup).with_context(|| format!("cannot remove `{}`", backup.display()))?;
        }
        Ok(self.final_dir)
    }
}

fn sync_tree(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let p = entry.path();
        if p.is_dir() {
            sync_tree(&p)?;
        } else {
            File::open(&p)?.sync_all()?;
        }
    }
    File::open(dir)?.sync_all()?;
    Ok(())
}

/// Writes `bytes` to `path` atomically (temp file, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    File::open(dir).and_then(|f| f.sync_all()).ok();
    Ok(())
}

/// One journal line.
#[derive(Serialize, Deserialize)]
struct JournalLine {
    key: String,
    value: serde_json::Value,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("dir", &self.dir).field("items", &self.len()).finish()
    }
}

/// Append-only record of finished items, keyed by item key.
pub struct Journal {
    dir: PathBuf,
    done: Mutex<HashMap<String, serde_json::Value>>,
    segment: Mutex<Option<File>>,
}

impl Journal {
    fn open(dir: &Path, create: bool) -> Result<Self> {
        if create {
            fs::create_dir_all(dir)?;
        }
        let mut done = HashMap::new();
        for name in read_dir_sorted(dir)? {
            if !name.ends_with(".jsonl") {
                continue;
            }
            let file = File::open(dir.join(&name))?;
            for line in BufReader::new(file).lines() {
                let Ok(line) = line else { break };
                // A torn last line (killed mid-write) does not parse: skip it.
                // Segments are named by creation time, so a later (forced)
                // record of a key wins.
                if let Ok(l) = serde_json::from_str::<JournalLine>(&line) {
                    done.insert(l.key, l.value);
                }
            }
        }
        Ok(Self { dir: dir.to_path_buf(), done: Mutex::new(done), segment: Mutex::new(None) })
    }

    /// Adds the items other processes journaled since this journal was
    /// read (a node about to run must not redo what a concurrent run of
    /// another node finished meanwhile). What this process knows wins,
    /// so its own forced records stay.
    pub fn refresh(&self) -> Result<()> {
        let fresh = Self::open(&self.dir, false)?;
        let fresh = fresh.done.into_inner().expect("journal poisoned");
        let mut done = self.done.lock().expect("journal poisoned");
        for (key, value) in fresh {
            done.entry(key).or_insert(value);
        }
        Ok(())
    }

    pub fn get(&self, key: &str) -> Option<serde_json::Value> {
        self.done.lock().expect("journal poisoned").get(key).cloned()
    }

    pub fn len(&self) -> usize {
        self.done.lock().expect("journal poisoned").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records a finished item. The first value recorded for a key wins, so
    /// a retried item is never duplicated.
    pub fn record(&self, key: &str, value: &serde_json::Value) -> Result<()> {
        {
            let mut done = self.done.lock().expect("journal poisoned");
            if done.contains_key(key) {
                return Ok(());
            }
            done.insert(key.to_string(), value.clone());
        }
        self.append(key, value)
    }

    /// Records an item recomputed on purpose (`--force`): it replaces the
    /// earlier value, now and on later reads.
    pub fn record_forced(&self, key: &str, value: &serde_json::Value) -> Result<()> {
        self.done.lock().expect("journal poisoned").insert(key.to_string(), value.clone());
        self.append(key, value)
    }

    fn append(&self, key: &str, value: &serde_json::Value) -> Result<()> {
        let mut line = serde_json::to_vec(&JournalLine { key: key.to_string(), value: value.clone() })?;
        line.push(b'\n');
        let mut seg = self.segment.lock().expect("journal poisoned");
        if seg.is_none() {
            let name = format!(
                "{}-{}.jsonl",
                chrono::Utc::now().format("%Y%m%dT%H%M%S%.9f"),
                std::process::id()
            );
            let f = OpenOptions::new().create(true).append(true).open(self.dir.join(name))?;
            *seg = Some(f);
        }
        let f = seg.as_mut().expect("segment open");
        // One write call per line: a kill leaves whole lines and at most one
        // torn last line.
        f.write_all(&line)?;
        Ok(())
    }

    /// Flushes the segment to disk (called when a stage finishes).
    pub fn sync(&self) -> Result<()> {
        if let Some(f) = self.segment.lock().expect("journal poisoned").as_ref() {
            f.sync_data()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod sharing_tests;
