//! The stage seam: what the planner and the executor know of a stage.
//!
//! A stage is one file under `src/mpo/` that implements [`Stage`]: its
//! name and version, the slice of the spec in its cache key, what
//! `--dry-run` says of its work, and an async `run` that writes its
//! artifact. The planner (`plan`) holds nodes as `dyn Stage` and keys them;
//! the executor (`exec`) runs them with a [`NodeCtx`] without knowing what
//! they are (as cargo's job queue runs jobs). Inputs are read by role: a
//! consumer keeps the [`Slot`] it was wired with and reads the producer's
//! artifact with the producer's own reader (no consumer spells another
//! stage's file names). See `docs/ARCHITECTURE.md`.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Result};
use async_trait::async_trait;
use indicatif::ProgressBar;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::store::{ArtifactWriter, Store};

/// One kind of node in the DAG.
#[async_trait]
pub trait Stage: Send + Sync + std::fmt::Debug {
    /// The stage's name (`expert`, `sample_plans`, …): its artifacts' folder
    /// and what `--only`/`--force` name.
    fn name(&self) -> &'static str;
    /// Bumped when the stage's code changes what it produces (in the key).
    fn version(&self) -> u32;
    /// The slice of the spec the stage reads, as typed values (in the key).
    fn config(&self) -> serde_json::Value;
    /// Records the keys of the node's inputs once they are known (model
    /// references to trained weights carry their producer's key).
    fn bind(&mut self, _input_keys: &[String]) {}
    /// The served models it generates from, by lease
    /// (`mpo::models::ModelRef::lease`, once bound): the executor stops a
    /// model's server when no node left to settle names its lease.
    fn leases(&self) -> Vec<String> {
        Vec::new()
    }
    /// The item journal its items live in; stages that compute the same
    /// kind of item share one (`mc_rollouts` and `eval`: `episodes`), so
    /// the same item is never computed twice.
    fn journal(&self) -> &'static str {
        self.name()
    }
    /// Whether `--shard i/N` splits its work: its items are journaled
    /// through `run_items`, and each shard computes its own. A stage
    /// without items (a training, pairs) runs whole, in one process, under
    /// `--shard` too.
    fn sharded(&self) -> bool {
        false
    }
    /// What `--dry-run` says of its work; `inputs` are the input artifacts'
    /// directories where they exist, in wiring order.
    fn items(&self, inputs: &[Option<PathBuf>]) -> Result<Items>;
    /// Computes the artifact into `writer` (committed by the executor).
    async fn run(&self, ctx: &NodeCtx, writer: &ArtifactWriter) -> Result<StageOutput>;
    /// The command lines it will run outside mpo-run (an external training
    /// engine under its launcher), with `work` its working dir; `--dry-run`
    /// prints them.
    fn commands(&self, _work: &Path) -> Vec<String> {
        Vec::new()
    }
    /// What datasets its artifact offers to other trainers (`mpo-run
    /// export`), for people; `None` for stages that offer none.
    fn exports(&self) -> Option<&'static str> {
        None
    }
    /// Writes those datasets from its finished `artifact` into `to`;
    /// returns their `dataset_info.json` entries and a line for people.
    fn export(&self, _artifact: &Path, _to: &Path) -> Result<Exported> {
        Err(anyhow!("stage `{}` exports no dataset", self.name()))
    }
}

/// Datasets a stage exported.
#[derive(Clone, Debug, Default)]
pub struct Exported {
    /// LLaMA-Factory's `dataset_info.json` entries of the files written.
    pub info: serde_json::Map<String, serde_json::Value>,
    /// What was written, for people.
    pub line: String,
}

