//! The training loop shared by SFT, RFT, agent SFT and DPO: epochs of
//! seeded optimizer-step groups, micro-batches with gradient accumulation,
//! global-norm clipping, AdamW, the warm-up + decay schedule, a log row per
//! optimizer step, and checkpoints (weights, optimizer moments, step count
//! and log) that a killed training resumes from bit-for-bit.
//!
//! Checkpoints (#22): `step-N/` holds the weights, the optimizer moments,
//! `state.json` (step, fingerprint, log rows; floats round-trip exactly
//! through serde_json's `float_roundtrip`) and `blake3.json`, their hashes,
//! written last. The last two are kept; resuming takes the newest whose
//! files match their hashes and load (older checkpoints without
//! `blake3.json` are trusted if they load), so a bit-flipped or truncated
//! checkpoint costs the steps since the one before it, never the stage.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::prelude::*;
use burn::tensor::activation::log_sigmoid;
use serde::{Deserialize, Serialize};

use super::data::{epoch_groups, micro_batches, pack, Example, PairExample};
use super::optim::{clip_coef, global_grad_norm, lr_at, to_trainable, AdamW, GradAccumulator};
use super::{DpoLoss, TrainConfig, TrainLogRow};
use crate::model::local::{weights, ArchConfig, CausalLm, Runner};

/// What is optimised.
#[derive(Clone, Debug)]
pub enum Objective {
    /// Mean token cross-entropy over the trained tokens of each step's
    /// effective batch.
    Sft(Vec<Example>),
    /// TRL's DPO with reference log-probs computed beforehand
    /// (`(chosen, rejected)` per pair, summed over completion tokens).
    Dpo { pairs: Vec<PairExample>, reference: Vec<(f64, f64)>, beta: f64, label_smoothing: f64, loss: DpoLoss },
}

impl Objective {
    fn len(&self) -> usize {
        match self {
            Objective::Sft(e) => e.len(),
            Objective::Dpo { pairs, .. } => pairs.len(),
        }
    }
    fn example_len(&self, i: usize) -> usize {
        match self {
            Objective::Sft(e) => e[i].len(),
            Objective::Dpo { pairs, .. } => pairs[i].chosen.len().max(pairs[i].rejected.len()),
        }
    }
}

/// Per-row sums of the trained tokens' log-probs `[rows]`, and the masked
/// per-token log-probs `[rows, width]`.
fn sequence_logps(lm: &CausalLm, arch: &ArchConfig, inv_freq: &[f32], rows: &[&Example], device: &Device) -> (Tensor<1>, Tensor<2>) {
    let (ids, tgt, mask, w) = pack(rows);
    let b = rows.len();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [b, w]), device);
    let tgt = Tensor::<2, Int>::from_data(TensorData::new(tgt, [b, w]), device);
    let mask = Tensor::<2>::from_data(TensorData::new(mask, [b, w]), device);
    let lp = Runner::token_logprobs(lm.forward_logits(arch, inv_freq, ids), tgt);
    let masked = lp * mask;
    (masked.clone().sum_dim(1).squeeze_dim::<1>(1), masked)
}

/// Sum of trained-token log-probs of each example under an inference
/// (non-autodiff) model, in length-sorted batches of at most
/// `max_batch_tokens` padded tokens.
pub fn score_examples(lm: &CausalLm, arch: &ArchConfig, examples: &[&Example], device: &Device, max_batch_tokens: usize) -> Vec<f64> {
    let inv_freq = arch.rope.inv_freq(arch.head_dim);
    let mut order: Vec<usize> = (0..examples.len()).collect();
    order.sort_by_key(|&i| examples[i].len());
    let mut out = vec![0.0; examples.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && examples[order[end]].len() * (end - start + 1) <= max_batch_tokens.max(1) {
            end += 1;
        }
        let rows: Vec<&Example> = order[start..end].iter().map(|&i| examples[i]).collect();
        let (sums, _) = sequence_logps(lm, arch, &inv_freq, &rows, device);
        let v: Vec<f32> = weights::to_vec_f32(sums);
        for (k, &i) in order[start..end].iter().enumerate() {
            out[i] = v[k] as f64;
        }
        start = end;
    }
    out
}

