//! Trainers against the tiny Hugging Face fixtures (reference values from
//! PyTorch/transformers/TRL, float32, CPU; tolerances from the fixtures'
//! README), a learning test for SFT and DPO on toy data, and bit-exact
//! resume of a killed training.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mpo_run::model::local::{init_model, weights, CausalLm, InitConfig, LocalModel, LocalModelConfig};
use mpo_run::train::data::{Example, PairExample};
use mpo_run::train::{score_examples, train, DpoLoss, Objective, Precision, RunControl, Schedule, TrainConfig};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn expected(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(&format!("{name}-expected.json"))).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn load(name: &str) -> LocalModel {
    LocalModel::load(&fixture(name), LocalModelConfig::default()).expect("load fixture model")
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-12)
}

/// One full-batch step, no clipping, constant lr: the first log row holds
/// the loss and gradient norm before the update.
fn one_step(lr: f64, weight_decay: f64) -> TrainConfig {
    TrainConfig {
        lr,
        epochs: 1,
        batch_size: 64,
        micro_batch: 64,
        schedule: Schedule::Constant,
        weight_decay,
        decay_all: true,
        max_grad_norm: None,
        shuffle: false,
        ..TrainConfig::default()
    }
}

/// Every tensor's name, shape and bytes as saved.
fn tensors(lm: &CausalLm) -> BTreeMap<String, (Vec<usize>, Vec<u8>)> {
    let bytes = weights::weights_bytes(lm).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors().into_iter().map(|(n, v)| (n, (v.shape().to_vec(), v.data().to_vec()))).collect()
}

/// Sums of every saved tensor, by Hugging Face name.
fn param_sums(lm: &CausalLm) -> BTreeMap<String, f64> {
    let bytes = weights::weights_bytes(lm).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, v)| {
            let s: f64 = v.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64).sum();
            (name, s)
        })
        .collect()
}

fn sft_matches(name: &str) {
    let exp = expected(name);
    let model = load(name);
    let sft = &exp["sft"];
    let ex = Example::prompt_completion(&ids(&sft["prompt_ids"]), &ids(&sft["completion_ids"]));
    let cfg = one_step(1e-3, 0.0);
    let out = train(model.net().clone(), model.arch(), &Objective::Sft(vec![ex]), &cfg, "t", &RunControl::default()).unwrap();
    let row = &out.log[0];
    let want_loss = sft["loss_mean_ce_over_completion_tokens"].as_f64().unwrap();
    let want_norm = sft["grad_l2_norm"].as_f64().unwrap();
    assert!(rel(row.loss, want_loss) < 1e-5, "{name}: SFT loss {} vs {want_loss}", row.loss);
    assert!(rel(row.grad_norm, want_norm) < 1e-4, "{name}: SFT grad norm {} vs {want_norm}", row.grad_norm);
}