/// A stage's work as `--dry-run` counts it.
#[derive(Clone, Debug, PartialEq)]
pub enum Items {
    /// Memoised items with these keys.
    Keys(Vec<String>),
    /// Items known only once the inputs exist (e.g. the plans a rollout
    /// stage scores).
    KnownLater,
    /// One job rather than items, described for people.
    Whole(&'static str),
}

/// An input of a node, by its position among the node's inputs; a stage
/// keeps the slots it was wired with, one per role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Slot(pub usize);

impl Slot {
    /// Adds `node` to `inputs` and returns its slot.
    pub fn push(inputs: &mut Vec<usize>, node: usize) -> Slot {
        inputs.push(node);
        Slot(inputs.len() - 1)
    }
    /// The input's directory among `dirs` (dry run), if it exists.
    pub fn dir_in(self, dirs: &[Option<PathBuf>]) -> Option<&Path> {
        dirs.get(self.0).and_then(|d| d.as_deref())
    }
}

/// An input's artifact as a running node sees it.
#[derive(Clone, Debug)]
pub struct Input {
    pub stage: &'static str,
    pub key: String,
    pub label: String,
    /// The artifact's directory.
    pub dir: PathBuf,
}

impl NodeCtx {
    /// Records that the node generates from `model`, when its server
    /// exposes prefix-cache counters: the executor writes the node's hit
    /// rate into the run log and the manifest (`serving`).
    pub async fn used(&self, name: &str, model: &Arc<dyn crate::model::ChatModel>) {
        let known = self.served.lock().expect("poisoned").iter().any(|u| Arc::ptr_eq(&u.model, model));
        if known {
            return;
        }
        if let Some(start) = model.prefix_cache().await {
            let mut served = self.served.lock().expect("poisoned");
            if !served.iter().any(|u| Arc::ptr_eq(&u.model, model)) {
                served.push(UsedModel { name: name.to_string(), model: model.clone(), start });
            }
        }
    }

    /// Each used served model's prefix-cache traffic while the node ran:
    /// `{queried_tokens, hit_tokens, hit_rate}` by model name (the server's
    /// totals, so other nodes that used it at the same time count too).
    pub async fn serving(&self) -> BTreeMap<String, serde_json::Value> {
        let used: Vec<(String, Arc<dyn crate::model::ChatModel>, (f64, f64))> =
            self.served.lock().expect("poisoned").iter().map(|u| (u.name.clone(), u.model.clone(), u.start)).collect();
        let mut out = BTreeMap::new();
        for (name, model, (q0, h0)) in used {
            if let Some((q, h)) = model.prefix_cache().await {
                let (dq, dh) = ((q - q0).max(0.0), (h - h0).max(0.0));
                let rate = if dq > 0.0 { Some(dh / dq) } else { None };
                out.insert(name, serde_json::json!({ "prefix_cache_queried_tokens": dq, "prefix_cache_hit_tokens": dh, "prefix_cache_hit_rate": rate }));
            }
        }
        out
    }

