//! Training (docs/ARCHITECTURE.md, "Add a training engine"): SFT, RFT and agent SFT
//! (masked token cross-entropy) and DPO (TRL's semantics) on the local
//! model's network, with PyTorch-semantics AdamW, warm-up + cosine decay,
//! gradient accumulation and clipping, seeded length-bucketed batches, and
//! resumable checkpoints.
//!
//! Owns: [`TrainConfig`] (the `[train.*]` tables of a spec), the
//! `train_log` rows, the training-engine seam ([`engine::TrainEngine`]:
//! burn is the first engine), the engine-neutral datasets and their
//! writers in other engines' formats ([`dataset`]), the burn loop
//! ([`trainer::train`]) and tokenised examples ([`data`]). The stages that
//! call it live in `mpo/` (`agent_sft.rs`, `sft.rs`, `rft.rs`, `dpo.rs`).

pub mod data;
pub mod dataset;
pub mod engine;
pub mod external;
pub mod optim;
pub mod trainer;

use serde::{Deserialize, Serialize};

pub use data::{Example, PairExample};
pub use optim::{AdamW, AdamWConfig, Schedule};
pub use trainer::{score_examples, train, Objective, RunControl, Trained};

/// DPO loss variants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DpoLoss {
    /// −log σ(β·Δ) (with `label_smoothing`: cDPO).
    #[default]
    Sigmoid,
    /// (Δ − 1/(2β))² (IPO).
    Ipo,
}

pub use crate::model::local::Precision;

fn d_lr() -> f64 {
    1e-5
}
fn d_epochs() -> u32 {
    3
}
fn d_batch() -> usize {
    32
}
fn d_micro() -> usize {
    8
}
fn d_clip() -> Option<f64> {
    Some(1.0)
}
fn d_betas() -> (f64, f64) {
    (0.9, 0.999)
}
fn d_eps() -> f64 {
    1e-8
}
fn d_max_len() -> usize {
    2048
}
fn d_true() -> bool {
    true
}

/// `[train.sft]`, `[train.dpo]`, `[train.rft]`, `[train.agent_sft]`:
/// hyper-parameters of a training (defaults: the paper's LLaMA-Factory
/// settings — lr 1e-5, batch 32, 3 epochs, cosine).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    #[serde(default = "d_lr")]
    pub lr: f64,
    #[serde(default = "d_epochs")]
    pub epochs: u32,
    /// Effective batch size (examples, or pairs for DPO) per optimizer step.
    #[serde(default = "d_batch")]
    pub batch_size: usize,
    /// Examples per forward pass; gradients are accumulated over the
    /// micro-batches of a step.
    #[serde(default = "d_micro")]
    pub micro_batch: usize,
    /// Warm-up as a share of the optimizer steps (rounded up).
    #[serde(default)]
    pub warmup_ratio: f64,
    /// Warm-up steps added to `warmup_ratio`'s.
    #[serde(default)]
    pub warmup_steps: u64,
    #[serde(default)]
    pub schedule: Schedule,
    #[serde(default)]
    pub weight_decay: f64,
    /// Decay every parameter (PyTorch's AdamW over `model.parameters()`)
    /// instead of the Hugging Face Trainer's grouping (no decay on biases
    /// and norms).
    #[serde(default)]
    pub decay_all: bool,
    #[serde(default = "d_betas")]
    pub betas: (f64, f64),
    #[serde(default = "d_eps")]
    pub eps: f64,
    /// Global gradient-norm clipping (`None`/0 = off).
    #[serde(default = "d_clip")]
    pub max_grad_norm: Option<f64>,
    /// Tokens per example (longer ones are cut).
    #[serde(default = "d_max_len")]
    pub max_len: usize,
    #[serde(default)]
    pub seed: u64,
    #[serde(default = "d_true")]
    pub shuffle: bool,
    /// Save a resumable checkpoint every K optimizer steps (0 = only the
    /// final model).
    #[serde(default)]
    pub save_every: u64,
    /// Worker threads computing micro-batches in parallel (default: the
    /// machine's cores). The result does not depend on it except through
    /// float summation order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
    /// DPO: cDPO label smoothing.
    #[serde(default)]
    pub label_smoothing: f64,
    /// DPO: `sigmoid` (DPO) or `ipo`.
    #[serde(default)]
    pub loss: DpoLoss,
    /// Recompute memory-bound activations in the backward pass instead of
    /// keeping them (burn's balanced gradient checkpointing): less memory,
    /// the same numbers, some more compute.
    #[serde(default, skip_serializing_if = "is_false")]
    pub activation_checkpointing: bool,
    /// `f32` (default) or `bf16` mixed precision.
    #[serde(default, skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
    /// The training engine ([`engine::ENGINES`]); `burn`, the default, is
    /// left out of cache keys so keys made before engines existed hold.
    #[serde(default = "d_engine", skip_serializing_if = "is_default_engine")]
    pub engine: String,
    /// How an external engine is launched (`[train.X.launch]`).
    #[serde(default, skip_serializing_if = "external::Launch::is_default")]
    pub launch: external::Launch,
    /// Share of the training examples (pairs for DPO) held out of training
    /// and scored after every epoch (`eval_loss` in `train_log`); chosen by
    /// `seed`. 0 (the default) holds nothing out and is left out of cache
    /// keys, so keys made before it existed hold. The burn engine only.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub eval_share: f64,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

