//! The stages that make or train local models:
//!
//! | stage | in | out |
//! |---|---|---|
//! | `init_model` | `expert` (+ `seed_plans`): the tokenizer corpus | `model/`: an `init` model (tokenizer trained on the corpus, weights from the seed) |
//! | `agent_sft` | `expert` (+ `seed_plans`), base model | `model/`, `train_log.parquet` |
//! | `sft` | `seed_plans`, base planner | `model/`, `train_log.parquet` |
//! | `rft` | `pairs` (best plan per task), SFT planner | `model/`, `train_log.parquet` |
//! | `dpo` | `pairs`, SFT planner (policy and reference) | `model/`, `reference_logps.jsonl`, `train_log.parquet` |
//!
//! `model/` is a Hugging Face directory (config, safetensors, tokenizer,
//! chat template). Keys: the training config, the prompt set, and the
//! inputs' keys (data and base weights). Training runs on a blocking
//! thread; with `save_every` it checkpoints under
//! `results/train/<stage>/<key>/` and a rerun resumes from there.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::common::{prompt_set, read_jsonl, write_jsonl};
use super::models::ModelRef;
use super::seed_plans::SeedPlan;
use crate::agent::prompt::{observation_message, opening, Family};
use super::expert::ExpertTrajectory as Trajectory;
use crate::exec::{NodeCtx, StageOutput};
use crate::model::local::{init_model, LocalModel, LocalModelConfig};
use crate::model::Message;
use crate::spec::{EnvSpec, Insertion, ModelSpec};
use crate::store::table::{self, TRAIN_LOG};
use crate::store::ArtifactWriter;
use crate::train::data::{chat_example, completion_example, Example, PairExample};
use crate::train::{score_examples, train, Objective, RunControl, TrainConfig, TrainLogRow};

pub const INIT: &str = "init_model";
pub const AGENT_SFT: &str = "agent_sft";
pub const SFT: &str = "sft";
pub const RFT: &str = "rft";
pub const DPO: &str = "dpo";
pub const VERSION: u32 = 1;

/// `init_model`: a model declared with `init = {…}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InitWork {
    pub model_name: String,
    pub settings: LocalModelConfig,
    pub seed: u64,
    pub prompts: String,
    pub family: Family,
}

impl InitWork {
    pub fn config(&self) -> serde_json::Value {
        serde_json::json!({ "model": self.model_name, "init": self.settings.init, "seed": self.seed, "prompts": self.prompts })
    }
}

/// `agent_sft`: an agent fine-tuned on expert trajectories.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AgentSftWork {
    pub base: ModelRef,
    pub env: EnvSpec,
    pub prompts: String,
    pub tasks: usize,
    /// Share of trajectories with the task's seed plan inserted.
    pub plan_share: f64,
    pub insertion: Insertion,
    pub train: TrainConfig,
    pub seed: u64,
    /// The expert's thoughts, none, or tracking thoughts.
    pub thoughts: crate::spec::Thoughts,
    /// `expert` or `follower`.
    pub demonstrations: String,
    /// Each turn also as an example of its own.
    #[serde(default)]
    pub single_turns: bool,
    /// Input index of `seed_plans` (when `plan_share > 0`).
    pub seed_input: Option<usize>,
}

impl AgentSftWork {
    pub fn config(&self) -> serde_json::Value {
        let env = crate::env::build(&self.env).ok();
        let mut c = serde_json::json!({
            "base": self.base.config(),
            "env": env.as_ref().map(|e| e.identity()).unwrap_or_default(),
            "prompts": self.prompts, "tasks": self.tasks, "plan_share": self.plan_share,
            "insertion": self.insertion, "train": self.train, "seed": self.seed,
            "thoughts": self.thoughts, "demonstrations": self.demonstrations,
        });
        if self.single_turns {
            c["single_turns"] = true.into();
        }
        // The prompt set's content where its name does not pin it (a
        // directory, or a revised embedded set).
        let id = env
            .and_then(|e| prompt_set(&self.prompts, e.family()).ok())
            .map(|p| super::common::prompt_identity(&p));
        if let Some(id) = id.filter(|id| *id != self.prompts) {
            c["prompt_id"] = id.into();
        }
        c
    }
}