/// Host values of one micro-batch for the step's metrics.
#[derive(Default)]
struct StepStats {
    loss: f64,
    tokens: usize,
    chosen: Vec<f64>,
    rejected: Vec<f64>,
}

/// Loss of one micro-batch, already divided by the group's normaliser, so
/// that the micro-batch gradients sum to the group's gradient.
fn micro_loss(
    obj: &Objective,
    lm: &CausalLm,
    arch: &ArchConfig,
    inv_freq: &[f32],
    idx: &[usize],
    group_norm: f64,
    device: &Device,
    stats: &mut StepStats,
) -> Tensor<1> {
    match obj {
        Objective::Sft(examples) => {
            let rows: Vec<&Example> = idx.iter().map(|&i| &examples[i]).collect();
            stats.tokens += rows.iter().map(|e| e.len()).sum::<usize>();
            let (_, masked) = sequence_logps(lm, arch, inv_freq, &rows, device);
            masked.sum().neg().div_scalar(group_norm)
        }
        Objective::Dpo { pairs, reference, beta, label_smoothing, loss } => {
            let k = idx.len();
            let mut rows: Vec<&Example> = idx.iter().map(|&i| &pairs[i].chosen).collect();
            rows.extend(idx.iter().map(|&i| &pairs[i].rejected));
            stats.tokens += rows.iter().map(|e| e.len()).sum::<usize>();
            let (sums, _) = sequence_logps(lm, arch, inv_freq, &rows, device);
            let pc = sums.clone().narrow(0, 0, k);
            let pr = sums.narrow(0, k, k);
            let rc: Vec<f32> = idx.iter().map(|&i| reference[i].0 as f32).collect();
            let rr: Vec<f32> = idx.iter().map(|&i| reference[i].1 as f32).collect();
            let rc = Tensor::<1>::from_data(TensorData::new(rc, [k]), device);
            let rr = Tensor::<1>::from_data(TensorData::new(rr, [k]), device);
            let chosen_r = pc - rc;
            let rejected_r = pr - rr;
            let cv: Vec<f32> = weights::to_vec_f32(chosen_r.clone().inner());
            let rv: Vec<f32> = weights::to_vec_f32(rejected_r.clone().inner());
            stats.chosen.extend(cv.iter().map(|&x| beta * x as f64));
            stats.rejected.extend(rv.iter().map(|&x| beta * x as f64));
            let d = chosen_r - rejected_r;
            let per = match loss {
                DpoLoss::Sigmoid => {
                    let z = d.mul_scalar(*beta);
                    let a = log_sigmoid(z.clone()).neg().mul_scalar(1.0 - label_smoothing);
                    if *label_smoothing > 0.0 {
                        a - log_sigmoid(z.neg()).mul_scalar(*label_smoothing)
                    } else {
                        a
                    }
                }
                DpoLoss::Ipo => {
                    let t = d.sub_scalar(1.0 / (2.0 * beta));
                    t.clone() * t
                }
            };
            per.sum().div_scalar(group_norm)
        }
    }
}