fn d_engine() -> String {
    engine::DEFAULT.to_string()
}

fn is_default_engine(e: &String) -> bool {
    e == engine::DEFAULT
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            lr: d_lr(),
            epochs: d_epochs(),
            batch_size: d_batch(),
            micro_batch: d_micro(),
            warmup_ratio: 0.0,
            warmup_steps: 0,
            schedule: Schedule::Cosine,
            weight_decay: 0.0,
            decay_all: false,
            betas: d_betas(),
            eps: d_eps(),
            max_grad_norm: d_clip(),
            max_len: d_max_len(),
            seed: 0,
            shuffle: true,
            save_every: 0,
            threads: None,
            label_smoothing: 0.0,
            loss: DpoLoss::Sigmoid,
            activation_checkpointing: false,
            precision: Precision::F32,
            engine: d_engine(),
            launch: external::Launch::default(),
            eval_share: 0.0,
        }
    }
}

impl TrainConfig {
    /// The paper's DPO settings (3% warm-up).
    pub fn dpo_default() -> Self {
        Self { warmup_ratio: 0.03, ..Self::default() }
    }

    pub fn validate(&self) -> Result<(), String> {
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(format!("lr must be > 0, got {}", self.lr));
        }
        if self.epochs == 0 {
            return Err("epochs must be at least 1".into());
        }
        if self.batch_size == 0 || self.micro_batch == 0 {
            return Err("batch_size and micro_batch must be at least 1".into());
        }
        if !(0.0..1.0).contains(&self.warmup_ratio) {
            return Err(format!("warmup_ratio must be in [0, 1), got {}", self.warmup_ratio));
        }
        if !(0.0..1.0).contains(&self.betas.0) || !(0.0..1.0).contains(&self.betas.1) {
            return Err(format!("betas must be in [0, 1), got {:?}", self.betas));
        }
        if !(0.0..0.5).contains(&self.label_smoothing) {
            return Err(format!("label_smoothing must be in [0, 0.5), got {}", self.label_smoothing));
        }
        if self.max_len < 2 {
            return Err("max_len must be at least 2".into());
        }
        if !(0.0..0.5).contains(&self.eval_share) {
            return Err(format!("eval_share must be in [0, 0.5) (a share of the training examples held out), got {}", self.eval_share));
        }
        if !engine::ENGINES.contains(&self.engine.as_str()) {
            return Err(format!(
                "engine = \"{}\" is not a training engine; allowed: {}",
                self.engine,
                engine::ENGINES.iter().map(|e| format!("\"{e}\"")).collect::<Vec<_>>().join(", ")
            ));
        }
        if self.engine == engine::DEFAULT {
            if !self.launch.is_default() {
                return Err("[launch] sets how an external engine (`engine = \"trl\"` or `\"llamafactory\"`) is started; the burn engine runs in-process: remove it or choose an engine".into());
            }
        } else {
            external::validate(self)?;
        }
        Ok(())
    }

    pub fn adamw(&self) -> AdamWConfig {
        AdamWConfig { betas: self.betas, eps: self.eps, weight_decay: self.weight_decay, decay_all: self.decay_all }
    }
}

/// One optimizer step of a training (the `train_log` table).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainLogRow {
    pub stage: String,
    pub step: u64,
    /// Epochs done, fractional.
    pub epoch: f64,
    pub loss: f64,
    pub lr: f64,
    /// Before clipping.
    pub grad_norm: f64,
    pub tokens_per_s: f64,
    pub reward_accuracy: Option<f64>,
    pub chosen_reward: Option<f64>,
    pub rejected_reward: Option<f64>,
    pub margin: Option<f64>,
    /// When the step finished (UTC). `None` for rows an external engine
    /// resumed from its checkpoint (its `trainer_state.json` keeps no
    /// times) and for rows of checkpoints saved before times were kept.
    #[serde(default)]
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Mean loss on the held-out share (`eval_share`), on the last step of
    /// each epoch; `None` elsewhere and when nothing is held out.
    #[serde(default)]
    pub eval_loss: Option<f64>,
}

/// What a training reports after each optimizer step (the progress bar
/// shows the latest loss).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepProgress {
    pub step: u64,
    pub total: u64,
    /// The step's training loss, when the engine reported one.
    pub loss: Option<f64>,
}

/// The progress callback of a training.
pub type ProgressFn = std::sync::Arc<dyn Fn(StepProgress) + Send + Sync>;
