//! `engine = "llamafactory"`: LLaMA-Factory's full fine-tuning (`stage:
//! sft` or `dpo`), as the release trained its planners, one process per
//! rank under torchrun or accelerate through `python/lf_train.py`.
//!
//! mpo-run writes the dataset as LLaMA-Factory's ShareGPT files with their
//! `dataset_info.json` entry (`ranking: true` for pairs) and an ordinary
//! `train.yaml` from the spec's hyper-parameters; `llamafactory-cli train
//! train.yaml` in the job's dir runs the same training by hand. Prompts are
//! formatted with LLaMA-Factory's own template (`launch.template`, by
//! default from the base model's `model_type`), not the tokenizer's chat
//! template: that is how LLaMA-Factory trains. Its DPO computes the
//! reference with a frozen copy of the base at every step (LLaMA-Factory
//! has no precomputed reference), so the artifact's
//! `reference_logps.jsonl` is empty for this engine.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};

use super::{batch_split, check_model_dir, hf_scheduler, launch_argv, Rendezvous};
use crate::model::{Message, Role};
use crate::train::dataset::{self, Dataset};
use crate::train::engine::{Method, TrainEngine, TrainJob, TrainOutcome};
use crate::train::{DpoLoss, Precision, TrainConfig};

pub const NAME: &str = "llamafactory";

pub const DRIVER: &str = include_str!("../../../python/lf_train.py");
const DRIVER_FILE: &str = "lf_train.py";
/// The dataset's name in `dataset_info.json`.
const DATASET: &str = "mpo_train";

pub const PACKAGES: &[&str] = &["torch", "transformers", "llamafactory", "datasets"];

pub struct LlamaFactoryEngine;

/// LLaMA-Factory's template for a base model's `model_type`.
pub fn template_for(model_type: &str) -> Option<&'static str> {
    Some(match model_type {
        "llama" => "llama3",
        "qwen2" | "qwen2_moe" => "qwen",
        "qwen3" | "qwen3_moe" => "qwen3",
        "mistral" => "mistral",
        "gemma" | "gemma2" => "gemma",
        _ => return None,
    })
}

fn template(cfg: &TrainConfig, base_dir: &Path) -> Result<String> {
    if let Some(t) = &cfg.launch.template {
        return Ok(t.clone());
    }
    let path = base_dir.join("config.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?)?;
    let mt = v.get("model_type").and_then(serde_json::Value::as_str).unwrap_or("");
    template_for(mt).map(str::to_string).ok_or_else(|| {
        anyhow!("[train] engine = \"llamafactory\": no LLaMA-Factory template is known for model_type \"{mt}\"; set `launch.template` (e.g. \"llama3\", \"qwen\")")
    })
}

/// ShareGPT rows of whole conversations (a leading system message goes to
/// the `system` column).
fn sharegpt_chat(convs: &[Vec<Message>]) -> Vec<serde_json::Value> {
    convs
        .iter()
        .map(|m| {
            let (system, rest) = match m.first() {
                Some(first) if first.role == Role::System => (Some(first.content.clone()), &m[1..]),
                _ => (None, &m[..]),
            };
            let turns: Vec<serde_json::Value> = rest
                .iter()
                .map(|t| serde_json::json!({"from": if t.role == Role::Assistant { "gpt" } else { "human" }, "value": t.content}))
                .collect();
            let mut row = serde_json::json!({ "conversations": turns });
            if let Some(s) = system {
                row["system"] = s.into();
            }
            row
        })
        .collect()
}

/// The dataset file's rows and its `dataset_info.json` entry.
pub fn dataset_files(d: &Dataset) -> (Vec<serde_json::Value>, serde_json::Value) {
    let file = format!("{DATASET}.json");
    match d {
        Dataset::Chat(c) => {
            let mut info = dataset::llamafactory_sft_info(&file);
            info["columns"]["system"] = "system".into();
            (sharegpt_chat(c), info)
        }
        Dataset::Completions(r) => (dataset::llamafactory_sft(r), dataset::llamafactory_sft_info(&file)),
        Dataset::Preferences(r) => (dataset::llamafactory_dpo(r), dataset::llamafactory_dpo_info(&file)),
    }
}

/// A YAML scalar (JSON's quoting is valid YAML; a float in exponent form
/// gets a `.0` mantissa, which YAML 1.1 readers such as PyYAML need to read
/// it as a number: `1e-8` would be a string).
fn scalar(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "null".into(),
        serde_json::Value::Number(n) if n.is_f64() => {
            let t = n.to_string();
            match t.find('e') {
                Some(i) if !t[..i].contains('.') => format!("{}.0{}", &t[..i], &t[i..]),
                _ => t,
            }
        }
        other => other.to_string(),
    }
}