fn dpo_matches(name: &str, activation_checkpointing: bool) {
    let exp = expected(name);
    let d = &exp["dpo"];
    let policy = load(name);
    let reference = load(&format!("{name}-ref"));
    let prompt = ids(&d["prompt_ids"]);
    let pair = PairExample {
        chosen: Example::prompt_completion(&prompt, &ids(&d["chosen_ids"])),
        rejected: Example::prompt_completion(&prompt, &ids(&d["rejected_ids"])),
    };
    let f = |k: &str| d[k].as_f64().unwrap();
    let dev = reference.device().clone();
    let r = score_examples(reference.net(), reference.arch(), &[&pair.chosen, &pair.rejected], &dev, 1 << 16);
    let p = score_examples(policy.net(), policy.arch(), &[&pair.chosen, &pair.rejected], &dev, 1 << 16);
    assert!(rel(r[0], f("reference_chosen_logps")) < 1e-4, "{name}: ref chosen {} ", r[0]);
    assert!(rel(r[1], f("reference_rejected_logps")) < 1e-4, "{name}: ref rejected {}", r[1]);
    assert!(rel(p[0], f("policy_chosen_logps")) < 1e-4, "{name}: policy chosen {}", p[0]);
    assert!(rel(p[1], f("policy_rejected_logps")) < 1e-4, "{name}: policy rejected {}", p[1]);

    let adam = &d["adamw"];
    let beta = f("beta");
    let mut cfg = one_step(adam["lr"].as_f64().unwrap(), adam["weight_decay"].as_f64().unwrap());
    cfg.betas = (adam["betas"][0].as_f64().unwrap(), adam["betas"][1].as_f64().unwrap());
    cfg.eps = adam["eps"].as_f64().unwrap();
    cfg.activation_checkpointing = activation_checkpointing;
    let obj = Objective::Dpo { pairs: vec![pair.clone()], reference: vec![(r[0], r[1])], beta, label_smoothing: 0.0, loss: DpoLoss::Sigmoid };
    let out = train(policy.net().clone(), policy.arch(), &obj, &cfg, "t", &RunControl::default()).unwrap();
    let row = &out.log[0];
    assert!(rel(row.loss, f("loss")) < 1e-5, "{name}: DPO loss {} vs {}", row.loss, f("loss"));
    assert!(rel(row.grad_norm, f("grad_l2_norm")) < 1e-4, "{name}: DPO grad norm {} vs {}", row.grad_norm, f("grad_l2_norm"));
    assert!((row.chosen_reward.unwrap() - f("chosen_reward")).abs() < 1e-4 * f("chosen_reward").abs().max(1e-2));
    assert!((row.rejected_reward.unwrap() - f("rejected_reward")).abs() < 1e-4 * f("rejected_reward").abs().max(1e-2) + 1e-6);
    assert_eq!(row.reward_accuracy, Some(1.0));

    // After one AdamW step: the loss and every tensor's sum.
    let p2 = score_examples(&out.lm, policy.arch(), &[&pair.chosen, &pair.rejected], &dev, 1 << 16);
    let z = beta * ((p2[0] - r[0]) - (p2[1] - r[1]));
    let loss_after = -(1.0 / (1.0 + (-z).exp())).ln();
    let want_after = adam["loss_after_one_step"].as_f64().unwrap();
    assert!(rel(loss_after, want_after) < 1e-5, "{name}: loss after a step {loss_after} vs {want_after}");
    let sums = param_sums(&out.lm);
    let counts: BTreeMap<String, usize> = {
        let bytes = weights::weights_bytes(&out.lm).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        st.tensors().into_iter().map(|(n, v)| (n, v.shape().iter().product())).collect()
    };
    let want = adam["param_checksums_after_one_step"].as_object().unwrap();
    assert_eq!(sums.len(), want.len(), "{name}: tensor names {:?}", sums.keys().collect::<Vec<_>>());
    for (k, v) in want {
        let got = sums.get(k).unwrap_or_else(|| panic!("{name}: no tensor `{k}`"));
        let tol = 1e-5 * counts[k] as f64;
        assert!((got - v.as_f64().unwrap()).abs() <= tol, "{name}: sum of `{k}` {got} vs {v} (tol {tol})");
    }
}

#[test]
fn sft_loss_and_gradient_norm_match_transformers_llama() {
    sft_matches("tiny-llama");
}

#[test]
fn sft_loss_and_gradient_norm_match_transformers_qwen2() {
    sft_matches("tiny-qwen2");
}

#[test]
fn dpo_values_and_one_adamw_step_match_trl_llama() {
    dpo_matches("tiny-llama", false);
}

#[test]
fn dpo_values_and_one_adamw_step_match_trl_qwen2() {
    dpo_matches("tiny-qwen2", false);
}

/// A tiny `init` model whose tokenizer knows the toy vocabulary.
fn toy_model(corpus: &[String]) -> LocalModel {
    let cfg = LocalModelConfig {
        init: Some(InitConfig {
            layers: 1,
            hidden: 32,
            heads: 2,
            kv_heads: 1,
            ff: 64,
            vocab_size: 64,
            head_dim: None,
            rope_theta: 10000.0,
            tie_embeddings: true,
            tokenizer: "word_level".into(),
            max_position_embeddings: 256,
        }),
        ..LocalModelConfig::default()
    };
    init_model(&cfg, corpus, 7).expect("init model")
}

const COLORS: [&str; 8] = ["red", "green", "blue", "black", "white", "pink", "gray", "brown"];
const ITEMS: [&str; 8] = ["apple", "mug", "book", "lamp", "key", "pen", "cup", "box"];

