//! The training-engine seam: a training stage builds its [`Dataset`] once as
//! text and hands it, with the base model, the hyper-parameters and the
//! places to write, to a [`TrainEngine`]; the engine returns the trained
//! Hugging Face directory (in `out_dir`) and its log rows. The stage knows
//! nothing of tokenisation, reference scores or checkpoint formats.
//!
//! Engines are listed in [`ENGINES`] and built by [`engine`]; a spec picks
//! one per training with `[train.X] engine = "…"`. `burn` (in-process,
//! CPU or one GPU) is the first and the default; `trl` and `llamafactory`
//! run those engines under torchrun or accelerate ([`super::external`]).
//! Adding an engine is one file implementing the trait plus its line in
//! [`engine`] and [`ENGINES`] (`docs/ARCHITECTURE.md`).

use std::path::PathBuf;
use anyhow::{anyhow, bail, Context, Result};

use super::data::{chat_example, completion_example, Example, PairExample};
use super::dataset::Dataset;
use super::trainer::{score_examples, train, Objective, RunControl};
use super::{ProgressFn, TrainConfig, TrainLogRow};
use crate::model::local::{LocalModel, LocalModelConfig};

/// The default engine.
pub const DEFAULT: &str = "burn";

/// Every engine a spec may name.
pub const ENGINES: &[&str] = &[DEFAULT, super::external::trl::NAME, super::external::llamafactory::NAME];

/// What is optimised.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Method {
    /// Masked token cross-entropy on the replies.
    Sft,
    /// DPO against the base model as the (frozen) reference.
    Dpo { beta: f64 },
}

/// A training to run.
pub struct TrainJob {
    /// For logs and errors (`sft`, `dpo`, …).
    pub stage: String,
    /// The base model: a Hugging Face directory and the declared model's
    /// settings (device, precision, …).
    pub base_dir: PathBuf,
    pub base_settings: LocalModelConfig,
    pub dataset: Dataset,
    pub method: Method,
    pub config: TrainConfig,
    /// Where the trained Hugging Face directory goes.
    pub out_dir: PathBuf,
    /// Where the engine keeps its resume state while it runs (kept after a
    /// failure or kill; the stage removes it once committed).
    pub checkpoint_dir: PathBuf,
    /// Where scores computed once before training are kept until the stage
    /// is committed (DPO's reference log-probabilities).
    pub reference_scores: PathBuf,
    /// Identifies the job in checkpoints (a checkpoint of another job is
    /// never resumed from).
    pub fingerprint: String,
    /// Step, total and the latest loss as training advances.
    pub progress: Option<ProgressFn>,
}

/// What a training produced besides its directory.
#[derive(Clone, Debug, Default)]
pub struct TrainOutcome {
    /// One row per optimizer step, resumed steps included.
    pub log: Vec<TrainLogRow>,
    /// Steps computed by this call (the rest were resumed).
    pub computed_steps: u64,
    /// DPO: the reference's (chosen, rejected) log-probabilities per pair.
    pub reference: Vec<(f64, f64)>,
    /// Examples the engine trained on after truncation (examples with no
    /// target token left are dropped).
    pub examples: usize,
    /// What ran (an external engine: its command line and package
    /// versions), kept in the artifact as `engine.json`; null for burn.
    pub engine: serde_json::Value,
}

/// A training engine. `train` blocks (run it on a blocking thread).
pub trait TrainEngine: Send + Sync {
    fn name(&self) -> &'static str;
    fn train(&self, job: TrainJob) -> Result<TrainOutcome>;
}

/// The engine a `[train.X] engine` names.
pub fn engine(name: &str) -> Result<Box<dyn TrainEngine>> {
    match name {
        DEFAULT => Ok(Box::new(BurnEngine)),
        super::external::trl::NAME => Ok(Box::new(super::external::trl::TrlEngine)),
        super::external::llamafactory::NAME => Ok(Box::new(super::external::llamafactory::LlamaFactoryEngine)),
        other => bail!("`engine = \"{other}\"` is not a training engine; allowed: {}", ENGINES.join(", ")),
    }
}

/// The in-process engine: burn on the local model's device.
pub struct BurnEngine;