/// `train.yaml`: the spec's hyper-parameters as LLaMA-Factory's keys, in
/// the order of its example configs.
pub fn train_yaml(job: &TrainJob, work: &Path, template: &str) -> Result<String> {
    use serde_json::json;
    let cfg = &job.config;
    let split = batch_split(cfg).map_err(|e| anyhow!("[train] {e}"))?;
    let mut keys: Vec<(&str, serde_json::Value)> = vec![
        ("model_name_or_path", json!(job.base_dir)),
        ("stage", json!(if matches!(job.method, Method::Dpo { .. }) { "dpo" } else { "sft" })),
        ("do_train", json!(true)),
        ("finetuning_type", json!("full")),
    ];
    if let Method::Dpo { beta } = job.method {
        keys.push(("pref_beta", json!(beta)));
        keys.push(("pref_loss", json!(if cfg.loss == DpoLoss::Ipo { "ipo" } else { "sigmoid" })));
        keys.push(("dpo_label_smoothing", json!(cfg.label_smoothing)));
    }
    if let Some(z) = cfg.launch.deepspeed {
        let p = work.join("deepspeed.json");
        std::fs::write(&p, serde_json::to_vec_pretty(&super::deepspeed_config(z))?)?;
        keys.push(("deepspeed", json!(p)));
    }
    if cfg.launch.fsdp {
        keys.push(("fsdp", json!("full_shard auto_wrap")));
    }
    keys.extend([
        ("dataset", json!(DATASET)),
        ("dataset_dir", json!(work)),
        ("template", json!(template)),
        ("cutoff_len", json!(cfg.max_len)),
        ("overwrite_cache", json!(true)),
        ("output_dir", json!(work.join("output"))),
        ("logging_steps", json!(1)),
        ("save_strategy", json!(if cfg.save_every > 0 { "steps" } else { "no" })),
        ("save_steps", json!(cfg.save_every.max(1))),
        ("save_total_limit", json!(2)),
        ("plot_loss", json!(false)),
        ("overwrite_output_dir", json!(false)),
        ("report_to", json!("none")),
        ("per_device_train_batch_size", json!(split.per_device)),
        ("gradient_accumulation_steps", json!(split.grad_accum)),
        ("learning_rate", json!(cfg.lr)),
        ("num_train_epochs", json!(cfg.epochs as f64)),
        ("lr_scheduler_type", json!(hf_scheduler(cfg.schedule))),
    ]);
    if cfg.warmup_steps > 0 {
        keys.push(("warmup_steps", json!(cfg.warmup_steps)));
    } else {
        keys.push(("warmup_ratio", json!(cfg.warmup_ratio)));
    }
    keys.extend([
        ("weight_decay", json!(cfg.weight_decay)),
        ("adam_beta1", json!(cfg.betas.0)),
        ("adam_beta2", json!(cfg.betas.1)),
        ("adam_epsilon", json!(cfg.eps)),
        ("max_grad_norm", json!(cfg.max_grad_norm.unwrap_or(0.0))),
        ("seed", json!(cfg.seed)),
        ("data_seed", json!(cfg.seed)),
        ("bf16", json!(cfg.precision == Precision::Bf16)),
        ("disable_gradient_checkpointing", json!(!cfg.activation_checkpointing)),
        ("ddp_timeout", json!(180000000)),
    ]);
    let mut out = String::from("# Written by mpo-run (engine = \"llamafactory\"); `llamafactory-cli train train.yaml` runs it by hand.\n");
    for (k, v) in keys {
        out.push_str(&format!("{k}: {}\n", scalar(&v)));
    }
    Ok(out)
}

/// The command line a training runs (`--dry-run` prints it).
pub fn command(cfg: &TrainConfig, work: &Path, rdzv: Option<&Rendezvous>) -> Vec<String> {
    launch_argv(&cfg.launch.python(&cfg.engine), &cfg.launch, rdzv, &work.join(DRIVER_FILE), &[work.join("train.yaml").display().to_string()], cfg.precision == Precision::Bf16)
}

/// Writes the job's files (dataset, `dataset_info.json`, `train.yaml`,
/// drivers) into `work`.
pub fn write_job(job: &TrainJob, work: &Path) -> Result<()> {
    let template = template(&job.config, &job.base_dir)?;
    let (rows, info) = dataset_files(&job.dataset);
    dataset::write_json_array(&work.join(format!("{DATASET}.json")), &rows)?;
    std::fs::write(work.join("dataset_info.json"), serde_json::to_vec_pretty(&serde_json::json!({ DATASET: info }))?)?;
    std::fs::write(work.join("train.yaml"), train_yaml(job, work, &template)?)?;
    std::fs::write(work.join(DRIVER_FILE), DRIVER)?;
    std::fs::write(work.join(super::COMMON_FILE), super::COMMON)?;
    Ok(())
}

/// The files of LLaMA-Factory's output dir that are the model (the rest is
/// its logs and state).
fn is_model_file(name: &str) -> bool {
    !matches!(
        name,
        "trainer_log.jsonl" | "trainer_state.json" | "all_results.json" | "train_results.json" | "training_args.bin" | "README.md"
    ) && !name.starts_with("training_")
}

impl TrainEngine for LlamaFactoryEngine {
    fn name(&self) -> &'static str {
        NAME
    }

    fn train(&self, job: TrainJob) -> Result<TrainOutcome> {
        // The engine runs in its work dir: every path it gets is absolute.
        let job = super::absolute_paths(job)?;
        let cfg = &job.config;
        if !cfg.shuffle {
            bail!("{}: shuffle = false is not available with engine = \"llamafactory\" (it always shuffles, seeded)", job.stage);
        }
        let (versions, work) = super::prepare(&job, NAME, PACKAGES)?;
        write_job(&job, &work)?;
        let output = work.join("output");
        let argv = command(cfg, &work, super::rendezvous(&job)?.as_ref());
        let env = [("DISABLE_VERSION_CHECK".to_string(), "1".to_string())];
        let (log, computed_steps) = super::run(&job, "LLaMA-Factory", &argv, &env, &work, &output)?;
        std::fs::create_dir_all(&job.out_dir)?;
        for e in std::fs::read_dir(&output)?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if e.path().is_file() && is_model_file(&name) {
                std::fs::rename(e.path(), job.out_dir.join(&name))?;
            }
        }
        check_model_dir(&job.stage, &job.out_dir)?;
        Ok(TrainOutcome {
            log,
            computed_steps,
            reference: Vec::new(),
            examples: job.dataset.len(),
            engine: serde_json::json!({ "engine": NAME, "command": super::shell_line(&argv), "versions": versions }),
        })
    }
}