fn toy_corpus() -> Vec<String> {
    let mut c: Vec<String> = COLORS.iter().chain(ITEMS.iter()).map(|s| s.to_string()).collect();
    c.push("take the put it in drawer shelf then go to".into());
    c
}

fn toy_sft(model: &LocalModel) -> Vec<Example> {
    (0..8)
        .map(|i| {
            let p = model.tokenizer.encode(&format!("take the {} {}", COLORS[i], ITEMS[i])).unwrap();
            let c = model.tokenizer.encode(&format!("go to {} then put it in drawer", ITEMS[(i + 3) % 8])).unwrap();
            Example::prompt_completion(&p, &c)
        })
        .collect()
}

/// Gradient checkpointing (activations recomputed in the backward pass)
/// must not change a number: the same fixture values after one step.
#[test]
fn dpo_step_with_activation_checkpointing_matches_trl() {
    dpo_matches("tiny-llama", true);
}

#[test]
fn sft_learns_a_toy_mapping() {
    let model = toy_model(&toy_corpus());
    let data = toy_sft(&model);
    let cfg = TrainConfig { lr: 1e-2, epochs: 150, batch_size: 8, micro_batch: 4, warmup_steps: 5, ..TrainConfig::default() };
    let out = train(model.net().clone(), model.arch(), &Objective::Sft(data.clone()), &cfg, "toy", &RunControl::default()).unwrap();
    let first = out.log[0].loss;
    let last = out.log.last().unwrap().loss;
    // Uniform over ~40 tokens is ~3.7 nats; the mapping is learnable.
    assert!(first > 3.0, "initial loss {first}");
    assert!(last < 0.2, "SFT did not learn: loss {first} → {last}");
}

#[test]
fn dpo_learns_a_toy_preference() {
    let model = toy_model(&toy_corpus());
    let enc = |s: String| model.tokenizer.encode(&s).unwrap();
    let pairs: Vec<PairExample> = (0..16)
        .map(|i| {
            let p = enc(format!("take the {} {}", COLORS[i % 8], ITEMS[(i * 3) % 8]));
            PairExample {
                chosen: Example::prompt_completion(&p, &enc(format!("go to drawer then put it in {}", ITEMS[i % 8]))),
                rejected: Example::prompt_completion(&p, &enc(format!("go to shelf then put it in {}", ITEMS[i % 8]))),
            }
        })
        .collect();
    let dev = model.device().clone();
    let rows: Vec<&Example> = pairs.iter().flat_map(|p| [&p.chosen, &p.rejected]).collect();
    let r = score_examples(model.net(), model.arch(), &rows, &dev, 4096);
    let reference: Vec<(f64, f64)> = r.chunks(2).map(|c| (c[0], c[1])).collect();
    let obj = Objective::Dpo { pairs, reference, beta: 0.1, label_smoothing: 0.0, loss: DpoLoss::Sigmoid };
    let cfg = TrainConfig { lr: 1e-3, epochs: 100, batch_size: 8, micro_batch: 8, warmup_ratio: 0.03, ..TrainConfig::dpo_default() };
    let out = train(model.net().clone(), model.arch(), &obj, &cfg, "toy", &RunControl::default()).unwrap();
    assert_eq!(out.log.len(), 200);
    let window = |a: usize, b: usize| -> (f64, f64) {
        let rows = &out.log[a..b];
        let acc = rows.iter().map(|r| r.reward_accuracy.unwrap()).sum::<f64>() / rows.len() as f64;
        let margin = rows.iter().map(|r| r.margin.unwrap()).sum::<f64>() / rows.len() as f64;
        (acc, margin)
    };
    let (acc_end, m_end) = window(180, 200);
    let (_, m_mid) = window(90, 110);
    let (_, m_early) = window(10, 30);
    assert!(acc_end > 0.9, "reward accuracy {acc_end}");
    assert!(m_early < m_mid && m_mid < m_end, "margin not rising: {m_early} {m_mid} {m_end}");
    assert!(out.log.last().unwrap().loss < out.log[0].loss);
}