impl TrainEngine for BurnEngine {
    fn name(&self) -> &'static str {
        DEFAULT
    }

    fn train(&self, job: TrainJob) -> Result<TrainOutcome> {
        let base = LocalModel::load(&job.base_dir, LocalModelConfig { path: Some(job.base_dir.clone()), ..job.base_settings.clone() })
            .with_context(|| format!("loading the base model from {}", job.base_dir.display()))?;
        let max_len = job.config.max_len;
        let tok = &base.tokenizer;
        let (objective, reference, examples) = match (&job.dataset, job.method) {
            (Dataset::Chat(conversations), Method::Sft) => {
                let ex = conversations.iter().map(|m| chat_example(tok, m)).collect::<Result<Vec<_>, _>>().map_err(|e| anyhow!(e))?;
                let ex = truncate_all(ex, max_len);
                let n = ex.len();
                (Objective::Sft(ex), Vec::new(), n)
            }
            (Dataset::Completions(rows), Method::Sft) => {
                let ex = rows
                    .iter()
                    .map(|c| completion_example(tok, &c.prompt, &c.completion))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| anyhow!(e))?;
                let ex = truncate_all(ex, max_len);
                let n = ex.len();
                (Objective::Sft(ex), Vec::new(), n)
            }
            (Dataset::Preferences(rows), Method::Dpo { beta }) => {
                let mut pairs = Vec::with_capacity(rows.len());
                for p in rows {
                    let mut chosen = completion_example(tok, &p.prompt, &p.chosen).map_err(|e| anyhow!(e))?;
                    let mut rejected = completion_example(tok, &p.prompt, &p.rejected).map_err(|e| anyhow!(e))?;
                    chosen.truncate(max_len);
                    rejected.truncate(max_len);
                    pairs.push(PairExample { chosen, rejected });
                }
                let reference = reference_scores(&base, &pairs, &job.reference_scores)?;
                let n = pairs.len();
                let objective = Objective::Dpo {
                    pairs,
                    reference: reference.clone(),
                    beta,
                    label_smoothing: job.config.label_smoothing,
                    loss: job.config.loss,
                };
                (objective, reference, n)
            }
            (_, method) => bail!("{}: a {method:?} training cannot use this dataset (an internal wiring error)", job.stage),
        };
        let ctl = RunControl {
            checkpoint_dir: Some(job.checkpoint_dir.clone()),
            stop_after: None,
            stage: job.stage.clone(),
            progress: job.progress.clone(),
        };
        let out = train(base.net().clone(), base.arch(), &objective, &job.config, &job.fingerprint, &ctl)
            .map_err(|e| anyhow!("{}: {e}", job.stage))?;
        crate::model::local::save_dir(&job.out_dir, base.arch(), &out.lm, &base.tokenizer)?;
        Ok(TrainOutcome { log: out.log, computed_steps: out.computed_steps, reference, examples, engine: serde_json::Value::Null })
    }
}

fn truncate_all(mut v: Vec<Example>, max_len: usize) -> Vec<Example> {
    for e in &mut v {
        e.truncate(max_len);
    }
    v.retain(|e| e.targets() > 0);
    v
}

/// The reference (the base model itself) scored once before training;
/// kept in `path` so a killed training does not score again.
fn reference_scores(base: &LocalModel, pairs: &[PairExample], path: &std::path::Path) -> Result<Vec<(f64, f64)>> {
    if let Ok(text) = std::fs::read_to_string(path) {
        let v: Vec<(f64, f64)> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        if v.len() == pairs.len() {
            return Ok(v);
        }
    }
    let rows: Vec<&Example> = pairs.iter().flat_map(|p| [&p.chosen, &p.rejected]).collect();
    let scores = score_examples(base.net(), base.arch(), &rows, base.device(), 16384);
    let v: Vec<(f64, f64)> = scores.chunks(2).map(|c| (c[0], c[1])).collect();
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p)?;
    }
    let mut text = String::new();
    for s in &v {
        text.push_str(&serde_json::to_string(s)?);
        text.push('\n');
    }
    crate::store::write_atomic(path, text.as_bytes())?;
    Ok(v)
}