/// `sft`, `rft` and `dpo` on the planner.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PlannerTrainWork {
    /// The model trained: the base (`sft`) or the SFT planner (`rft`, `dpo`).
    pub base: ModelRef,
    pub prompts: String,
    pub family: Family,
    pub train: TrainConfig,
    /// DPO's β.
    pub beta: f64,
}

impl PlannerTrainWork {
    pub fn config(&self, stage: &str) -> serde_json::Value {
        let mut v = serde_json::json!({
            "base": self.base.config(), "prompts": self.prompts, "train": self.train,
        });
        if stage == DPO {
            v["beta"] = serde_json::json!(self.beta);
        }
        v
    }
}

/// The tokenizer corpus of `init` models: the agent's and the planner's
/// texts of the train split (instruction, observations, actions, plans).
fn corpus(ctx: &NodeCtx, w: &InitWork) -> Result<Vec<String>> {
    let prompts = prompt_set(&w.prompts, w.family)?;
    let mut out = vec![prompts.instruction.clone(), prompts.planner.clone()];
    for examples in prompts.icl.values() {
        for ex in examples {
            out.extend(ex.iter().map(|m| m.content.clone()));
        }
    }
    for (node, dir) in &ctx.inputs {
        match node.stage {
            super::expert::NAME => {
                for t in super::expert::read_trajectories(dir)? {
                    out.push(t.initial_observation.clone());
                    for turn in &t.turns {
                        out.push(turn.assistant_text());
                        out.push(format!("Observation: {}", turn.observation));
                    }
                }
            }
            super::seed_plans::NAME => {
                let seeds: Vec<SeedPlan> = read_jsonl(&dir.join("seed_set.jsonl"))?;
                for s in seeds {
                    out.push(prompts.planner_prompt(&s.task));
                    out.push(s.plan);
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

pub async fn run_init(w: &InitWork, ctx: &NodeCtx, writer: &ArtifactWriter) -> Result<StageOutput> {
    let texts = corpus(ctx, w)?;
    // Each model its own draw, even when two share a shape.
    let seed = super::common::derive_seed(w.seed, &[INIT, &w.model_name]);
    let (settings, dir) = (w.settings.clone(), writer.path("model"));
    let n = texts.len();
    let stats = tokio::task::spawn_blocking(move || -> Result<serde_json::Value> {
        let model = init_model(&settings, &texts, seed)?;
        model.save(&dir)?;
        let params: usize = crate::train::optim::param_names(model.net()).iter().map(|(_, _, n)| n).sum();
        Ok(serde_json::json!({
            "vocab_size": model.arch().vocab_size, "parameters": params, "corpus_texts": n,
        }))
    })
    .await??;
    tracing::info!("init_model `{}`: {stats}", w.model_name);
    writer.write_json("init.json", &stats)?;
    Ok(StageOutput::new(0, 1).file("model/model.safetensors", 1))
}

/// The base model to train: a declared Hugging Face directory or an input's
/// `model/`.
fn load_base(ctx: &NodeCtx, base: &ModelRef) -> Result<LocalModel> {
    let ModelSpec::Local(settings) = &base.spec else {
        bail!("model `{}` is served (`kind = \"openai\"`): only `kind = \"local\"` models can be trained in-process", base.name);
    };
    let dir: PathBuf = match base.input {
        Some(i) => ctx.inputs.get(i).map(|(_, d)| d.join("model")).ok_or_else(|| anyhow!("missing input {i}"))?,
        None => settings.path.clone().ok_or_else(|| anyhow!("model `{}` has no `path`", base.name))?,
    };
    LocalModel::load(&dir, LocalModelConfig { path: Some(dir.clone()), ..settings.clone() })
        .with_context(|| format!("loading the base of `{}` from {}", base.name, dir.display()))
}

/// Trains on a blocking thread with checkpoints under the store, saves
/// `model/` and `train_log.parquet`.
async fn run_training(ctx: &NodeCtx, writer: &ArtifactWriter, base: LocalModel, obj: Objective, cfg: TrainConfig) -> Result<StageOutput> {
    let stage = ctx.node.stage.to_string();
    let ckpt = ctx.store.root().join("train").join(&stage).join(&ctx.node.key);
    let fingerprint = ctx.node.key.clone();
    let bar = ctx.progress.clone();
    let out_dir = writer.path("model");
    let ctl = RunControl {
        checkpoint_dir: Some(ckpt.clone()),
        stop_after: None,
        stage: stage.clone(),
        progress: Some(Arc::new(move |s, t| {
            bar.set_length(t);
            bar.set_position(s);
        })),
    };
    let (log, computed) = tokio::task::spawn_blocking(move || -> Result<(Vec<TrainLogRow>, u64)> {
        let out = train(base.net().clone(), base.arch(), &obj, &cfg, &fingerprint, &ctl).map_err(|e| anyhow!("{stage}: {e}"))?;
        crate::model::local::save_dir(&out_dir, base.arch(), &out.lm, &base.tokenizer)?;
        Ok((out.log, out.computed_steps))
    })
    .await??;
    let n = table::write_rows(&writer.path("train_log.parquet"), TRAIN_LOG, &log)?;
    if let Some(last) = log.last() {
        tracing::info!("`{}`: {} steps, final loss {:.4}", ctx.node.label, last.step, last.loss);
    }
    let _ = std::fs::remove_dir_all(&ckpt);
    Ok(StageOutput::new(log.len() - computed as usize, computed as usize).table("train_log", n).file("model/model.safetensors", 1))
}

fn truncate_all(mut v: Vec<Example>, max_len: usize) -> Vec<Example> {
    for e in &mut v {
        e.truncate(max_len);
    }
    v.retain(|e| e.targets() > 0);
    v
}

/// The conversation the agent loop would have had for an expert
/// trajectory (same opening, same observation messages), with `plan`
/// inserted at `insertion`.
pub fn agent_conversation(
    prompts: &crate::agent::prompt::PromptSet,
    icl_key: &str,
    t: &Trajectory,
    plan: Option<&str>,
    insertion: Insertion,
    thoughts: bool,
) -> Result<Vec<Message>> {
    let open = opening(prompts, icl_key, &t.initial_observation, plan, insertion)?;
    let mut messages = open.messages;
    let mut prefill = open.prefill;
    for (i, turn) in t.turns.iter().enumerate() {
        let said = if thoughts { turn.assistant_text() } else { format!("Action: {}", turn.action) };
        let text = format!("{}{}", prefill.take().unwrap_or_default(), said);
        messages.push(Message::assistant(text));
        if i + 1 < t.turns.len() {
            messages.push(Message::user(observation_message(prompts, &turn.observation, &t.initial_observation, plan, insertion, true)));
        }
    }
    Ok(messages)
}

/// Each reply with the message it answers, as a conversation of its own
/// (the first reply keeps the opening, which is the message it answers).
pub fn single_turns(messages: &[Message]) -> Vec<Vec<Message>> {
    messages
        .windows(2)
        .filter(|w| w[0].role == crate::model::Role::User && w[1].role == crate::model::Role::Assistant)
        .map(<[Message]>::to_vec)
        .collect()
}

pub async fn run_agent_sft(w: &AgentSftWork, ctx: &NodeCtx, writer: &ArtifactWriter) -> Result<StageOutput> {
    let base = load_base(ctx, &w.base)?;
    let env = crate::env::build(&w.env)?;
    let prompts = prompt_set(&w.prompts, env.family())?;
    let infos: HashMap<String, crate::env::TaskInfo> =
        env.tasks("train", Some(w.tasks))?.into_iter().map(|t| (t.task_id.clone(), t)).collect();
    let trajectories = super::expert::read_trajectories(&ctx.inputs[0].1)?;
    let seeds: HashMap<String, String> = match w.seed_input {
        Some(i) => read_jsonl::<SeedPlan>(&ctx.inputs[i].1.join("seed_set.jsonl"))?
            .into_iter()
            .filter(|s| s.failure.is_none())
            .map(|s| (s.task_id, s.plan))
            .collect(),
        None => HashMap::new(),
    };
    let max_steps = match &w.env {
        EnvSpec::Builtin(b) => b.max_steps,
        _ => 30,
    };
    let mut examples = Vec::new();
    let mut kept = 0usize;
    for t in &trajectories {
        let Some(info) = infos.get(&t.task_id) else { continue };
        let with_plan = w.plan_share > 0.0
            && (super::common::derive_seed(w.seed, &[AGENT_SFT, &t.task_id]) as f64 / (u64::MAX >> 1) as f64) < w.plan_share;
        let plan = if with_plan { seeds.get(&t.task_id).map(String::as_str) } else { None };
        let demo = if w.demonstrations == "follower" {
            let game = crate::env::builtin::Game::from_task_id(&t.task_id)
                .ok_or_else(|| anyhow!("agent_sft: `follower` demonstrations need the built-in world (task `{}`)", t.task_id))?;
            crate::env::builtin::follower_trajectory(&game, plan, max_steps).into()
        } else {
            t.clone()
        };
        if !demo.succeeded() {
            continue;
        }
        let mut demo = demo;
        if w.thoughts == crate::spec::Thoughts::Tracking {
            let game = crate::env::builtin::Game::from_task_id(&t.task_id)
                .ok_or_else(|| anyhow!("agent_sft: `thoughts = \"tracking\"` needs the built-in world (task `{}`)", t.task_id))?;
            let actions: Vec<String> = demo.turns.iter().map(|x| x.action.clone()).collect();
            for (turn, th) in demo.turns.iter_mut().zip(crate::env::builtin::tracking_thoughts(&game, &actions)) {
                turn.thought = Some(th);
            }
        }
        kept += 1;
        let messages = agent_conversation(&prompts, &info.icl_key, &demo, plan, w.insertion, w.thoughts != crate::spec::Thoughts::Off)?;
        examples.push(chat_example(&base.tokenizer, &messages).map_err(|e| anyhow!(e))?);
        if w.single_turns {
            for turn in single_turns(&messages) {
                examples.push(chat_example(&base.tokenizer, &turn).map_err(|e| anyhow!(e))?);
            }
        }
    }
    tracing::info!("agent_sft: {kept} successful {} episodes of {} tasks", w.demonstrations, trajectories.len());
    if examples.is_empty() {
        bail!("agent_sft: no successful expert trajectory among the {} train tasks", w.tasks);
    }
    let examples = truncate_all(examples, w.train.max_len);
    tracing::info!("agent_sft: {} conversations, {} tokens", examples.len(), examples.iter().map(Example::len).sum::<usize>());
    run_training(ctx, writer, base, Objective::Sft(examples), w.train.clone()).await
}

/// Planner SFT examples from (goal, plan) pairs.
fn planner_examples(base: &LocalModel, prompts: &crate::agent::prompt::PromptSet, data: &[(String, String)], max_len: usize) -> Result<Vec<Example>> {
    let ex = data
        .iter()
        .map(|(goal, plan)| completion_example(&base.tokenizer, &prompts.planner_prompt(goal), plan).map_err(|e| anyhow!(e)))
        .collect::<Result<Vec<_>>>()?;
    Ok(truncate_all(ex, max_len))
}

pub async fn run_sft(w: &PlannerTrainWork, ctx: &NodeCtx, writer: &ArtifactWriter) -> Result<StageOutput> {
    let base = load_base(ctx, &w.base)?;
    let prompts = prompt_set(&w.prompts, w.family)?;
    let seeds: Vec<SeedPlan> = read_jsonl(&ctx.inputs[0].1.join("seed_set.jsonl"))?;
    let data: Vec<(String, String)> = seeds.into_iter().filter(|s| s.failure.is_none() && !s.plan.is_empty()).map(|s| (s.task, s.plan)).collect();
    let examples = planner_examples(&base, &prompts, &data, w.train.max_len)?;
    run_training(ctx, writer, base, Objective::Sft(examples), w.train.clone()).await
}

/// A line of `pairs`' `train.jsonl`: what RFT and DPO train on.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PreferenceLine {
    pub task_id: String,
    pub goal: String,
    pub chosen: String,
    pub rejected: String,
}

pub async fn run_rft(w: &PlannerTrainWork, ctx: &NodeCtx, writer: &ArtifactWriter) -> Result<StageOutput> {
    let base = load_base(ctx, &w.base)?;
    let prompts = prompt_set(&w.prompts, w.family)?;
    let lines: Vec<PreferenceLine> = read_jsonl(&ctx.inputs[0].1.join("train.jsonl"))?;
    if lines.is_empty() {
        return unchanged(ctx, writer, &base, "no task has a best plan (every task's plans scored the same)");
    }
    let data: Vec<(String, String)> = lines.into_iter().map(|l| (l.goal, l.chosen)).collect();
    let examples = planner_examples(&base, &prompts, &data, w.train.max_len)?;
    run_training(ctx, writer, base, Objective::Sft(examples), w.train.clone()).await
}

pub async fn run_dpo(w: &PlannerTrainWork, ctx: &NodeCtx, writer: &ArtifactWriter) -> Result<StageOutput> {
    let base = load_base(ctx, &w.base)?;
    let prompts = prompt_set(&w.prompts, w.family)?;
    let lines: Vec<PreferenceLine> = read_jsonl(&ctx.inputs[0].1.join("train.jsonl"))?;
    if lines.is_empty() {
        return unchanged(ctx, writer, &base, "no preference pairs (every task's plans scored the same, or M = 1)");
    }
    let mut pairs = Vec::new();
    for l in &lines {
        let c = completion_example(&base.tokenizer, &prompts.planner_prompt(&l.goal), &l.chosen).map_err(|e| anyhow!(e))?;
        let r = completion_example(&base.tokenizer, &prompts.planner_prompt(&l.goal), &l.rejected).map_err(|e| anyhow!(e))?;
        let (mut c, mut r) = (c, r);
        c.truncate(w.train.max_len);
        r.truncate(w.train.max_len);
        pairs.push(PairExample { chosen: c, rejected: r });
    }
    // The reference (the SFT planner itself) scored once, before training.
    let ref_path = ctx.store.root().join("train").join(DPO).join(format!("{}.reference.jsonl", ctx.node.key));
    let reference: Vec<(f64, f64)> = match read_jsonl::<(f64, f64)>(&ref_path) {
        Ok(v) if v.len() == pairs.len() => v,
        _ => {
            let (net, arch, device) = (base.net().clone(), base.arch().clone(), base.device().clone());
            let rows: Vec<Example> = pairs.iter().flat_map(|p| [p.chosen.clone(), p.rejected.clone()]).collect();
            let scores = tokio::task::spawn_blocking(move || {
                let refs: Vec<&Example> = rows.iter().collect();
                score_examples(&net, &arch, &refs, &device, 16384)
            })
            .await?;
            let v: Vec<(f64, f64)> = scores.chunks(2).map(|c| (c[0], c[1])).collect();
            if let Some(p) = ref_path.parent() {
                std::fs::create_dir_all(p)?;
            }
            write_jsonl(&ref_path, &v)?;
            v
        }
    };
    let lines_out: Vec<serde_json::Value> = lines
        .iter()
        .zip(&reference)
        .map(|(l, r)| serde_json::json!({"task_id": l.task_id, "reference_chosen_logps": r.0, "reference_rejected_logps": r.1}))
        .collect();
    write_jsonl(&writer.path("reference_logps.jsonl"), &lines_out)?;
    let obj = Objective::Dpo { pairs, reference, beta: w.beta, label_smoothing: w.train.label_smoothing, loss: w.train.loss };
    let out = run_training(ctx, writer, base, obj, w.train.clone()).await?;
    let _ = std::fs::remove_file(&ref_path);
    Ok(out.file("reference_logps.jsonl", lines_out.len()))
}

/// With no data (no pairs), the trained planner is the SFT planner as it
/// is: the model is saved unchanged, the log is empty and `note.json` says
/// why (a sweep point with M = 1 has no pairs by construction).
fn unchanged(ctx: &NodeCtx, writer: &ArtifactWriter, base: &LocalModel, why: &str) -> Result<StageOutput> {
    tracing::warn!("`{}`: {why}; the model is the SFT planner unchanged", ctx.node.label);
    base.save(&writer.path("model"))?;
    writer.write_json("note.json", &serde_json::json!({ "trained": false, "reason": why }))?;
    let n = table::write_rows::<TrainLogRow>(&writer.path("train_log.parquet"), TRAIN_LOG, &[])?;
    Ok(StageOutput::new(0, 0).table("train_log", n).file("model/model.safetensors", 1))
}

/// Where a finished training stage's model is.
pub fn model_dir(artifact: &Path) -> PathBuf {
    artifact.join("model")
}