#[test]
fn killed_training_resumes_to_the_same_parameters_bit_for_bit() {
    let model = toy_model(&toy_corpus());
    let data = toy_sft(&model);
    let cfg = TrainConfig {
        lr: 2e-3,
        epochs: 3,
        batch_size: 3,
        micro_batch: 2,
        warmup_ratio: 0.1,
        weight_decay: 0.01,
        max_grad_norm: Some(0.5),
        save_every: 2,
        ..TrainConfig::default()
    };
    let obj = Objective::Sft(data);
    let straight = train(model.net().clone(), model.arch(), &obj, &cfg, "fp", &RunControl::default()).unwrap();
    assert_eq!(straight.log.len(), 9);

    let dir = tempfile::tempdir().unwrap();
    let ctl = RunControl { checkpoint_dir: Some(dir.path().to_path_buf()), stop_after: Some(5), ..RunControl::default() };
    // "Killed" after 5 steps (mid-epoch 2): the checkpoint of step 4 survives, step 5 is lost.
    let killed = train(model.net().clone(), model.arch(), &obj, &cfg, "fp", &ctl).unwrap();
    assert!(!killed.finished);
    let ctl = RunControl { checkpoint_dir: Some(dir.path().to_path_buf()), ..RunControl::default() };
    let resumed = train(model.net().clone(), model.arch(), &obj, &cfg, "fp", &ctl).unwrap();
    assert!(resumed.finished);
    assert_eq!(resumed.computed_steps, 5, "resumed from step 4 of 9");
    let losses = |l: &[mpo_run::train::TrainLogRow]| l.iter().map(|r| r.loss).collect::<Vec<_>>();
    let again = train(model.net().clone(), model.arch(), &obj, &cfg, "fp", &RunControl::default()).unwrap();
    assert_eq!(losses(&again.log), losses(&straight.log), "training is not deterministic");
    assert_eq!(losses(&resumed.log), losses(&straight.log));
    assert!(tensors(&resumed.lm) == tensors(&straight.lm), "resumed parameters differ");

    // A checkpoint of a different training is not resumed from.
    let other = train(model.net().clone(), model.arch(), &obj, &cfg, "other", &ctl).unwrap();
    assert_eq!(other.computed_steps, 9);
}

/// `precision = "bf16"`: the matmuls and attention run in bf16 on f32
/// parameters. The loss and gradient norm stay close to the float32
/// reference (bf16 keeps 8 bits of mantissa, so ~1e-2), yet differ from
/// the f32 run — the bf16 path really computes.
#[test]
fn sft_in_bf16_mixed_precision_is_close_to_transformers() {
    for name in ["tiny-llama", "tiny-qwen2"] {
        let exp = expected(name);
        let model = load(name);
        let sft = &exp["sft"];
        let ex = Example::prompt_completion(&ids(&sft["prompt_ids"]), &ids(&sft["completion_ids"]));
        let f32_row = {
            let out = train(model.net().clone(), model.arch(), &Objective::Sft(vec![ex.clone()]), &one_step(1e-3, 0.0), "t", &RunControl::default()).unwrap();
            out.log[0].clone()
        };
        let cfg = TrainConfig { precision: Precision::Bf16, ..one_step(1e-3, 0.0) };
        let out = train(model.net().clone(), model.arch(), &Objective::Sft(vec![ex]), &cfg, "t", &RunControl::default()).unwrap();
        let row = &out.log[0];
        let want_loss = sft["loss_mean_ce_over_completion_tokens"].as_f64().unwrap();
        let want_norm = sft["grad_l2_norm"].as_f64().unwrap();
        eprintln!("{name}: loss f32 {} bf16 {} ref {want_loss}; grad norm f32 {} bf16 {} ref {want_norm}", f32_row.loss, row.loss, f32_row.grad_norm, row.grad_norm);
        assert!(rel(row.loss, want_loss) < 2e-3, "{name}: bf16 SFT loss {} vs {want_loss}", row.loss);
        assert!(rel(row.grad_norm, want_norm) < 1e-2, "{name}: bf16 SFT grad norm {} vs {want_norm}", row.grad_norm);
        assert!(row.loss != f32_row.loss && row.grad_norm != f32_row.grad_norm, "{name}: bf16 gave the f32 numbers");
        // The parameters stay f32 (saved as such) after the step.
        let bytes = weights::weights_bytes(&out.lm).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert!(st.tensors().iter().all(|(_, v)| v.dtype() == safetensors::Dtype::F32), "{name}: parameters left f32");
    }
}

