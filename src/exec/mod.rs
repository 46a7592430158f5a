//! The executor: runs a plan's nodes on tokio.
//!
//! A node runs when all its inputs are committed; up to `jobs` nodes run at
//! once. A node whose artifact exists is skipped ("cached"). Inside a node,
//! items run concurrently (bounded by the stage) and each finished item is
//! journaled at once, so a killed run resumes without redoing or duplicating
//! finished work. A node with failed items is not committed: the run goes on
//! with the nodes that do not depend on it and the exit status says it
//! failed; a rerun retries only the failed items.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::plan::{Node, Plan};
use crate::store::{Manifest, Store};

/// How to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Nodes running at once.
    pub jobs: usize,
    /// Run only these stages (and what they need).
    pub only: Vec<String>,
    /// Rerun these stages even if cached, recomputing their items.
    pub force: Vec<String>,
    /// Show progress bars (on stderr, when it is a terminal).
    pub progress: bool,
    /// `(i, n)`: compute only the items whose key hashes to shard `i` of
    /// `n` (DESIGN.md §5: a job array over a shared results dir). Sharded
    /// nodes journal their items but commit nothing; a final run without
    /// `--shard` assembles the artifacts from the journals.
    pub shard: Option<(u32, u32)>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self { jobs: 4, only: vec![], force: vec![], progress: false, shard: None }
    }
}

/// What became of one node.
#[derive(Clone, Debug, PartialEq)]
pub enum NodeStatus {
    Cached,
    Ran { reused: usize, computed: usize, seconds: f64 },
    Failed(String),
    /// An input failed.
    Blocked,
    /// This shard's items are done; the node is assembled by a run without
    /// `--shard`.
    ShardDone { computed: usize },
    /// An input is not assembled yet (sharded run).
    WaitingForShards,
    /// Not selected by `--only`.
    NotSelected,
}

/// The outcome of a run.
#[derive(Clone, Debug)]
pub struct RunSummary {
    pub statuses: Vec<(String, String, NodeStatus)>,
}

impl RunSummary {
    pub fn failed(&self) -> bool {
        self.statuses.iter().any(|(_, _, s)| matches!(s, NodeStatus::Failed(_) | NodeStatus::Blocked))
    }
    pub fn ran(&self) -> usize {
        self.statuses.iter().filter(|(_, _, s)| matches!(s, NodeStatus::Ran { .. })).count()
    }
    pub fn cached(&self) -> usize {
        self.statuses.iter().filter(|(_, _, s)| matches!(s, NodeStatus::Cached)).count()
    }
    /// One line per node, for the end of a run.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (label, _key, s) in &self.statuses {
            let text = match s {
                NodeStatus::Cached => "cached".to_string(),
                NodeStatus::Ran { reused, computed, seconds } => {
                    format!("ran in {seconds:.1}s ({computed} items computed, {reused} reused)")
                }
                NodeStatus::Failed(e) => format!("FAILED: {e}"),
                NodeStatus::Blocked => "not run: an input failed".to_string(),
                NodeStatus::ShardDone { computed } => format!("shard done ({computed} items computed); assemble with a run without --shard"),
                NodeStatus::WaitingForShards => "waits for its inputs to be assembled from all shards".to_string(),
                NodeStatus::NotSelected => "not selected (--only)".to_string(),
            };
            out.push_str(&format!("  `{label}`: {text}\n"));
        }
        out
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
    pub node: Node,
    /// Input nodes and their artifact directories, in `node.inputs` order.
    pub inputs: Vec<(Node, PathBuf)>,
    pub progress: ProgressBar,
    pub force: bool,
    pub models: Arc<crate::model::Registry>,
    pub envs: Arc<crate::env::Registry>,
    pub shard: Option<(u32, u32)>,
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

