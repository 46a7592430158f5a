//! Stage `seed_plans`: the (task, meta plan) seed set the planner is
//! fine-tuned on (paper §3.1, App. C).
//!
//! - In: an `expert` artifact (trajectories of the built-in world or
//!   ScienceWorld).
//! - Out: `seed_set.jsonl` (task id, task text, plan, flaw) and
//!   `plans.parquet` (planner `teacher:<name>`, sample 0).
//! - Key: teacher identity, `planner.flaw_rate`, `experiment.seed`, the task
//!   count, and the expert's key. Items: one per task, keyed by the same
//!   settings, the task and what fixes its trajectory (the built-in world's
//!   generator version; another env's identity).
//!
//! Teachers: `rule` — the built-in world's summariser (that world only), with a fraction
//! `flaw_rate` of deliberately flawed plans (too concrete, wrong appliance,
//! missing step) so that SFT plans are imperfect and MC/DPO has something to
//! fix; or a chat model given the paper's App. E.1 prompt (the task and the
//! expert trajectory) that answers `<meta_plan>Step 1: …</meta_plan>`. An
//! unparseable reply is retried (greedy first, then sampled with a seed) up
//! to `planner.teacher_attempts` times; a task that never parses is recorded
//! in `failures.jsonl` and left out of the seed set — never its error text.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;

use anyhow::{anyhow, Result};
use serde::{Deserialize, Serialize};

use super::common::{derive_seed, prompt_set, read_jsonl, write_jsonl};
use super::expert::ExpertTrajectory;
use crate::agent::prompt::{render_transcript, PlannerInput, PromptSet};
use crate::model::{ChatModel, ChatRequest, Message};
use crate::spec::ModelSpec;

use crate::env::builtin;
use crate::stage::{Exported, Items, NodeCtx, Slot, Stage, StageOutput};
use crate::plan::{short_hash, Draft};
use crate::spec::{EnvSpec, PlannerSpec, Spec};
use crate::store::table::{self, PlanRow, PLANS};
use crate::store::ArtifactWriter;

pub const NAME: &str = "seed_plans";
pub const VERSION: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SeedPlansWork {
    pub env_name: String,
    pub teacher: String,
    /// The teacher model's settings when the teacher is a model.
    pub teacher_model: Option<ModelSpec>,
    pub prompts: String,
    pub attempts: u32,
    pub flaw_rate: f64,
    pub seed: u64,
    pub tasks: usize,
    pub env: EnvSpec,
    /// The `expert` artifact whose trajectories the teacher summarises.
    pub expert: Slot,
}

/// The seed set's file in a `seed_plans` artifact.
const SEED_SET: &str = "seed_set.jsonl";

/// The seed set of a `seed_plans` artifact (failed entries included: see
/// [`SeedPlan::failure`]).
pub fn read_seed_set(artifact: &Path) -> Result<Vec<SeedPlan>> {
    read_jsonl(&artifact.join(SEED_SET))
}

/// One entry of the seed set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeedPlan {
    pub task_id: String,
    /// The goal (the teacher's `{task}`).
    pub task: String,
    /// The task text the environment prints (the agent's `{task}`: the
    /// built-in world's room and goal; ScienceWorld's task description),
    /// what planners of the released sets are given. Absent in seed sets
    /// written before it (and in user files without it): `task` then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_text: Option<String>,
    pub plan: String,
    /// The App. C failure mode injected, if any.
    pub flaw: Option<String>,
    /// Why an LLM teacher gave no plan (then `plan` is empty and the entry
    /// is not part of the seed set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

impl SeedPlan {
    /// What the planner of `prompts` is given for this entry's task.
    pub fn planner_task(&self, prompts: &PromptSet) -> String {
        match prompts.planner_input {
            PlannerInput::Goal => self.task.clone(),
            PlannerInput::TaskText => prompts.planner_task(self.task_text.as_deref().unwrap_or(&self.task)),
        }
    }
}

