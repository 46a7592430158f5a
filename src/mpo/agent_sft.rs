//! Stage `agent_sft`: an agent fine-tuned on demonstrations (AgentTuning-
//! style SFT, loss on the assistant turns).
//!
//! - In: `expert` (its successful episodes, or the built-in scripted plan
//!   follower's on the same tasks), `seed_plans` when a share of the
//!   demonstrations shows the task's seed plan, and the base model
//!   (`init_model` or a declared directory).
//! - Out: `model/` (a Hugging Face directory) and `train_log.parquet`.
//! - Key: the base, the env identity, the prompt set (and its content where
//!   its name does not pin it), tasks, `plan_share`, insertion, the training
//!   config, seed, thoughts, demonstrations, single turns; the inputs' keys.
//!
//! The conversations are built here, as text; the training engine
//! (`[train.agent_sft] engine`) tokenises and trains them.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::common::prompt_set;
use super::expert::ExpertTrajectory as Trajectory;
use super::models::ModelRef;
use crate::agent::prompt::{observation_message, opening};
use crate::model::Message;
use crate::spec::{EnvSpec, Insertion};
use crate::stage::{Items, NodeCtx, Slot, Stage, StageOutput};
use crate::store::ArtifactWriter;
use crate::train::dataset::Dataset;
use crate::train::engine::Method;
use crate::train::TrainConfig;

pub const NAME: &str = "agent_sft";
pub const VERSION: u32 = super::training::VERSION;

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
    /// Follower demonstrations also show the flawed seed plans.
    #[serde(default)]
    pub flawed_plans: bool,
    /// Share of planned follower demonstrations shown the world's
    /// misleading plan.
    #[serde(default)]
    pub misleading_share: f64,
    /// The `expert` artifact.
    pub expert: Slot,
    /// The `seed_plans` artifact (when `plan_share > 0`).
    pub seed_input: Option<Slot>,
}

#[async_trait]
impl Stage for AgentSftWork {
    fn name(&self) -> &'static str {
        NAME
    }
    fn version(&self) -> u32 {
        VERSION
    }
    fn config(&self) -> serde_json::Value {
        let mut c = serde_json::json!({
            "base": self.base.config(),
            "env": self.env.identity(),
            "prompts": self.prompts, "tasks": self.tasks, "plan_share": self.plan_share,
            "insertion": self.insertion, "train": self.train, "seed": self.seed,
            "thoughts": self.thoughts, "demonstrations": self.demonstrations,
        });
        if self.single_turns {
            c["single_turns"] = true.into();
        }
        if self.flawed_plans {
            c["flawed_plans"] = true.into();
        }
        if self.misleading_share > 0.0 {
            c["misleading_share"] = self.misleading_share.into();
        }
        // The prompt set's content where its name does not pin it (a
        // directory, or a revised embedded set).
        let id = prompt_set(&self.prompts, self.env.family()).ok().map(|p| super::common::prompt_identity(&p));
        if let Some(id) = id.filter(|id| *id != self.prompts) {
            c["prompt_id"] = id.into();
        }
        c
    }
    fn bind(&mut self, input_keys: &[String]) {
        self.base.bind(input_keys);
    }
    fn commands(&self, work: &std::path::Path) -> Vec<String> {
        super::training::commands(&self.train, work)
    }
    fn items(&self, _inputs: &[Option<PathBuf>]) -> Result<Items> {
        Ok(Items::Whole(super::training::WHOLE))
    }
    async fn run(&self, ctx: &NodeCtx, writer: &ArtifactWriter) -> Result<StageOutput> {
        run(self, ctx, writer).await
    }
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

async fn run(w: &AgentSftWork, ctx: &NodeCtx, writer: &ArtifactWriter) -> Result<StageOutput> {
    let prompts = prompt_set(&w.prompts, w.env.family())?;
    let infos: HashMap<String, crate::env::TaskInfo> =
        w.env.tasks("train", Some(w.tasks))?.into_iter().map(|t| (t.task_id.clone(), t)).collect();
    let trajectories = super::expert::read_trajectories(ctx.input(w.expert)?)?;
    let seeds: HashMap<String, String> = match w.seed_input {
        Some(slot) => super::seed_plans::read_seed_set(ctx.input(slot)?)?
            .into_iter()
            .filter(|s| w.flawed_plans || s.failure.is_none())
            .map(|s| (s.task_id, s.plan))
            .collect(),
        None => HashMap::new(),
    };
    // Follower demonstrations exist on the built-in world only, whose
    // episodes all have one step limit.
    let max_steps = w.env.max_steps().unwrap_or(crate::env::builtin::DEFAULT_MAX_STEPS);
    let mut conversations: Vec<Vec<Message>> = Vec::new();
    let mut kept = 0usize;
    for t in &trajectories {
        let Some(info) = infos.get(&t.task_id) else { continue };
        // A seeded draw in [0, 1) per task and purpose.
        let draw = |parts: &[&str]| super::common::derive_seed(w.seed, parts) as f64 / (u64::MAX >> 1) as f64;
        let with_plan = w.plan_share > 0.0 && draw(&[NAME, &t.task_id]) < w.plan_share;
        let mut plan = if with_plan { seeds.get(&t.task_id).cloned() } else { None };
        let demo = if w.demonstrations == "follower" || w.demonstrations == "informed_follower" {
            let game = crate::env::builtin::Game::from_task_id(&t.task_id)
                .ok_or_else(|| anyhow!("agent_sft: `follower` demonstrations need the built-in world (task `{}`)", t.task_id))?;
            if plan.is_some() && draw(&[NAME, "misleading", &t.task_id]) < w.misleading_share {
                plan = Some(crate::env::builtin::plan_for(&game, crate::env::builtin::PlanQuality::Misleading));
            }
            if w.demonstrations == "follower" {
                crate::env::builtin::follower_trajectory(&game, plan.as_deref(), max_steps).into()
            } else {
                crate::env::builtin::informed_follower_trajectory(&game, plan.as_deref(), max_steps).into()
            }
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
        let messages = agent_conversation(&prompts, &info.icl_key, &demo, plan.as_deref(), w.insertion, w.thoughts != crate::spec::Thoughts::Off)?;
        // Each episode, then its turns as examples of their own.
        let turns = if w.single_turns { single_turns(&messages) } else { Vec::new() };
        conversations.push(messages);
        conversations.extend(turns);
    }
    tracing::info!("agent_sft: {kept} successful {} episodes of {} tasks", w.demonstrations, trajectories.len());
    if conversations.is_empty() {
        bail!("agent_sft: no successful expert trajectory among the {} train tasks", w.tasks);
    }
    let (out, outcome) = super::training::train(ctx, writer, &w.base, Dataset::Chat(conversations), Method::Sft, &w.train).await?;
    tracing::info!("agent_sft: {} conversations trained on", outcome.examples);
    Ok(out)
}
