//! What the training stages share: the base model a training starts from,
//! handing a dataset to the spec's training engine on a blocking thread
//! (checkpoints and reference scores where the store says), and the
//! untrained copy a planner stage commits when it has no data.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, bail, Result};

use super::common::{prompt_set, record_prompt_revision};
use super::models::ModelRef;
use crate::agent::prompt::{Family, PromptSet};
use crate::model::local::{LocalModel, LocalModelConfig};
use crate::spec::ModelSpec;
use crate::stage::{NodeCtx, Slot, StageOutput};
use crate::store::table::{self, TRAIN_LOG};
use crate::store::ArtifactWriter;
use crate::train::dataset::Dataset;
use crate::train::engine::{self, Method, TrainJob, TrainOutcome};
use crate::train::{StepProgress, TrainConfig, TrainLogRow};

/// The version of every training stage's key.
pub const VERSION: u32 = 1;

/// What `--dry-run` says of a training stage.
pub const WHOLE: &str = "one training (checkpointed with `save_every`)";

/// The trained model's directory in a training stage's artifact.
pub fn model_dir(artifact: &std::path::Path) -> PathBuf {
    artifact.join("model")
}

/// The base to train: a declared Hugging Face directory or an input's
/// trained `model/`, with the declared model's settings.
pub fn base_model(ctx: &NodeCtx, base: &ModelRef) -> Result<(PathBuf, LocalModelConfig)> {
    let ModelSpec::Local(settings) = &base.spec else {
        bail!("model `{}` is served (`kind = \"openai\"`): only `kind = \"local\"` models can be trained in-process", base.name);
    };
    let dir: PathBuf = match base.input {
        Some(i) => ctx.inputs.get(i).map(|input| model_dir(&input.dir)).ok_or_else(|| anyhow!("missing input {i}"))?,
        None => settings.path.clone().ok_or_else(|| anyhow!("model `{}` has no `path`", base.name))?,
    };
    Ok((dir, settings.clone()))
}

/// Trains `dataset` with the engine `cfg` names on a blocking thread, with
/// checkpoints under the store, into the artifact's `model/`, and writes
/// `train_log.parquet`.
pub async fn train(
    ctx: &NodeCtx,
    writer: &ArtifactWriter,
    base: &ModelRef,
    dataset: Dataset,
    method: Method,
    cfg: &TrainConfig,
) -> Result<(StageOutput, TrainOutcome)> {
    let (base_dir, base_settings) = base_model(ctx, base)?;
    let engine = engine::engine(&cfg.engine)?;
    let bar = ctx.progress.clone();
    let checkpoint_dir = ctx.store.checkpoint_dir(ctx.stage, &ctx.key);
    let reference_scores = ctx.store.training_scores_path(ctx.stage, &ctx.key, "reference");
    let job = TrainJob {
        stage: ctx.stage.to_string(),
        base_dir,
        base_settings,
        dataset,
        method,
        config: cfg.clone(),
        out_dir: writer.path("model"),
        checkpoint_dir: checkpoint_dir.clone(),
        reference_scores: reference_scores.clone(),
        fingerprint: ctx.key.clone(),
        progress: Some(Arc::new(move |p: StepProgress| {
            bar.set_length(p.total);
            bar.set_position(p.step);
            if let Some(loss) = p.loss.filter(|l| l.is_finite()) {
                bar.set_message(format!("loss {loss:.4}"));
            }
        })),
    };
    let outcome = tokio::task::spawn_blocking(move || engine.train(job)).await??;
    let log = &outcome.log;
    let n = table::write_rows(&writer.path("train_log.parquet"), TRAIN_LOG, log)?;
    if let Some(last) = log.last() {
        tracing::info!("`{}`: {} steps, final loss {:.4}", ctx.label, last.step, last.loss);
    }
    // Committed next: the resume state is no longer needed.
    let _ = std::fs::remove_dir_all(&checkpoint_dir);
    let _ = std::fs::remove_file(&reference_scores);
    let computed = outcome.computed_steps as usize;
    let mut out = StageOutput::new(log.len() - computed, computed).table("train_log", n).file("model/model.safetensors", 1);
    if !outcome.engine.is_null() {
        // What ran: the external engine's command line and package versions.
        writer.write_json("engine.json", &outcome.engine)?;
        out = out.file("engine.json", 1);
    }
    Ok((out, outcome))
}

/// The command line an external engine will run for `cfg` in `work` (none
/// for burn), with the rendezvous of a multi-node launch as the
/// environment variables it is read from.
pub fn commands(cfg: &TrainConfig, work: &std::path::Path) -> Vec<String> {
    use crate::train::external::{self, llamafactory, trl, Rendezvous};
    let rdzv = (cfg.launch.nnodes > 1).then(Rendezvous::placeholders);
    let argv = match cfg.engine.as_str() {
        trl::NAME => trl::command(cfg, work, rdzv.as_ref()),
        llamafactory::NAME => llamafactory::command(cfg, work, rdzv.as_ref()),
        _ => return Vec::new(),
    };
    vec![external::shell_line(&argv)]
}

/// With no data (no pairs), the trained planner is the SFT planner as it
/// is: the model is saved unchanged, the log is empty and `note.json` says
/// why (a sweep point with M = 1 has no pairs by construction).
pub fn unchanged(ctx: &NodeCtx, writer: &ArtifactWriter, base: &ModelRef, why: &str) -> Result<StageOutput> {
    tracing::warn!("`{}`: {why}; the model is the SFT planner unchanged", ctx.label);
    let (dir, settings) = base_model(ctx, base)?;
    let model = LocalModel::load(&dir, LocalModelConfig { path: Some(dir.clone()), ..settings })?;
    model.save(&writer.path("model"))?;
    writer.write_json("note.json", &serde_json::json!({ "trained": false, "reason": why }))?;
    let n = table::write_rows::<TrainLogRow>(&writer.path("train_log.parquet"), TRAIN_LOG, &[])?;
    Ok(StageOutput::new(0, 0).table("train_log", n).file("model/model.safetensors", 1))
}

/// What the planner's trainings (`sft`, `rft`, `dpo`) share: the model
/// trained, the prompt set its data is rendered with, the training config
/// and the artifact it trains on.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct PlannerTraining {
    /// The model trained: the base planner (`sft`) or the SFT planner
    /// (`rft`, `dpo`).
    pub base: ModelRef,
    pub prompts: String,
    pub family: Family,
    pub train: TrainConfig,
    /// The artifact trained on: `seed_plans` (`sft`) or `pairs` (`rft`,
    /// `dpo`).
    pub data: Slot,
}

impl PlannerTraining {
    /// The key slice every planner training shares: the base, the prompt
    /// set (and its revision where the name does not pin it), the config.
    pub fn config(&self) -> serde_json::Value {
        let mut v = serde_json::json!({ "base": self.base.config(), "prompts": self.prompts, "train": self.train });
        record_prompt_revision(&mut v, &self.prompts, self.family);
        v
    }

    pub fn bind(&mut self, input_keys: &[String]) {
        self.base.bind(input_keys);
    }

    pub fn prompt_set(&self) -> Result<PromptSet> {
        prompt_set(&self.prompts, self.family)
    }

    /// Trains the base on `dataset` with the engine the config names.
    pub async fn run(&self, ctx: &NodeCtx, writer: &ArtifactWriter, dataset: Dataset, method: Method) -> Result<(StageOutput, TrainOutcome)> {
        train(ctx, writer, &self.base, dataset, method, &self.train).await
    }
}