/// The meta plan in a teacher's reply: the text between `<meta_plan>` (or
/// `<meta plan>`) tags, if it has at least one `Step`.
pub fn parse_meta_plan(reply: &str) -> Option<String> {
    for (open, close) in [("<meta_plan>", "</meta_plan>"), ("<meta plan>", "</meta plan>"), ("<meta_plan>", "</meta plan>"), ("<meta plan>", "</meta_plan>")] {
        let Some(start) = reply.find(open) else { continue };
        let rest = &reply[start + open.len()..];
        let Some(end) = rest.find(close) else { continue };
        let plan = rest[..end].trim();
        if plan.contains("Step 1") {
            return Some(plan.to_string());
        }
    }
    None
}

pub fn draft(env_name: &str, env: &EnvSpec, spec: &Spec, planner: &PlannerSpec, expert: usize) -> Result<Draft> {
    let mut inputs = Vec::new();
    let expert = Slot::push(&mut inputs, expert);
    let teacher_model = match planner.teacher.as_str() {
        "rule" => None,
        name => Some(spec.models.get(name).cloned().ok_or_else(|| anyhow!("model `{name}` is not declared"))?),
    };
    let available = super::train_tasks(env);
    let tasks = planner.seed_tasks.unwrap_or(available).min(available);
    let work = SeedPlansWork {
        env_name: env_name.to_string(),
        teacher: planner.teacher.clone(),
        teacher_model,
        prompts: spec.experiment.prompts.clone(),
        attempts: planner.teacher_attempts,
        flaw_rate: planner.flaw_rate,
        seed: spec.experiment.seed,
        tasks,
        env: env.clone(),
        expert,
    };
    Ok(Draft::new(format!("{NAME}[{env_name}/{}]", work.teacher), inputs, work))
}

#[async_trait]
impl Stage for SeedPlansWork {
    fn sharded(&self) -> bool {
        true
    }
    fn name(&self) -> &'static str {
        NAME
    }
    fn version(&self) -> u32 {
        VERSION
    }
    fn config(&self) -> serde_json::Value {
        let mut config = serde_json::json!({
            "teacher": self.teacher,
            "teacher_model": self.teacher_model,
            "prompts": self.teacher_model.as_ref().map(|_| &self.prompts),
            "attempts": self.teacher_model.as_ref().map(|_| self.attempts),
            "flaw_rate": self.flaw_rate,
            "seed": self.seed,
            "tasks": self.tasks,
        });
        // The seed set records each task's text for planners that are given
        // it (every set but `compact`); the artifact is rewritten once from
        // the journaled items, without asking the teacher again.
        if prompt_set(&self.prompts, self.family()).is_ok_and(|p| p.planner_input == PlannerInput::TaskText) {
            config["task_text"] = true.into();
        }
        config
    }
    fn items(&self, _inputs: &[Option<PathBuf>]) -> Result<Items> {
        Ok(Items::Keys(self.item_keys()?))
    }
    async fn run(&self, ctx: &NodeCtx, writer: &ArtifactWriter) -> Result<StageOutput> {
        run(self, ctx, writer).await
    }
    fn exports(&self) -> Option<&'static str> {
        Some("seed SFT set")
    }
    fn export(&self, artifact: &Path, to: &Path) -> Result<Exported> {
        export_seed_set(artifact, to, &self.prompts, self.env.family())
    }
}

impl SeedPlansWork {
    fn item_key(&self, task_id: &str) -> String {
        let mut v = serde_json::json!({
                "stage": NAME,
                "version": VERSION,
                "generator_version": builtin::GENERATOR_VERSION,
                "teacher": self.teacher,
                "teacher_model": self.teacher_model,
                "prompts": self.teacher_model.as_ref().map(|_| &self.prompts),
                "attempts": self.teacher_model.as_ref().map(|_| self.attempts),
                "flaw_rate": self.flaw_rate,
                "seed": self.seed,
                "task": task_id,
            });
        // The built-in world's keys predate other envs: no identity there.
        match &self.env {
            EnvSpec::Builtin(_) => {}
            EnvSpec::Sciworld(_) | EnvSpec::Agentgym(_) => v["env"] = self.env.identity(),
        }
        short_hash(&v.to_string())
    }