/// The mean loss of the held-out examples `held` under `lm`: token
/// cross-entropy over their trained tokens (SFT), or the DPO loss per pair
/// against the same reference scores — the training loss's definitions.
fn held_out_loss(obj: &Objective, held: &[usize], lm: &CausalLm, arch: &ArchConfig, device: &Device) -> f64 {
    match obj {
        Objective::Sft(examples) => {
            let rows: Vec<&Example> = held.iter().map(|&i| &examples[i]).collect();
            let logp: f64 = score_examples(lm, arch, &rows, device, 16384).iter().sum();
            let targets = rows.iter().map(|e| e.targets()).sum::<usize>().max(1);
            -logp / targets as f64
        }
        Objective::Dpo { pairs, reference, beta, label_smoothing, loss } => {
            let rows: Vec<&Example> = held.iter().flat_map(|&i| [&pairs[i].chosen, &pairs[i].rejected]).collect();
            let s = score_examples(lm, arch, &rows, device, 16384);
            // log σ(z), stable for large |z|.
            let log_sigmoid = |z: f64| -((-z).max(0.0) + (-z.abs()).exp().ln_1p());
            let total: f64 = held
                .iter()
                .enumerate()
                .map(|(k, &i)| {
                    let d = (s[2 * k] - reference[i].0) - (s[2 * k + 1] - reference[i].1);
                    match loss {
                        DpoLoss::Sigmoid => {
                            let z = beta * d;
                            -(1.0 - label_smoothing) * log_sigmoid(z) - label_smoothing * log_sigmoid(-z)
                        }
                        DpoLoss::Ipo => (d - 1.0 / (2.0 * beta)).powi(2),
                    }
                })
                .sum();
            total / held.len().max(1) as f64
        }
    }
}

/// Where a training's checkpoints live and what they record.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct CheckpointState {
    step: u64,
    /// Hash of the training's inputs; a checkpoint of another training is
    /// ignored.
    fingerprint: String,
    log: Vec<TrainLogRow>,
}

/// Options of one call to [`train`] that do not change its result.
#[derive(Clone, Default)]
pub struct RunControl {
    /// Checkpoint directory (resume from it; save into it). `None`: no
    /// checkpoints.
    pub checkpoint_dir: Option<PathBuf>,
    /// Stop (as if killed) after this many optimizer steps of this call,
    /// without saving: for tests of resuming.
    pub stop_after: Option<u64>,
    /// Stage name written into the log rows.
    pub stage: String,
    /// Called after every optimizer step.
    pub progress: Option<super::ProgressFn>,
}

/// The outcome of a training.
pub struct Trained {
    /// The trained network (inference copy, no autodiff).
    pub lm: CausalLm,
    pub log: Vec<TrainLogRow>,
    /// `false` when [`RunControl::stop_after`] ended it early.
    pub finished: bool,
    /// Optimizer steps computed by this call (not restored).
    pub computed_steps: u64,
}

/// Total optimizer steps of a training.
pub fn total_steps(n: usize, cfg: &TrainConfig) -> u64 {
    (n.div_ceil(cfg.batch_size.max(1)) as u64) * cfg.epochs as u64
}

/// The files of a checkpoint; `blake3.json` (their hashes, written last)
/// is not among them.
const CHECKPOINT_FILES: [&str; 3] = ["model.safetensors", "optimizer.safetensors", "state.json"];

/// Finished checkpoints (`step-N`, no `.tmp`), newest first.
fn checkpoints(dir: &Path) -> Vec<PathBuf> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| n.starts_with("step-") && !n.ends_with(".tmp"))
                .collect()
        })
        .unwrap_or_default();
    // Zero-padded step numbers: name order is step order.
    names.sort();
    names.into_iter().rev().map(|n| dir.join(n)).collect()
}