#[test]
fn sft_in_bf16_learns_a_toy_mapping() {
    let model = toy_model(&toy_corpus());
    let data = toy_sft(&model);
    let cfg = TrainConfig { lr: 1e-2, epochs: 150, batch_size: 8, micro_batch: 4, warmup_steps: 5, precision: Precision::Bf16, ..TrainConfig::default() };
    let out = train(model.net().clone(), model.arch(), &Objective::Sft(data), &cfg, "toy", &RunControl::default()).unwrap();
    let last = out.log.last().unwrap().loss;
    assert!(last < 0.3, "bf16 SFT did not learn: final loss {last}");
}

/// #22: a damaged newest checkpoint (a flipped byte, or truncated) is
/// detected by the hashes recorded when it was saved and the training
/// resumes from the one before it (the last two are kept), to the same
/// parameters and the same log, every logged float bit for bit.
#[test]
fn damaged_checkpoint_resumes_from_the_previous_one() {
    let model = toy_model(&toy_corpus());
    let data = toy_sft(&model);
    let cfg = TrainConfig {
        lr: 2e-3,
        epochs: 3,
        batch_size: 3,
        micro_batch: 2,
        warmup_ratio: 0.1,
        weight_decay: 0.01,
        max_grad_norm: Some(0.5),
        save_every: 2,
        ..TrainConfig::default()
    };
    let obj = Objective::Sft(data);
    let straight = train(model.net().clone(), model.arch(), &obj, &cfg, "fp", &RunControl::default()).unwrap();
    let bits = |l: &[mpo_run::train::TrainLogRow]| {
        l.iter()
            .map(|r| (r.step, r.epoch.to_bits(), r.loss.to_bits(), r.lr.to_bits(), r.grad_norm.to_bits()))
            .collect::<Vec<_>>()
    };
    type Damage = fn(&std::path::Path);
    let flip: Damage = |p| {
        let mut b = std::fs::read(p).unwrap();
        let i = b.len() - 7;
        b[i] ^= 0x10;
        std::fs::write(p, b).unwrap();
    };
    let truncate: Damage = |p| {
        let b = std::fs::read(p).unwrap();
        std::fs::write(p, &b[..b.len() / 2]).unwrap();
    };
    for (what, damage, file) in [
        ("flipped weights", flip, "model.safetensors"),
        ("truncated optimizer", truncate, "optimizer.safetensors"),
        ("truncated state", truncate, "state.json"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let ctl = RunControl { checkpoint_dir: Some(dir.path().to_path_buf()), stop_after: Some(5), ..RunControl::default() };
        // "Killed" after 5 steps: checkpoints of steps 2 and 4 are kept.
        train(model.net().clone(), model.arch(), &obj, &cfg, "fp", &ctl).unwrap();
        let mut kept: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().to_string()).collect();
        kept.retain(|n| n.starts_with("step-"));
        kept.sort();
        assert_eq!(kept, ["step-00000002", "step-00000004"], "{what}");
        damage(&dir.path().join("step-00000004").join(file));
        let ctl = RunControl { checkpoint_dir: Some(dir.path().to_path_buf()), ..RunControl::default() };
        let resumed = train(model.net().clone(), model.arch(), &obj, &cfg, "fp", &ctl).unwrap();
        assert!(resumed.finished, "{what}");
        assert_eq!(resumed.computed_steps, 7, "{what}: resumed from step 2 of 9");
        assert_eq!(bits(&resumed.log), bits(&straight.log), "{what}: log rows differ");
        assert!(tensors(&resumed.lm) == tensors(&straight.lm), "{what}: resumed parameters differ");
    }
}