    pub fn item_keys(&self) -> Result<Vec<String>> {
        Ok(super::expert::train_task_ids(&self.env_name, &self.env, self.tasks)?.iter().map(|id| self.item_key(id)).collect())
    }

    /// The prompt family of the teacher's App. E.1 prompt.
    fn family(&self) -> crate::agent::prompt::Family {
        self.env.family()
    }

    /// The per-task seed of the teacher's choices.
    fn task_seed(&self, task_id: &str) -> u64 {
        let h = blake3::hash(format!("{}:{task_id}", self.seed).as_bytes());
        u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
    }
}

pub async fn run(w: &SeedPlansWork, ctx: &NodeCtx, writer: &ArtifactWriter) -> Result<StageOutput> {
    let trajectories = super::expert::read_trajectories(ctx.input(w.expert)?)?;
    let trajectories: Vec<_> = trajectories.into_iter().take(w.tasks).collect();
    let texts: std::collections::HashMap<String, String> =
        trajectories.iter().map(|t| (t.task_id.clone(), t.initial_observation.clone())).collect();
    let items: Vec<(String, ExpertTrajectory)> =
        trajectories.into_iter().map(|t| (w.item_key(&t.task_id), t)).collect();
    let results = match &w.teacher_model {
        Some(spec) => {
            let model = ctx.models.get(&w.teacher, spec)?;
            model.ready().await?;
            let prompts = Arc::new(prompt_set(&w.prompts, w.family())?);
            let work = w.clone();
            ctx.run_items(items, 64, move |t: ExpertTrajectory| {
                let (model, prompts, seed) = (model.clone(), prompts.clone(), work.task_seed(&t.task_id));
                let attempts = work.attempts;
                async move { Ok(serde_json::to_value(llm_seed(model.as_ref(), &prompts, &t, attempts, seed).await?)?) }
            })
            .await?
        }
        None => rule_seeds(w, ctx, items).await?,
    };
    finish(w, writer, results, &texts)
}

async fn rule_seeds(
    w: &SeedPlansWork,
    ctx: &NodeCtx,
    items: Vec<(String, ExpertTrajectory)>,
) -> Result<crate::stage::ItemResults> {
    let (flaw_rate, work) = (w.flaw_rate, w.clone());
    ctx
        .run_items(items, 1, move |t| {
            let seed = work.task_seed(&t.task_id);
            async move {
                let b = t.to_builtin().ok_or_else(|| {
                    anyhow!("the rule teacher needs the built-in world's trajectories; task `{}` is not one", t.task_id)
                })?;
                let p = builtin::teacher_plan(&b, flaw_rate, seed);
                let entry = SeedPlan {
                    task_id: t.task_id.clone(),
                    task: t.goal.clone(),
                    task_text: None,
                    plan: p.text,
                    flaw: p.flaw.map(|f| format!("{f:?}")),
                    failure: None,
                };
                Ok(serde_json::to_value(entry)?)
            }
        })
        .await
}

/// Asks the teacher model for a seed plan, retrying unparseable replies.
async fn llm_seed(model: &dyn ChatModel, prompts: &PromptSet, t: &ExpertTrajectory, attempts: u32, seed: u64) -> Result<SeedPlan> {
    let messages = super::expert::trajectory_messages(t);
    let conversation = render_transcript(&messages);
    let prompt = prompts.seed_prompt(&t.goal, conversation.trim_end());
    let mut last = String::new();
    for k in 0..attempts.max(1) {
        let mut req = ChatRequest::new(vec![Message::user(prompt.clone())]);
        // Greedy first; a retry of a greedy call would get the same answer.
        req.params.temperature = Some(if k == 0 { 0.0 } else { 0.7 });
        req.params.seed = (k > 0).then(|| derive_seed(seed, &["teacher", &k.to_string()]));
        req.params.max_tokens = Some(1024);
        let reply = model.chat(&req).await.map_err(|e| anyhow!("teacher call failed: {e}"))?;
        let text = reply.texts.into_iter().next().unwrap_or_default();
        match parse_meta_plan(&text) {
            Some(plan) => {
                return Ok(SeedPlan { task_id: t.task_id.clone(), task: t.goal.clone(), task_text: None, plan, flaw: None, failure: None })
            }
            None => last = text.chars().take(200).collect(),
        }
    }
    Ok(SeedPlan {
        task_id: t.task_id.clone(),
        task: t.goal.clone(),
        task_text: None,
        plan: String::new(),
        flaw: None,
        failure: Some(format!("no <meta_plan> with steps after {attempts} attempts; last reply began: {last:?}")),
    })
}