/// The journal an item of `stage` lives in. Episodes of `mc_rollouts` and
/// `eval` share one, so the same episode is never run twice.
pub fn journal_namespace(stage: &str) -> &str {
    match stage {
        "mc_rollouts" | "eval" => "episodes",
        other => other,
    }
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
        let journal = self.store.journal(journal_namespace(self.node.stage))?;
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
        let reused = total - todo.len();
        self.progress.set_length(total as u64);
        self.progress.set_position(reused as u64);
        let computed = todo.len();
        let delay = test_item_delay();
        let f = Arc::new(f);
        let sem = Arc::new(Semaphore::new(concurrency.max(1)));
        let failures = Arc::new(AtomicUsize::new(0));
        let mut set = JoinSet::new();
        for (i, key, input) in todo {
            let (f, sem, journal, pb, force) =
                (f.clone(), sem.clone(), journal.clone(), self.progress.clone(), self.force);
            let failures = failures.clone();
            set.spawn(async move {
                let _permit = sem.acquire_owned().await.expect("semaphore open");
                if let Some(d) = delay {
                    tokio::time::sleep(d).await;
                }
                let out = f(input).await;
                let out = match out {
                    Ok(v) if is_transient(&v) => Ok(v),
                    Ok(v) => {
                        let rec = if force { journal.record_forced(&key, &v) } else { journal.record(&key, &v) };
                        rec.map(|_| v)
                    }
                    Err(e) => Err(e),
                };
                if out.is_err() {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                pb.inc(1);
                (i, out)
            });
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

fn bar(mp: &MultiProgress, label: &str, enabled: bool) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let pb = mp.add(ProgressBar::new(0));
    pb.set_style(
        ProgressStyle::with_template("{prefix:>32} [{bar:30}] {pos}/{len} items, eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_prefix(label.to_string());
    pb
}

/// Runs the plan. Returns per-node statuses; errors only on failures of the
/// runner itself (the store cannot be written, …).
pub async fn execute(plan: &Plan, store: &Store, opts: &RunOptions) -> Result<RunSummary> {
    let n = plan.nodes.len();
    let selected = plan.selected(&opts.only);
    let mut status: Vec<Option<NodeStatus>> = vec![None; n];
    for (i, s) in status.iter_mut().enumerate() {
        if !selected.contains(&i) {
            *s = Some(NodeStatus::NotSelected);
        }
    }
    let mp = MultiProgress::with_draw_target(if opts.progress {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let jobs = Arc::new(Semaphore::new(opts.jobs.max(1)));
    let models = Arc::new(crate::model::Registry::default());
    let envs = Arc::new(crate::env::Registry::default());
    let mut running: JoinSet<(usize, NodeStatus)> = JoinSet::new();
    let mut started = vec![false; n];

    loop {
        // Start every node whose inputs are settled.
        for id in 0..n {
            if started[id] || status[id].is_some() {
                continue;
            }
            let node = &plan.nodes[id];
            let input_states: Vec<&Option<NodeStatus>> = node.inputs.iter().map(|&i| &status[i]).collect();
            if input_states.iter().any(|s| s.is_none()) {
                continue;
            }
            if input_states
                .iter()
                .any(|s| matches!(s, Some(NodeStatus::ShardDone { .. }) | Some(NodeStatus::WaitingForShards)))
            {
                status[id] = Some(NodeStatus::WaitingForShards);
                continue;
            }
            if input_states.iter().any(|s| {
                matches!(s, Some(NodeStatus::Failed(_)) | Some(NodeStatus::Blocked) | Some(NodeStatus::NotSelected))
            }) {
                // NotSelected inputs can only happen for unselected nodes, so
                // this is a failure upstream.
                status[id] = Some(NodeStatus::Blocked);
                continue;
            }
            let forced = opts.force.iter().any(|s| s == node.stage);
            if !forced && store.is_done(node.stage, &node.key) {
                tracing::info!("`{}` is cached [{}]", node.label, node.key);
                status[id] = Some(NodeStatus::Cached);
                continue;
            }
            started[id] = true;
            let inputs = node
                .inputs
                .iter()
                .map(|&i| (plan.nodes[i].clone(), store.artifact_dir(plan.nodes[i].stage, &plan.nodes[i].key)))
                .collect();
            let ctx = NodeCtx {
                store: store.clone(),
                node: node.clone(),
                inputs,
                progress: bar(&mp, &node.label, opts.progress),
                force: forced,
                models: models.clone(),
                envs: envs.clone(),
                shard: opts.shard,
            };
            let jobs = jobs.clone();
            running.spawn(async move {
                let _permit = jobs.acquire_owned().await.expect("semaphore open");
                let id = ctx.node.id;
                (id, run_node(ctx).await)
            });
        }
        if status.iter().all(|s| s.is_some()) {
            break;
        }
        let Some(joined) = running.join_next().await else {
            break;
        };
        let (id, st) = joined.map_err(|e| anyhow!("stage task panicked: {e}"))?;
        status[id] = Some(st);
    }

    Ok(RunSummary {
        statuses: plan
            .nodes
            .iter()
            .zip(status)
            .map(|(node, s)| (node.label.clone(), node.key.clone(), s.unwrap_or(NodeStatus::Blocked)))
            .collect(),
    })
}

async fn run_node(ctx: NodeCtx) -> NodeStatus {
    let start = Instant::now();
    let label = ctx.node.label.clone();
    tracing::info!("`{label}` starts [{}]", ctx.node.key);
    let result = async {
        let writer = ctx.store.begin(ctx.node.stage, &ctx.node.key)?;
        let out = crate::mpo::run(&ctx, &writer).await?;
        let manifest = Manifest {
            stage: ctx.node.stage.to_string(),
            key: ctx.node.key.clone(),
            label: ctx.node.label.clone(),
            inputs: ctx.inputs.iter().map(|(n, _)| n.key.clone()).collect(),
            config: ctx.node.config.clone(),
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            created: chrono::Utc::now().to_rfc3339(),
            rows: out.rows.clone(),
            items_reused: out.reused,
            items_computed: out.computed,
            // Inputs with transient failures make this artifact provisional
            // too: it is redone (cheaply, from the journal) with them.
            items_failed: out.failed
                + ctx
                    .inputs
                    .iter()
                    .filter_map(|(n, _)| ctx.store.manifest(n.stage, &n.key))
                    .map(|m| m.items_failed)
                    .sum::<usize>(),
        };
        writer.commit(&manifest)?;
        Ok::<_, anyhow::Error>(out)
    }
    .await;
    ctx.progress.finish_and_clear();
    match result {
        Ok(out) => {
            let seconds = start.elapsed().as_secs_f64();
            tracing::info!("`{label}` done in {seconds:.1}s: {:?}", out.rows);
            if out.failed > 0 {
                tracing::warn!("`{label}`: {} items failed in the environment; the next run retries them", out.failed);
            }
            NodeStatus::Ran { reused: out.reused, computed: out.computed, seconds }
        }
        Err(e) => match e.downcast_ref::<ShardIncomplete>() {
            Some(s) => NodeStatus::ShardDone { computed: s.computed },
            None => {
                tracing::error!("`{label}` failed: {e:#}");
                NodeStatus::Failed(format!("{e:#}"))
            }
        },
    }
}
