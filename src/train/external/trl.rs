//! `engine = "trl"`: TRL's SFTTrainer / DPOTrainer, one process per rank
//! under torchrun or accelerate, driven by `python/trl_train.py` (compiled
//! into mpo-run and written next to the job it runs).
//!
//! The dataset is TRL's conversational format, so TRL applies the model's
//! chat template as mpo-run does when it trains and serves: planner SFT and
//! RFT as `prompt`/`completion` messages (the loss on the completion), agent
//! SFT as `messages` with `assistant_only_loss` (TRL swaps in a training
//! template for the known chat templates), DPO as `prompt`/`chosen`/
//! `rejected` messages with the reference log-probabilities computed once
//! before training (`precompute_ref_log_probs`) and kept with the
//! checkpoints, so a resumed DPO does not score again.

use std::path::Path;

use anyhow::{Context, Result};

use super::{batch_split, check_model_dir, hf_scheduler, launch_argv, Rendezvous};
use crate::train::dataset::{self, Dataset};
use crate::train::engine::{Method, TrainEngine, TrainJob, TrainOutcome};
use crate::train::{DpoLoss, Precision, TrainConfig};

pub const NAME: &str = "trl";

/// The driver, as shipped.
pub const DRIVER: &str = include_str!("../../../python/trl_train.py");
const DRIVER_FILE: &str = "trl_train.py";

/// The Python packages the engine needs (their versions go to `engine.json`).
pub const PACKAGES: &[&str] = &["torch", "transformers", "trl", "datasets", "accelerate"];

pub struct TrlEngine;

/// The driver's `format` for a dataset and method.
fn format(dataset: &Dataset, method: Method) -> Result<&'static str> {
    Ok(match (dataset, method) {
        (Dataset::Chat(_), Method::Sft) => "sft_chat",
        (Dataset::Completions(_), Method::Sft) => "sft",
        (Dataset::Preferences(_), Method::Dpo { .. }) => "dpo",
        (_, m) => anyhow::bail!("a {m:?} training cannot use this dataset (an internal wiring error)"),
    })
}

/// The dataset rows in TRL's conversational format.
pub fn rows(dataset: &Dataset) -> Vec<serde_json::Value> {
    match dataset {
        Dataset::Chat(convs) => dataset::trl_chat(convs),
        Dataset::Completions(rows) => dataset::trl_prompt_completion(rows),
        Dataset::Preferences(rows) => dataset::trl_dpo(rows),
    }
}

/// `job.json`: everything the driver does, from the spec's settings.
pub fn job_json(job: &TrainJob, work: &Path) -> Result<serde_json::Value> {
    let cfg: &TrainConfig = &job.config;
    let split = batch_split(cfg).map_err(|e| anyhow::anyhow!("[train] {e}"))?;
    let (beta, loss_type) = match job.method {
        Method::Dpo { beta } => (beta, if cfg.loss == DpoLoss::Ipo { "ipo" } else { "sigmoid" }),
        Method::Sft => (0.0, "sigmoid"),
    };
    let deepspeed = match cfg.launch.deepspeed {
        Some(z) => {
            let p = work.join("deepspeed.json");
            std::fs::write(&p, serde_json::to_vec_pretty(&super::deepspeed_config(z))?)?;
            Some(p.display().to_string())
        }
        None => None,
    };
    Ok(serde_json::json!({
        "method": if matches!(job.method, Method::Dpo { .. }) { "dpo" } else { "sft" },
        "format": format(&job.dataset, job.method)?,
        "base_dir": job.base_dir,
        "data": work.join("data.jsonl"),
        "checkpoint_dir": work,
        "out_dir": job.out_dir,
        "reference_out": work.join("reference.jsonl"),
        "per_device_batch": split.per_device,
        "grad_accum": split.grad_accum,
        "lr": cfg.lr,
        "epochs": cfg.epochs,
        "scheduler": hf_scheduler(cfg.schedule),
        "warmup_steps": cfg.warmup_steps,
        "warmup_ratio": cfg.warmup_ratio,
        "weight_decay": cfg.weight_decay,
        "betas": [cfg.betas.0, cfg.betas.1],
        "eps": cfg.eps,
        "max_grad_norm": cfg.max_grad_norm.unwrap_or(0.0),
        "max_len": cfg.max_len,
        "seed": cfg.seed,
        "shuffle": cfg.shuffle,
        "save_every": cfg.save_every,
        "precision": if cfg.precision == Precision::Bf16 { "bf16" } else { "f32" },
        "gradient_checkpointing": cfg.activation_checkpointing,
        "beta": beta,
        "loss_type": loss_type,
        "label_smoothing": cfg.label_smoothing,
        "deepspeed": deepspeed,
        "fsdp": if cfg.launch.fsdp { "full_shard auto_wrap" } else { "" },
    }))
}

/// The command line a training runs, with the work dir's paths
/// (`--dry-run` prints it).
pub fn command(cfg: &TrainConfig, work: &Path, rdzv: Option<&Rendezvous>) -> Vec<String> {
    launch_argv(&cfg.launch.python(&cfg.engine), &cfg.launch, rdzv, &work.join(DRIVER_FILE), &[work.join("job.json").display().to_string()], cfg.precision == Precision::Bf16)
}

impl TrainEngine for TrlEngine {
    fn name(&self) -> &'static str {
        NAME
    }

    fn train(&self, job: TrainJob) -> Result<TrainOutcome> {
        // The engine runs in its work dir: every path it gets is absolute.
        let job = super::absolute_paths(job)?;
        let cfg = &job.config;
        let (versions, work) = super::prepare(&job, NAME, PACKAGES)?;
        let rows = rows(&job.dataset);
        dataset::write_json_lines(&work.join("data.jsonl"), &rows)?;
        std::fs::write(work.join(DRIVER_FILE), DRIVER)?;
        std::fs::write(work.join(super::COMMON_FILE), super::COMMON)?;
        std::fs::write(work.join("job.json"), serde_json::to_vec_pretty(&job_json(&job, &work)?)?)?;
        let _ = std::fs::remove_dir_all(&job.out_dir);

        let argv = command(cfg, &work, super::rendezvous(&job)?.as_ref());
        let (log, computed_steps) = super::run(&job, "TRL", &argv, &[], &work, &work)?;
        check_model_dir(&job.stage, &job.out_dir)?;
        let _ = std::fs::remove_file(job.out_dir.join("training_args.bin"));
        let reference = match job.method {
            Method::Dpo { .. } => {
                let path = work.join("reference.jsonl");
                let text = std::fs::read_to_string(&path).with_context(|| format!("reading TRL's reference log-probs {}", path.display()))?;
                text.lines().map(|l| serde_json::from_str::<(f64, f64)>(l).context("a reference log-prob line")).collect::<Result<Vec<_>>>()?
            }
            Method::Sft => Vec::new(),
        };
        Ok(TrainOutcome {
            log,
            computed_steps,
            reference,
            examples: job.dataset.len(),
            engine: serde_json::json!({ "engine": NAME, "command": super::shell_line(&argv), "versions": versions }),
        })
    }
}