fn finish(
    w: &SeedPlansWork,
    writer: &ArtifactWriter,
    results: crate::stage::ItemResults,
    texts: &std::collections::HashMap<String, String>,
) -> Result<StageOutput> {
    let mut all: Vec<SeedPlan> =
        results.values.iter().map(|v| serde_json::from_value(v.clone())).collect::<Result<_, _>>()?;
    for s in &mut all {
        s.task_text = texts.get(&s.task_id).cloned();
    }
    let (seeds, failures): (Vec<SeedPlan>, Vec<SeedPlan>) = all.into_iter().partition(|s| s.failure.is_none());
    write_jsonl(&writer.path("failures.jsonl"), &failures)?;
    if !failures.is_empty() {
        tracing::warn!("seed plans: the teacher gave no parseable plan for {} tasks (see failures.jsonl)", failures.len());
    }
    write_jsonl(&writer.path(SEED_SET), &seeds)?;
    let rows: Vec<PlanRow> = seeds
        .iter()
        .map(|s| PlanRow {
            stage: NAME.into(),
            // The expert's tasks (`expert::train_task_ids`).
            split: Some("train".into()),
            task_id: s.task_id.clone(),
            planner: format!("teacher:{}", w.teacher),
            sample: 0,
            text: s.plan.clone(),
            q: None,
            n: None,
        })
        .collect();
    let n = table::write_rows(&writer.path("plans.parquet"), PLANS, &rows)?;
    let flawed = seeds.iter().filter(|s| s.flaw.is_some()).count();
    tracing::info!("seed plans: {} tasks, {flawed} flawed by design", seeds.len());
    Ok(StageOutput::new(results.reused, results.computed)
        .table("plans", n)
        .file(SEED_SET, seeds.len())
        .file("failures.jsonl", failures.len()))
}

#[cfg(test)]
mod tests {
    use super::parse_meta_plan;

    #[test]
    fn meta_plans_are_parsed_from_tags_only_with_steps() {
        assert_eq!(parse_meta_plan("Sure.\n<meta_plan>\nStep 1: a\nStep 2: b\n</meta_plan>").as_deref(), Some("Step 1: a\nStep 2: b"));
        assert_eq!(parse_meta_plan("<meta plan> Step 1: x </meta plan>").as_deref(), Some("Step 1: x"));
        assert_eq!(parse_meta_plan("<meta_plan>Step 1: x</meta plan>").as_deref(), Some("Step 1: x"));
        assert_eq!(parse_meta_plan("Step 1: untagged"), None);
        assert_eq!(parse_meta_plan("<meta_plan>no steps</meta_plan>"), None);
        assert_eq!(parse_meta_plan("<meta_plan>Step 1: unterminated"), None);
        assert_eq!(parse_meta_plan(""), None);
    }
}

/// A seed set read from a file (`planner.seed_set`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SeedFileWork {
    pub path: String,
    /// Content hash at plan time (`missing` if the file is absent).
    pub hash: String,
    /// The planner's prompt set and family (for exports; not in the key).
    pub prompts: String,
    pub family: crate::agent::prompt::Family,
}

pub fn file_draft(env_name: &str, path: &str, prompts: &str, family: crate::agent::prompt::Family) -> Draft {
    let hash = std::fs::read(path).map(|b| blake3::hash(&b).to_hex()[..20].to_string()).unwrap_or_else(|_| "missing".into());
    let work = SeedFileWork { path: path.to_string(), hash, prompts: prompts.to_string(), family };
    Draft::new(format!("{NAME}[{env_name}/file]"), vec![], work)
}