    /// The artifact directory of the input in `slot`, checked against its
    /// manifest's hashes (once per process; the executor has normally
    /// checked it already when it found it cached). A corrupt input is moved
    /// aside by the store and fails this node; the next run recomputes it.
    pub fn input(&self, slot: Slot) -> Result<&Path> {
        let input = self
            .inputs
            .get(slot.0)
            .ok_or_else(|| anyhow!("`{}`: input {} is missing (a wiring bug)", self.label, slot.0))?;
        if self.store.manifest(input.stage, &input.key).is_none() {
            return Err(anyhow!(
                "`{}`: input `{}` at `{}` is missing or corrupt (see the warning above); rerun to recompute it",
                self.label,
                input.label,
                input.dir.display()
            ));
        }
        Ok(input.dir.as_path())
    }
}

/// What a stage wrote.
#[derive(Clone, Debug, Default)]
pub struct StageOutput {
    pub rows: BTreeMap<String, usize>,
    pub reused: usize,
    pub computed: usize,
    /// Items recorded as transient failures (see `Manifest::items_failed`).
    pub failed: usize,
}

impl StageOutput {
    pub fn new(reused: usize, computed: usize) -> Self {
        Self { rows: BTreeMap::new(), reused, computed, failed: 0 }
    }
    /// Items recorded as transient failures, retried by the next run.
    pub fn failed(mut self, n: usize) -> Self {
        self.failed = n;
        self
    }
    /// A Parquet table `<name>.parquet` with `rows` rows.
    pub fn table(mut self, name: &str, rows: usize) -> Self {
        self.rows.insert(format!("{name}.parquet"), rows);
        self
    }
    /// Another file with `rows` records.
    pub fn file(mut self, name: &str, rows: usize) -> Self {
        self.rows.insert(name.to_string(), rows);
        self
    }
}

/// Item values of a node, in item order.
pub struct ItemResults {
    pub values: Vec<serde_json::Value>,
    pub reused: usize,
    pub computed: usize,
    /// Values that are transient failures (not journaled).
    pub transient: usize,
}

/// An item value that records a transient failure (an environment failure
/// after its retries): it is written to the results but not journaled, so
/// the next run retries it.
pub fn is_transient(value: &serde_json::Value) -> bool {
    value.get("env_failure").is_some_and(|v| !v.is_null())
}

/// What a running node sees.
pub struct NodeCtx {
    pub store: Store,
    /// The stage's name (its artifacts' folder).
    pub stage: &'static str,
    /// The node's cache key.
    pub key: String,
    /// The node's human name, e.g. `sample_plans[household/planner]`.
    pub label: String,
    /// Its inputs' artifacts, in the order the node was wired with.
    pub inputs: Vec<Input>,
    pub progress: ProgressBar,
    pub force: bool,
    pub models: Arc<crate::model::Registry>,
    pub envs: Arc<crate::env::Registry>,
    pub shard: Option<(u32, u32)>,
    /// The item journal the stage's items live in ([`Stage::journal`]).
    pub journal: &'static str,
    /// Served models the node generated from, with their prefix-cache
    /// counters when it started using them (see [`NodeCtx::used`]).
    pub served: std::sync::Mutex<Vec<UsedModel>>,
}

/// A served model a node generated from.
pub struct UsedModel {
    pub name: String,
    pub model: Arc<dyn crate::model::ChatModel>,
    /// `(queried, hit)` prompt tokens of the server's prefix cache when the
    /// node started using it.
    pub start: (f64, f64),
}

/// A sharded node computed its part (not a failure).
#[derive(Debug, thiserror::Error)]
#[error("shard finished {computed} items")]
pub struct ShardIncomplete {
    pub computed: usize,
}

/// Whether an item key belongs to shard `i` of `n`.
pub fn in_shard(key: &str, (i, n): (u32, u32)) -> bool {
    let h = blake3::hash(key.as_bytes());
    u32::from_le_bytes(h.as_bytes()[..4].try_into().expect("4 bytes")) % n == i
}

/// Test knob: sleep this many ms in each computed item (crash tests need a
/// run that is reliably mid-stage when killed). Not a spec key.
fn test_item_delay() -> Option<Duration> {
    std::env::var("MPORUN_TEST_ITEM_DELAY_MS").ok()?.parse().ok().map(Duration::from_millis)
}

impl NodeCtx {
    /// Runs `items` (key, input) with at most `concurrency` at once: items
    /// whose key is in the journal are reused, the others computed by `f`
    /// and journaled as each finishes. Fails if any item failed, after all
    /// others finished (and were journaled).
    ///
    /// An item is computed only under its claim ([`Journal::claim`]): items
    /// another node (of this process or another one) is computing wait
    /// until it lets go, then are reused from the journal (or computed here
    /// if it failed or died). So two nodes that share items never compute
    /// one twice, even when they run at the same moment.
    pub async fn run_items<T, F, Fut>(
        &self,
        items: Vec<(String, T)>,
        concurrency: usize,
        f: F,
    ) -> Result<ItemResults>
    where
        T: Send + 'static,
        F: Fn(T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<serde_json::Value>> + Send + 'static,
    {
        let journal = self.store.journal(self.journal)?;
        let total = items.len();
        let mut values: Vec<Option<serde_json::Value>> = vec![None; total];
        let mut todo = Vec::new();
        for (i, (key, input)) in items.into_iter().enumerate() {
            match (self.force, journal.get(&key)) {
                (false, Some(v)) => values[i] = Some(v),
                _ => todo.push((i, key, input)),
            }
        }
        if let Some(shard) = self.shard {
            todo.retain(|(_, key, _)| in_shard(key, shard));
        }
        self.progress.set_length(total as u64);
        self.progress.set_position((total - todo.len()) as u64);
        let delay = test_item_delay();
        let f = Arc::new(f);
        let sem = Arc::new(Semaphore::new(concurrency.max(1)));
        let computed = Arc::new(AtomicUsize::new(0));
        let mut set = JoinSet::new();
        let mut waiting = todo;
        let mut polls = 0u32;
        loop {
            // Claim what nobody computes now, then look at the journal once
            // more: an item finished under an earlier claim is reused.
            let mut claimed = Vec::new();
            let mut held = Vec::new();
            for (i, key, input) in waiting {
                match journal.claim(&key)? {
                    Some(c) => claimed.push((i, key, input, c)),
                    None => held.push((i, key, input)),
                }
            }
            // Another process may have journaled some of these items since
            // this one read the journal (it ran another node that shares
            // them): read what it added after claiming, so nothing finished
            // under a released claim is missed.
            journal.refresh()?;
            for (i, key, input, claim) in claimed {
                if !self.force {
                    if let Some(v) = journal.get(&key) {
                        values[i] = Some(v);
                        self.progress.inc(1);
                        continue;
                    }
                }
                let (f, sem, journal, pb, force) =
                    (f.clone(), sem.clone(), journal.clone(), self.progress.clone(), self.force);
                let computed = computed.clone();
                set.spawn(async move {
                    let _permit = sem.acquire_owned().await.expect("semaphore open");
                    if let Some(d) = delay {
                        tokio::time::sleep(d).await;
                    }
                    computed.fetch_add(1, Ordering::Relaxed);
                    let out = f(input).await;
                    let out = match out {
                        Ok(v) if is_transient(&v) => Ok(v),
                        Ok(v) => {
                            let rec = if force { journal.record_forced(&key, &v) } else { journal.record(&key, &v) };
                            rec.map(|_| v)
                        }
                        Err(e) => Err(e),
                    };
                    // Journaled first, then let go.
                    drop(claim);
                    pb.inc(1);
                    (i, out)
                });
            }
            // Items another node holds: reused once it journals them.
            waiting = Vec::new();
            for (i, key, input) in held {
                match journal.get(&key) {
                    Some(v) if !self.force => {
                        values[i] = Some(v);
                        self.progress.inc(1);
                    }
                    _ => waiting.push((i, key, input)),
                }
            }
            if waiting.is_empty() {
                break;
            }
            if polls == 0 {
                tracing::info!(
                    "`{}`: {} of its items are being computed by another node or process; waiting to reuse them",
                    self.label,
                    waiting.len()
                );
            }
            polls += 1;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let mut errors = Vec::new();
        while let Some(joined) = set.join_next().await {
            let (i, out) = joined.map_err(|e| anyhow!("item task panicked: {e}"))?;
            match out {
                Ok(v) => values[i] = Some(v),
                Err(e) => errors.push(format!("item {i}: {e:#}")),
            }
        }
        journal.sync()?;
        let computed = computed.load(Ordering::Relaxed);
        let reused = total - computed;
        if errors.is_empty() && self.shard.is_some() {
            return Err(ShardIncomplete { computed }.into());
        }
        if !errors.is_empty() {
            errors.sort();
            let shown: Vec<_> = errors.iter().take(3).cloned().collect();
            return Err(anyhow!(
                "{} of {} items failed (finished items are kept; a rerun retries only the failed ones): {}",
                errors.len(),
                total,
                shown.join("; ")
            ));
        }
        let values: Vec<serde_json::Value> = values.into_iter().map(|v| v.expect("every item has a value")).collect();
        let transient = values.iter().filter(|v| is_transient(v)).count();
        Ok(ItemResults { values, reused, computed, transient })
    }
}