/// #26: `eval_share` holds examples out of training (chosen by the seed)
/// and logs their loss on each epoch's last step; every row carries the
/// time its step finished.
#[test]
fn held_out_loss_is_logged_after_every_epoch() {
    let model = toy_model(&toy_corpus());
    let data = toy_sft(&model);
    let cfg = TrainConfig { lr: 1e-2, epochs: 20, batch_size: 3, micro_batch: 3, eval_share: 0.25, ..TrainConfig::default() };
    let obj = Objective::Sft(data);
    let out = train(model.net().clone(), model.arch(), &obj, &cfg, "toy", &RunControl::default()).unwrap();
    // 8 examples, 2 held out: 6 trained in batches of 3, 2 steps per epoch.
    assert_eq!(out.log.len(), 40);
    for r in &out.log {
        assert_eq!(r.eval_loss.is_some(), r.step % 2 == 0, "step {}: held-out loss only on an epoch's last step", r.step);
        assert!(r.finished_at.is_some(), "step {} has no time", r.step);
    }
    assert!(out.log.windows(2).all(|w| w[0].finished_at <= w[1].finished_at));
    let evals: Vec<f64> = out.log.iter().filter_map(|r| r.eval_loss).collect();
    assert!(evals.iter().all(|e| e.is_finite()));
    assert!(evals[evals.len() - 1] < evals[0], "held-out loss did not fall: {evals:?}");
    // The same split and numbers again (the draw is the seed's).
    let again = train(model.net().clone(), model.arch(), &obj, &cfg, "toy", &RunControl::default()).unwrap();
    assert_eq!(again.log.iter().map(|r| r.eval_loss).collect::<Vec<_>>(), out.log.iter().map(|r| r.eval_loss).collect::<Vec<_>>());
    // Nothing held out: no held-out loss, and the log of before (#26 keeps
    // `eval_share = 0` trainings unchanged).
    let all = TrainConfig { eval_share: 0.0, epochs: 1, ..cfg.clone() };
    let out = train(model.net().clone(), model.arch(), &obj, &all, "toy", &RunControl::default()).unwrap();
    assert_eq!(out.log.len(), 3);
    assert!(out.log.iter().all(|r| r.eval_loss.is_none()));
}

/// The held-out DPO loss is the training's loss on unseen pairs: with the
/// policy still equal to the reference (a negligible step), ln 2 per pair.
#[test]
fn held_out_dpo_loss_of_an_untrained_policy_is_ln_2() {
    let model = toy_model(&toy_corpus());
    let enc = |s: String| model.tokenizer.encode(&s).unwrap();
    let pairs: Vec<PairExample> = (0..8)
        .map(|i| {
            let p = enc(format!("take the {} {}", COLORS[i], ITEMS[i]));
            PairExample {
                chosen: Example::prompt_completion(&p, &enc(format!("go to drawer then put it in {}", ITEMS[i]))),
                rejected: Example::prompt_completion(&p, &enc(format!("go to shelf then put it in {}", ITEMS[i]))),
            }
        })
        .collect();
    let dev = model.device().clone();
    let rows: Vec<&Example> = pairs.iter().flat_map(|p| [&p.chosen, &p.rejected]).collect();
    let r = score_examples(model.net(), model.arch(), &rows, &dev, 4096);
    let reference: Vec<(f64, f64)> = r.chunks(2).map(|c| (c[0], c[1])).collect();
    let obj = Objective::Dpo { pairs, reference, beta: 0.1, label_smoothing: 0.0, loss: DpoLoss::Sigmoid };
    let cfg = TrainConfig { lr: 1e-12, epochs: 1, batch_size: 8, micro_batch: 8, eval_share: 0.25, ..TrainConfig::dpo_default() };
    let out = train(model.net().clone(), model.arch(), &obj, &cfg, "toy", &RunControl::default()).unwrap();
    assert_eq!(out.log.len(), 1);
    let e = out.log[0].eval_loss.expect("a held-out loss");
    assert!((e - std::f64::consts::LN_2).abs() < 1e-4, "held-out DPO loss {e}");
}

/// The progress callback gets each step's loss (the bar shows it).
#[test]
fn progress_reports_carry_the_steps_loss() {
    let model = toy_model(&toy_corpus());
    let data = toy_sft(&model);
    let cfg = TrainConfig { lr: 1e-2, epochs: 2, batch_size: 4, micro_batch: 4, ..TrainConfig::default() };
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = seen.clone();
    let ctl = RunControl {
        progress: Some(std::sync::Arc::new(move |p: mpo_run::train::StepProgress| sink.lock().unwrap().push(p))),
        ..RunControl::default()
    };
    let out = train(model.net().clone(), model.arch(), &Objective::Sft(data), &cfg, "toy", &ctl).unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), out.log.len());
    for (p, r) in seen.iter().zip(&out.log) {
        assert_eq!((p.step, p.total, p.loss), (r.step, 4, Some(r.loss)));
    }
}