#[async_trait]
impl Stage for SeedFileWork {
    fn name(&self) -> &'static str {
        NAME
    }
    fn version(&self) -> u32 {
        VERSION
    }
    fn config(&self) -> serde_json::Value {
        serde_json::json!({ "seed_set_file": self.hash })
    }
    fn items(&self, _inputs: &[Option<PathBuf>]) -> Result<Items> {
        Ok(Items::Whole("one job (reads `planner.seed_set`)"))
    }
    async fn run(&self, _ctx: &NodeCtx, writer: &ArtifactWriter) -> Result<StageOutput> {
        run_file(self, writer).await
    }
    fn exports(&self) -> Option<&'static str> {
        Some("seed SFT set")
    }
    fn export(&self, artifact: &Path, to: &Path) -> Result<Exported> {
        export_seed_set(artifact, to, &self.prompts, self.family)
    }
}

/// `mpo_seed_sft.json` (LLaMA-Factory) and `trl_seed_sft.jsonl` (TRL):
/// the planner prompt of each seed task and its plan as the planner is
/// trained to write it (in the prompt's tags: `<workflow>\n{plan}\n</workflow>`
/// for the released prompts, as the release's SFT data has it).
fn export_seed_set(artifact: &Path, to: &Path, prompts: &str, family: crate::agent::prompt::Family) -> Result<Exported> {
    use crate::train::dataset::{self, Completion};
    let set = prompt_set(prompts, family)?;
    let rows: Vec<Completion> = read_seed_set(artifact)?
        .into_iter()
        .filter(|s| s.failure.is_none() && !s.plan.is_empty())
        .map(|s| Completion { prompt: set.planner_prompt(&s.planner_task(&set)), completion: set.plan_target(&s.plan), task_id: s.task_id })
        .collect();
    let file = to.join("mpo_seed_sft.json");
    dataset::write_json_array(&file, &dataset::llamafactory_sft(&rows))?;
    dataset::write_json_lines(&to.join("trl_seed_sft.jsonl"), &dataset::trl_sft(&rows))?;
    let mut info = serde_json::Map::new();
    info.insert("mpo_seed_sft".into(), dataset::llamafactory_sft_info("mpo_seed_sft.json"));
    Ok(Exported { info, line: format!("{} seed plans → {}", rows.len(), file.display()) })
}

pub async fn run_file(w: &SeedFileWork, writer: &ArtifactWriter) -> Result<StageOutput> {
    let text = std::fs::read_to_string(&w.path).map_err(|e| anyhow!("`planner.seed_set` = \"{}\": cannot read it: {e}", w.path))?;
    if blake3::hash(text.as_bytes()).to_hex()[..20] != w.hash {
        return Err(anyhow!("`planner.seed_set` = \"{}\" changed since the plan was made; run again", w.path));
    }
    let mut seeds = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let s: SeedPlan = serde_json::from_str(line)
            .map_err(|e| anyhow!("`{}` line {}: {e}; each line must be {{\"task_id\", \"task\", \"plan\"}} (and optionally \"task_text\")", w.path, i + 1))?;
        if s.plan.trim().is_empty() {
            return Err(anyhow!("`{}` line {}: empty plan", w.path, i + 1));
        }
        seeds.push(s);
    }
    write_jsonl(&writer.path(SEED_SET), &seeds)?;
    let rows: Vec<PlanRow> = seeds
        .iter()
        // A user's file does not say its tasks' split.
        .map(|s| PlanRow {
            stage: NAME.into(),
            split: None,
            task_id: s.task_id.clone(),
            planner: "seed".into(),
            sample: 0,
            text: s.plan.clone(),
            q: None,
            n: None,
        })
        .collect();
    let n = table::write_rows(&writer.path("plans.parquet"), PLANS, &rows)?;
    Ok(StageOutput::new(0, seeds.len()).table("plans", n).file(SEED_SET, seeds.len()))
}
