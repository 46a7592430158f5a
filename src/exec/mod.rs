//! The executor: runs a plan's nodes on tokio.
//!
//! A node runs when all its inputs are committed; up to `jobs` nodes run at
//! once. A node whose artifact exists is skipped ("cached"). Inside a node,
//! items run concurrently (bounded by the stage) and each finished item is
//! journaled at once, so a killed run resumes without redoing or duplicating
//! finished work. A node with failed items is not committed: the run goes on
//! with the nodes that do not depend on it and the exit status says it
//! failed; a rerun retries only the failed items.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::plan::Plan;
use crate::stage::{Input, NodeCtx, ShardIncomplete, Stage};
use crate::store::{LockAttempt, Manifest, NodeLock, Store};

/// How often a node whose lock another process holds looks again.
const LOCK_POLL: Duration = Duration::from_millis(200);

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
    /// `n` (a job array over a shared results dir, docs/ARCHITECTURE.md). Sharded
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

fn bar(mp: &MultiProgress, label: &str, enabled: bool) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let pb = mp.add(ProgressBar::new(0));
    pb.set_style(
        ProgressStyle::with_template("{prefix:>32} [{bar:30}] {pos}/{len} items, eta {eta} {msg}")
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
    // Served models: a server runs while a node that generates from it is
    // not settled, and is stopped (`Registry::release`) after the last.
    let mut leases: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for node in &plan.nodes {
        for l in node.work.leases() {
            *leases.entry(l).or_default() += 1;
        }
    }
    let mut settled = vec![false; n];

    loop {
        for id in 0..n {
            if status[id].is_some() && !settled[id] {
                settled[id] = true;
                for l in plan.nodes[id].work.leases() {
                    let left = leases.get_mut(&l).expect("counted above");
                    *left -= 1;
                    if *left == 0 {
                        models.release(&l);
                    }
                }
            }
        }
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
                .map(|&i| {
                    let n = &plan.nodes[i];
                    Input { stage: n.stage, key: n.key.clone(), label: n.label.clone(), dir: store.artifact_dir(n.stage, &n.key) }
                })
                .collect();
            let ctx = NodeCtx {
                store: store.clone(),
                stage: node.stage,
                key: node.key.clone(),
                label: node.label.clone(),
                inputs,
                progress: bar(&mp, &node.label, opts.progress),
                force: forced,
                models: models.clone(),
                envs: envs.clone(),
                // A stage without items runs whole in one process under
                // `--shard` too (the node's lock exclusive): shards never
                // train into one checkpoint dir at once.
                shard: opts.shard.filter(|_| node.work.sharded()),
                journal: node.work.journal(),
                served: Default::default(),
            };
            let jobs = jobs.clone();
            let (work, config) = (node.work.clone(), node.config.clone());
            running.spawn(async move {
                let (_lock, _permit) = match lock_node(&ctx, jobs).await {
                    Ok(held) => held,
                    Err(e) => {
                        ctx.progress.finish_and_clear();
                        tracing::error!("`{}` failed: {e:#}", ctx.label);
                        return (id, NodeStatus::Failed(format!("{e:#}")));
                    }
                };
                if !forced && ctx.store.is_done(ctx.stage, &ctx.key) {
                    ctx.progress.finish_and_clear();
                    tracing::info!("`{}` is cached (another process committed it meanwhile) [{}]", ctx.label, ctx.key);
                    return (id, NodeStatus::Cached);
                }
                (id, run_node(work.as_ref(), config, ctx).await)
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

/// Takes a job slot and the node's lock (see `Store::try_lock_node`),
/// waiting while another process holds the lock. Never waits for anything
/// while holding the lock, and never holds a job slot while waiting for a
/// lock, so processes that share a results dir cannot deadlock: a node's
/// lock is held only by a task that is computing it, and its inputs are
/// already committed. Once it holds the lock, an interrupted replacement of
/// the node's artifact is finished first.
async fn lock_node(ctx: &NodeCtx, jobs: Arc<Semaphore>) -> Result<(NodeLock, OwnedSemaphorePermit)> {
    let mut waiting_for: Option<String> = None;
    let start = Instant::now();
    loop {
        let permit = jobs.clone().acquire_owned().await.expect("semaphore open");
        match ctx.store.try_lock_node(ctx.stage, &ctx.key, ctx.shard)? {
            LockAttempt::Acquired(lock) => {
                if waiting_for.is_some() {
                    tracing::info!("`{}`: lock free after {:.1}s", ctx.label, start.elapsed().as_secs_f64());
                }
                ctx.store.recover_replaced(ctx.stage, &ctx.key)?;
                return Ok((lock, permit));
            }
            LockAttempt::Held(holder) => {
                drop(permit);
                if waiting_for.as_ref() != Some(&holder) {
                    tracing::info!(
                        "`{}` waits: {holder} is computing it (lock `{}`)",
                        ctx.label,
                        ctx.store.node_lock_path(ctx.stage, &ctx.key).display()
                    );
                    waiting_for = Some(holder);
                }
                tokio::time::sleep(LOCK_POLL).await;
            }
        }
    }
}

async fn run_node(work: &dyn Stage, config: serde_json::Value, ctx: NodeCtx) -> NodeStatus {
    let start = Instant::now();
    let label = ctx.label.clone();
    tracing::info!("`{label}` starts [{}]", ctx.key);
    let result = async {
        let writer = if ctx.force {
            ctx.store.begin_replacing(ctx.stage, &ctx.key)?
        } else {
            ctx.store.begin(ctx.stage, &ctx.key)?
        };
        let out = work.run(&ctx, &writer).await?;
        let serving = ctx.serving().await;
        for (model, v) in &serving {
            if let Some(rate) = v["prefix_cache_hit_rate"].as_f64() {
                tracing::info!(
                    "`{}`: the prefix cache of `{model}`'s server hit {:.1}% of {} prompt tokens",
                    ctx.label,
                    100.0 * rate,
                    v["prefix_cache_queried_tokens"].as_f64().unwrap_or(0.0)
                );
            }
        }
        let manifest = Manifest {
            stage: ctx.stage.to_string(),
            key: ctx.key.clone(),
            label: ctx.label.clone(),
            inputs: ctx.inputs.iter().map(|i| i.key.clone()).collect(),
            config,
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
                    .filter_map(|i| ctx.store.manifest(i.stage, &i.key))
                    .map(|m| m.items_failed)
                    .sum::<usize>(),
            // Hashed by `commit` from the files written.
            files: Default::default(),
            serving,
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