/// Reads a checkpoint's state after checking its files against the hashes
/// recorded when it was saved (#22: a bit-flipped or truncated checkpoint
/// is never resumed from). Checkpoints saved before hashes were recorded
/// (no `blake3.json`) are trusted if their state parses.
fn read_checkpoint(ck: &Path) -> Result<CheckpointState, String> {
    match std::fs::read_to_string(ck.join("blake3.json")) {
        Ok(text) => {
            let sums: std::collections::BTreeMap<String, String> =
                serde_json::from_str(&text).map_err(|e| format!("`blake3.json` is corrupt: {e}"))?;
            for f in CHECKPOINT_FILES {
                let got = crate::store::hash_file(&ck.join(f)).map_err(|e| format!("{e:#}"))?;
                if sums.get(f) != Some(&got) {
                    return Err(format!("`{f}` does not match its hash (truncated or corrupt)"));
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot read `blake3.json`: {e}")),
    }
    let text = std::fs::read_to_string(ck.join("state.json")).map_err(|e| format!("cannot read `state.json`: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("`state.json` is corrupt: {e}"))
}

fn save_checkpoint(dir: &Path, lm: &CausalLm, opt: &AdamW, state: &CheckpointState) -> Result<(), String> {
    let name = format!("step-{:08}", state.step);
    // Temp names are unique per process and call (#22): nothing else ever
    // writes into or removes this one.
    let tmp = dir.join(format!("{name}.{}.tmp", crate::store::unique_suffix()));
    std::fs::create_dir_all(&tmp).map_err(|e| format!("creating {}: {e}", tmp.display()))?;
    weights::save_weights(lm, &tmp)?;
    opt.save(&tmp.join("optimizer.safetensors"))?;
    let text = serde_json::to_string(state).map_err(|e| e.to_string())?;
    std::fs::write(tmp.join("state.json"), text).map_err(|e| format!("writing state: {e}"))?;
    let mut sums = std::collections::BTreeMap::new();
    for f in CHECKPOINT_FILES {
        sums.insert(f, crate::store::hash_file(&tmp.join(f)).map_err(|e| format!("{e:#}"))?);
    }
    let sums = serde_json::to_string(&sums).map_err(|e| e.to_string())?;
    std::fs::write(tmp.join("blake3.json"), sums).map_err(|e| format!("writing checkpoint hashes: {e}"))?;
    for f in CHECKPOINT_FILES.iter().chain(&["blake3.json"]) {
        if let Ok(file) = std::fs::File::open(tmp.join(f)) {
            let _ = file.sync_all();
        }
    }
    let fin = dir.join(&name);
    let _ = std::fs::remove_dir_all(&fin);
    std::fs::rename(&tmp, &fin).map_err(|e| format!("renaming checkpoint: {e}"))?;
    let latest_tmp = dir.join(format!("latest.{}.tmp", crate::store::unique_suffix()));
    std::fs::write(&latest_tmp, &name).map_err(|e| format!("writing latest: {e}"))?;
    std::fs::rename(&latest_tmp, dir.join("latest")).map_err(|e| format!("writing latest: {e}"))?;
    // The last two are kept: if the newest turns out damaged when resuming,
    // the one before it is used (#22). Older ones are no longer needed.
    for old in checkpoints(dir).into_iter().skip(2) {
        let _ = std::fs::remove_dir_all(old);
    }
    Ok(())
}

/// Trains `lm` (an inference copy on `device`) on `obj`.
pub fn train(lm: CausalLm, arch: &ArchConfig, obj: &Objective, cfg: &TrainConfig, fingerprint: &str, ctl: &RunControl) -> Result<Trained, String> {
    cfg.validate()?;
    let n = obj.len();
    if n == 0 {
        return Err("nothing to train on: the dataset is empty".into());
    }
    let device = lm.devices().first().cloned().unwrap_or_else(Device::flex);
    let base_device = if device.is_autodiff() { device.clone().inner() } else { device.clone() };
    let ad_device = if cfg.activation_checkpointing {
        base_device.clone().autodiff().gradient_checkpointing()
    } else {
        base_device.clone().autodiff()
    };
    // The training's own precision, whatever the model was loaded with.
    let mut arch = arch.clone();
    arch.compute_dtype = cfg.precision.on(&base_device).map_err(|e| format!("{}: {e}", ctl.stage))?;
    let arch = &arch;
    let inv_freq = arch.rope.inv_freq(arch.head_dim);
    // `eval_share` holds examples out of training; without it `trained`
    // is every example, in order, and nothing changes.
    let (trained, held) = super::data::held_out_split(n, cfg.eval_share, cfg.seed);
    let n = trained.len();
    let total = total_steps(n, cfg);
    let warmup = (cfg.warmup_ratio * total as f64).ceil() as u64 + cfg.warmup_steps;
    let mut opt = AdamW::new(cfg.adamw());
    let mut lm = lm;
    let mut log: Vec<TrainLogRow> = Vec::new();
    let mut start_step = 0u64;
    if let Some(dir) = &ctl.checkpoint_dir {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        // The newest intact checkpoint of this training; a damaged one is
        // reported and skipped (the one before it is kept for this).
        for ck in checkpoints(dir) {
            let state = match read_checkpoint(&ck) {
                Ok(state) => state,
                Err(e) => {
                    tracing::warn!("{}: checkpoint `{}` is damaged ({e}); trying the one before it", ctl.stage, ck.display());
                    continue;
                }
            };
            if state.fingerprint != fingerprint {
                tracing::warn!("{}: ignoring checkpoint {} of another training", ctl.stage, ck.display());
                break;
            }
            let loaded = weights::load_weights(&mut lm, &[ck.join("model.safetensors")])
                .and_then(|()| AdamW::load(&ck.join("optimizer.safetensors"), cfg.adamw(), &base_device));
            match loaded {
                Ok(o) => {
                    opt = o;
                    start_step = state.step;
                    log = state.log;
                    tracing::info!("{}: resuming from optimizer step {start_step} of {total}", ctl.stage);
                    break;
                }
                Err(e) => {
                    tracing::warn!("{}: checkpoint `{}` cannot be loaded ({e}); trying the one before it", ctl.stage, ck.display());
                }
            }
        }
    }
    let mut model = to_trainable(lm, cfg.activation_checkpointing);
    let lens: Vec<usize> = (0..obj.len()).map(|i| obj.example_len(i)).collect();
    let steps_per_epoch = n.div_ceil(cfg.batch_size.max(1)) as u64;
    let threads = cfg.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if threads > 1 && cfg.micro_batch >= cfg.batch_size.min(n) {
        tracing::warn!(
            "{}: one micro-batch per step ({} examples), so a step runs on one of {threads} worker threads; \
             `micro_batch = {}` would use them all",
            ctl.stage,
            cfg.batch_size.min(n),
            cfg.batch_size.min(n).div_ceil(threads).max(1)
        );
    }
    let mut step = start_step;
    let mut computed = 0u64;
    let mut finished = true;
    'outer: for epoch in 0..cfg.epochs as u64 {
        let groups: Vec<Vec<usize>> = epoch_groups(n, cfg.batch_size, cfg.seed, epoch, cfg.shuffle)
            .into_iter()
            .map(|g| g.into_iter().map(|i| trained[i]).collect())
            .collect();
        for (gi, group) in groups.iter().enumerate() {
            let global = epoch * steps_per_epoch + gi as u64;
            if global < start_step {
                continue;
            }
            if ctl.stop_after.is_some_and(|s| computed >= s) {
                finished = false;
                break 'outer;
            }
            let t0 = Instant::now();
            let lr = lr_at(cfg.schedule, cfg.lr, step, warmup, total);
            let norm = match obj {
                Objective::Sft(ex) => group.iter().map(|&i| ex[i].targets()).sum::<usize>().max(1) as f64,
                Objective::Dpo { .. } => group.len() as f64,
            };
            let mbs = micro_batches(group, &lens, cfg.micro_batch);
            // Data parallel over threads: micro-batch i goes to worker
            // i mod T; the workers' sums are added in worker order, so the
            // result does not depend on timing.
            let workers = threads.min(mbs.len()).max(1);
            let run_part = |part: usize| -> (Option<burn::optim::GradientsParams>, StepStats) {
                let mut acc = GradAccumulator::default();
                let mut stats = StepStats::default();
                // Each worker differentiates its own leaves (same parameter
                // ids, same values): burn's autodiff graph is shared by
                // threads, and two backward passes through the same leaf
                // nodes can find a tape the other one consumed.
                let local = if workers > 1 { to_trainable(model.clone(), cfg.activation_checkpointing) } else { model.clone() };
                for mb in mbs.iter().skip(part).step_by(workers) {
                    let loss = micro_loss(obj, &local, arch, &inv_freq, mb, norm, &ad_device, &mut stats);
                    let lv: f32 = weights::to_vec_f32(loss.clone().inner())[0];
                    stats.loss += lv as f64;
                    acc.add(&local, loss.backward());
                }
                (acc.take(), stats)
            };
            let parts: Vec<(Option<burn::optim::GradientsParams>, StepStats)> = if workers == 1 {
                vec![run_part(0)]
            } else {
                std::thread::scope(|s| {
                    let handles: Vec<_> = (0..workers).map(|p| s.spawn(move || run_part(p))).collect();
                    handles.into_iter().map(|h| h.join().expect("training worker panicked")).collect()
                })
            };
            let mut acc = GradAccumulator::default();
            let mut stats = StepStats::default();
            for (g, st) in parts {
                if let Some(g) = g {
                    acc.merge(&model, g);
                }
                stats.loss += st.loss;
                stats.tokens += st.tokens;
                stats.chosen.extend(st.chosen);
                stats.rejected.extend(st.rejected);
            }
            let grads = acc.take().ok_or("no gradients were computed")?;
            let gnorm = global_grad_norm(&model, &grads);
            if !stats.loss.is_finite() {
                return Err(format!("{}: loss is {} at step {step}", ctl.stage, stats.loss));
            }
            let coef = clip_coef(gnorm, cfg.max_grad_norm);
            model = opt.step(model, grads, lr, coef);
            step += 1;
            computed += 1;
            let secs = t0.elapsed().as_secs_f64().max(1e-9);
            let mut row = TrainLogRow {
                stage: ctl.stage.clone(),
                step,
                epoch: epoch as f64 + (gi + 1) as f64 / groups.len() as f64,
                loss: stats.loss,
                lr,
                grad_norm: gnorm,
                tokens_per_s: stats.tokens as f64 / secs,
                finished_at: Some(crate::store::table::now()),
                ..Default::default()
            };
            if !stats.chosen.is_empty() {
                let k = stats.chosen.len() as f64;
                let acc = stats.chosen.iter().zip(&stats.rejected).filter(|(c, r)| c > r).count() as f64 / k;
                let c = stats.chosen.iter().sum::<f64>() / k;
                let r = stats.rejected.iter().sum::<f64>() / k;
                row.reward_accuracy = Some(acc);
                row.chosen_reward = Some(c);
                row.rejected_reward = Some(r);
                row.margin = Some(c - r);
            }
            if !held.is_empty() && gi + 1 == groups.len() {
                // The epoch's last step: the held-out loss of the model as
                // it now is (read only; the training is unchanged by it).
                row.eval_loss = Some(held_out_loss(obj, &held, &model.valid(), arch, &base_device));
                tracing::info!("{}: epoch {} held-out loss {:.4}", ctl.stage, epoch + 1, row.eval_loss.unwrap_or(f64::NAN));
            }
            tracing::debug!("{} step {step}/{total}: loss {:.4} lr {lr:.3e} |g| {gnorm:.3}", ctl.stage, row.loss);
            let loss = row.loss;
            log.push(row);
            if let Some(p) = &ctl.progress {
                p(super::StepProgress { step, total, loss: Some(loss) });
            }
            if let Some(dir) = &ctl.checkpoint_dir {
                if cfg.save_every > 0 && step % cfg.save_every == 0 && step < total {
                    let state = CheckpointState { step, fingerprint: fingerprint.to_string(), log: log.clone() };
                    save_checkpoint(dir, &model.valid(), &opt, &state)?;
                }
            }
        }
    }
    Ok(Trained { lm: model.valid(), log, finished, computed_steps: computed })
}
