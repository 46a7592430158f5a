//! The MPO pipeline as stages (`docs/ARCHITECTURE.md`).
//!
//! Each stage is one file here that implements [`crate::stage::Stage`]; its
//! top says its inputs, outputs and the config in its key. [`drafts`] wires
//! one variant's spec into stage instances, in topological order, in four
//! phases that hand typed [`Handle`]s to each other:
//!
//! ```text
//! planner chain   expert ─► seed_plans ─► sft          (needs [planner]; or planner.seed_set)
//!                 expert (+ seed_plans) ─► init_model, agent_sft   (models made here, on first use)
//! MPO loop        sample_plans ─► mc_rollouts ─► pairs ─► dpo, rft   (needs planner.model, mpo.explorer)
//! evaluation      test_plans(variant, env, split) ─► eval(agent, env, split, variant, insertion)
//!                 eval(agent, env, split, none); baseline; follower
//! judge           test_plans(mpo), test_plans(sft) ─► judge
//! ```
//! What an environment can do (an expert, a rule teacher, scripted
//! players) is asked of its [`EnvSpec`]; a spec that needs what its envs
//! lack gets an error naming the key and its file.

use std::collections::BTreeMap;
use std::marker::PhantomData;

use anyhow::{bail, Result};

use crate::plan::Draft;
use crate::spec::{EnvSpec, Insertion, ModelSpec, PlannerVariant, Spec};
use crate::stage::{Slot, Stage};

pub mod agent_sft;
pub mod baseline;
pub mod common;
pub mod dpo;
pub mod eval;
pub mod expert;
pub mod export;
pub mod follower;
pub mod init_model;
pub mod judge;
pub mod mc_rollouts;
pub mod models;
pub mod pairs;
pub mod rft;
pub mod rule_plans;
pub mod sample_plans;
pub mod seed_plans;
pub mod sft;
pub mod test_plans;
pub mod training;

use models::ModelRef;

/// A node among one variant's drafts, typed by its stage's work, so a phase
/// cannot wire a node where another kind of artifact is read.
pub struct Handle<T> {
    index: usize,
    _stage: PhantomData<fn() -> T>,
}

impl<T> Clone for Handle<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Handle<T> {}

impl<T> Handle<T> {
    /// Adds the node to a consumer's `inputs`; the slot it reads it by.
    fn input(self, inputs: &mut Vec<usize>) -> Slot {
        Slot::push(inputs, self.index)
    }
}

fn model<'a>(spec: &'a Spec, name: &str) -> Result<&'a ModelSpec> {
    spec.models.get(name).ok_or_else(|| anyhow::anyhow!("model `{name}` is not declared"))
}

/// Builds one variant's drafts: each stage once, models resolved to the
/// stage that produced their weights.
struct Builder<'a> {
    spec: &'a Spec,
    /// Where a spec key's value came from (file, `--set`, default).
    source: &'a dyn Fn(&str) -> String,
    out: Vec<Draft>,
    experts: BTreeMap<String, Handle<expert::ExpertWork>>,
    /// The `seed_plans` node (a teacher's or a seed set file's).
    seeds: Option<usize>,
    /// Model name → the node whose `model/` holds the weights it is used
    /// with (`init_model` or `agent_sft`).
    produced: BTreeMap<String, usize>,
    planner_env: Option<String>,
}

impl<'a> Builder<'a> {
    fn push<T: Stage + 'static>(&mut self, label: String, inputs: Vec<usize>, work: T) -> Handle<T> {
        self.push_draft(Draft::new(label, inputs, work))
    }

    fn push_draft<T>(&mut self, d: Draft) -> Handle<T> {
        self.out.push(d);
        Handle { index: self.out.len() - 1, _stage: PhantomData }
    }

    fn env(&self, name: &str) -> Result<&'a EnvSpec> {
        self.spec.envs.get(name).ok_or_else(|| anyhow::anyhow!("env `{name}` is not declared"))
    }

    fn expert(&mut self, env_name: &str) -> Result<Handle<expert::ExpertWork>> {
        if let Some(&h) = self.experts.get(env_name) {
            return Ok(h);
        }
        let env = self.env(env_name)?;
        if !env.has_expert() {
            bail!(
                "`envs.{env_name}.kind` = \"{}\" in {}: this env has no expert, and the spec needs its expert trajectories \
                 (seed plans from a teacher, an `init` model's tokenizer corpus, or agent SFT); envs with an expert: \
                 `kind = \"builtin\"`, `kind = \"sciworld\"`\nhint: give the planner a seed set (`planner.seed_set = \"seeds.jsonl\"`), \
                 or learn on a built-in or ScienceWorld env",
                env.kind(),
                (self.source)(&format!("envs.{env_name}.kind"))
            );
        }
        let h = self.push_draft(expert::draft(env_name, env, self.spec)?);
        self.experts.insert(env_name.to_string(), h);
        Ok(h)
    }

    fn seeds(&mut self) -> Result<usize> {
        if let Some(i) = self.seeds {
            return Ok(i);
        }
        let planner = self.spec.planner.as_ref().ok_or_else(|| anyhow::anyhow!("seed plans need a `[planner]` table"))?;
        let env_name = self.planner_env.clone().unwrap_or_default();
        if let Some(path) = &planner.seed_set {
            let family = self.spec.envs.get(&env_name).map_or(crate::env::Family::Alfworld, EnvSpec::family);
            let h: Handle<seed_plans::SeedFileWork> =
                self.push_draft(seed_plans::file_draft(&env_name, path, &self.spec.experiment.prompts, family));
            self.seeds = Some(h.index);
            return Ok(h.index);
        }
        let env = self.env(&env_name)?;
        if planner.teacher == "rule" && !env.has_rule_teacher() {
            let (allowed, or_teacher) = if env.has_expert() {
                (
                    "a teacher model declared in `[models]` (`planner.teacher = \"NAME\"`: the paper's App. E.1 prompt on the simulator's gold trajectories) or a seed set file (`planner.seed_set`)",
                    " or `planner.teacher` to a model name",
                )
            } else {
                ("a seed set file (`planner.seed_set`): this env has no expert", "")
            };
            bail!(
                "`planner.teacher` = \"rule\" in {}: the rule teacher summarises the built-in world's expert only, and the planner's env `{env_name}` is `kind = \"{}\"`; allowed: {allowed}\nhint: set `planner.seed_set = \"seeds.jsonl\"` (lines `{{\"task_id\", \"task\", \"plan\"}}`){or_teacher}",
                (self.source)("planner.teacher"),
                env.kind()
            );
        }
        let expert = self.expert(&env_name)?;
        let h: Handle<seed_plans::SeedPlansWork> = self.push_draft(seed_plans::draft(&env_name, env, self.spec, planner, expert.index)?);
        self.seeds = Some(h.index);
        Ok(h.index)
    }

    /// The env whose train split feeds models (`init` corpora, agent SFT).
    fn data_env(&self) -> Result<String> {
        if let Some(e) = self.spec.agent_sft.as_ref().and_then(|a| a.env.clone()) {
            return Ok(e);
        }
        if let Some(e) = &self.planner_env {
            return Ok(e.clone());
        }
        self.spec.envs.keys().next().cloned().ok_or_else(|| anyhow::anyhow!("the spec declares no env"))
    }

    /// The node that makes `name`'s weights before any use, if any.
    fn producer(&mut self, name: &str) -> Result<Option<usize>> {
        if let Some(&i) = self.produced.get(name) {
            return Ok(Some(i));
        }
        let spec = model(self.spec, name)?;
        let init = match spec {
            ModelSpec::Local(l) if l.init.is_some() && l.path.is_none() => {
                let data_env = self.data_env()?;
                let mut inputs = Vec::new();
                let expert = self.expert(&data_env)?.input(&mut inputs);
                let seeds = match self.spec.planner {
                    Some(_) => Some(Slot::push(&mut inputs, self.seeds()?)),
                    None => None,
                };
                let w = init_model::InitWork {
                    model_name: name.to_string(),
                    settings: l.clone(),
                    seed: self.spec.experiment.seed,
                    prompts: self.spec.experiment.prompts.clone(),
                    family: self.env(&data_env)?.family(),
                    expert,
                    seeds,
                };
                Some(self.push(format!("{}[{name}]", init_model::NAME), inputs, w).index)
            }
            _ => None,
        };
        let trained = match &self.spec.agent_sft {
            Some(a) if a.models.iter().any(|m| m == name) => {
                let env_name = self.data_env()?;
                let env = self.env(&env_name)?.clone();
                let mut inputs = Vec::new();
                let expert = self.expert(&env_name)?.input(&mut inputs);
                let seed_input = if a.plan_share > 0.0 { Some(Slot::push(&mut inputs, self.seeds()?)) } else { None };
                let base = match init {
                    Some(i) => ModelRef::trained(name, spec, Slot::push(&mut inputs, i).0),
                    None => ModelRef::declared(name, spec),
                };
                let w = agent_sft::AgentSftWork {
                    base,
                    tasks: a.tasks.unwrap_or(usize::MAX).min(train_tasks(&env)),
                    env,
                    prompts: self.spec.experiment.prompt_set_name(),
                    plan_share: a.plan_share,
                    insertion: self.spec.mpo.insertion,
                    train: self.spec.train.agent_sft.clone(),
                    seed: self.spec.experiment.seed,
                    thoughts: a.thoughts,
                    demonstrations: a.demonstrations.clone(),
                    single_turns: a.single_turns,
                    flawed_plans: a.flawed_plans,
                    misleading_share: a.misleading_share,
                    expert,
                    seed_input,
                };
                Some(self.push(format!("{}[{name}]", agent_sft::NAME), inputs, w).index)
            }
            _ => None,
        };
        let node = trained.or(init);
        if let Some(i) = node {
            self.produced.insert(name.to_string(), i);
        }
        Ok(node)
    }

    /// `name` as a consumer with `inputs` uses it (adding its producer to
    /// the inputs).
    fn use_model(&mut self, name: &str, inputs: &mut Vec<usize>) -> Result<ModelRef> {
        let spec = model(self.spec, name)?;
        Ok(match self.producer(name)? {
            Some(node) => ModelRef::trained(name, spec, Slot::push(inputs, node).0),
            None => ModelRef::declared(name, spec),
        })
    }

    /// A planner checkpoint (`sft`/`dpo`/`rft` node) as a consumer uses it.
    fn use_planner(&self, planner: &Planner, node: Option<usize>, inputs: &mut Vec<usize>) -> ModelRef {
        match node {
            Some(n) => ModelRef::trained(&planner.name, &planner.spec, Slot::push(inputs, n).0),
            None => ModelRef::declared(&planner.name, &planner.spec),
        }
    }
}

/// The planner of a spec and its trained versions.
struct Planner {
    name: String,
    /// Settings (for a `planner.checkpoint`: a local model at that path).
    spec: ModelSpec,
    env_name: String,
    /// `sft` node (none: the declared model is already the SFT planner).
    sft: Option<Handle<sft::SftWork>>,
    /// Whether `dpo`/`rft` can train it (a local model).
    trainable: bool,
    dpo: Option<Handle<dpo::DpoWork>>,
    rft: Option<Handle<rft::RftWork>>,
}

impl Planner {
    fn sft_node(&self) -> Option<usize> {
        self.sft.map(|h| h.index)
    }
}

/// The stage instances one variant needs, in topological order.
///
/// `source` says where a spec key's value came from, for errors.
pub fn drafts(spec: &Spec, source: &dyn Fn(&str) -> String) -> Result<Vec<Draft>> {
    let mut b = Builder { spec, source, out: Vec::new(), experts: BTreeMap::new(), seeds: None, produced: BTreeMap::new(), planner_env: None };
    let mut planner = planner_chain(&mut b)?;
    if let Some(p) = planner.as_mut() {
        mpo_loop(&mut b, p)?;
    }
    let test_plans = evaluation(&mut b, planner.as_ref())?;
    judge_phase(&mut b, &test_plans)?;
    if b.out.is_empty() {
        // Nothing else asked: the expert of each env that has one (useful
        // to inspect a world, or to make ScienceWorld's gold trajectories).
        for (name, env) in &spec.envs {
            if env.has_expert() {
                b.out.push(expert::draft(name, env, spec)?);
            }
        }
    }
    Ok(b.out)
}

/// The planner chain: seed plans and the SFT planner (trained here from a
/// local base, given as a checkpoint directory, or a served model used as
/// it is).
fn planner_chain(b: &mut Builder) -> Result<Option<Planner>> {
    let spec = b.spec;
    let Some(planner) = &spec.planner else { return Ok(None) };
    let env_name = match &planner.env {
        Some(e) => e.clone(),
        None => spec.envs.keys().next().cloned().unwrap_or_default(),
    };
    let Some(env) = spec.envs.get(&env_name) else {
        bail!("`planner.env` names env `{env_name}`, which is not declared");
    };
    b.planner_env = Some(env_name.clone());
    let state = match (&planner.model, &planner.checkpoint) {
        (m, Some(dir)) => {
            let base = match m {
                Some(name) => match model(spec, name)? {
                    ModelSpec::Local(l) => l.clone(),
                    ModelSpec::Openai(_) => bail!("`planner.checkpoint` is set, so `planner.model` (`{name}`) must be a `kind = \"local\"` model (its sampling settings are used)"),
                },
                None => Default::default(),
            };
            let l = crate::model::local::LocalModelConfig { path: Some(dir.into()), init: None, ..base };
            let name = m.clone().unwrap_or_else(|| "planner".into());
            Some(Planner { name, spec: ModelSpec::Local(l), env_name, sft: None, trainable: true, dpo: None, rft: None })
        }
        (Some(name), None) => {
            let mspec = model(spec, name)?.clone();
            match &mspec {
                ModelSpec::Local(_) => {
                    let mut inputs = Vec::new();
                    let data = Slot::push(&mut inputs, b.seeds()?);
                    let base = b.use_model(name, &mut inputs)?;
                    let w = sft::SftWork(training::PlannerTraining { base, prompts: spec.experiment.prompts.clone(), family: env.family(), train: spec.train.sft.clone(), data });
                    let sft = b.push(format!("{}[{name}]", sft::NAME), inputs, w);
                    Some(Planner { name: name.clone(), spec: mspec, env_name, sft: Some(sft), trainable: true, dpo: None, rft: None })
                }
                ModelSpec::Openai(_) => Some(Planner { name: name.clone(), spec: mspec, env_name, sft: None, trainable: false, dpo: None, rft: None }),
            }
        }
        (None, None) => None,
    };
    if state.is_none() && planner.prompted.is_none() {
        // Nothing to train: the seed set itself (and its expert data).
        b.seeds()?;
    }
    Ok(state)
}

/// The MPO loop: M plans per train task, N explorer episodes per plan,
/// best/worst pairs, then DPO (the MPO planner) and RFT where wanted.
fn mpo_loop(b: &mut Builder, p: &mut Planner) -> Result<()> {
    let spec = b.spec;
    let Some(planner) = &spec.planner else { return Ok(()) };
    let Some(explorer) = &spec.mpo.explorer else {
        bail!("`planner.model` is set, so Monte Carlo scoring needs an explorer agent: set `mpo.explorer` to a model name");
    };
    let (env_name, env) = (p.env_name.clone(), b.env(&p.env_name)?);
    let prompts = spec.experiment.prompts.clone();
    let mut inputs = Vec::new();
    let model_ref = b.use_planner(p, p.sft_node(), &mut inputs);
    let w = sample_plans::SamplePlansWork {
        env_name: env_name.clone(),
        env: env.clone(),
        model: model_ref,
        prompts: prompts.clone(),
        tasks: planner.train_tasks.unwrap_or(usize::MAX).min(train_tasks(env)),
        m: spec.mpo.m,
        temperature: spec.mpo.sample_temperature,
        max_tokens: planner.max_tokens,
        seed: spec.experiment.seed,
    };
    let sampled = b.push(format!("{}[{env_name}/{}]", sample_plans::NAME, p.name), inputs, w);
    let mut inputs = Vec::new();
    let plans = sampled.input(&mut inputs);
    let explorer_ref = b.use_model(explorer, &mut inputs)?;
    let w = mc_rollouts::McRolloutsWork {
        env_name: env_name.clone(),
        env: env.clone(),
        explorer: explorer_ref,
        prompts: spec.experiment.prompt_set_name(),
        n: spec.mpo.n,
        temperature: spec.mpo.explorer_temperature,
        insertion: spec.mpo.insertion,
        seed: spec.experiment.seed,
        env_retries: spec.experiment.env_retries,
        plans,
    };
    let scored = b.push(format!("{}[{env_name}/{explorer}]", mc_rollouts::NAME), inputs, w);
    if env.has_scripted_players() {
        // The sampled plans' true quality, for the report's check of the
        // Monte Carlo scores.
        let mut inputs = Vec::new();
        let plans = Some(sampled.input(&mut inputs));
        let w = follower::FollowerWork { env_name: env_name.clone(), env: env.clone(), split: "train".into(), tasks: None, planner: PlannerVariant::Sft, plans, sampled: true };
        b.push(format!("{}[sampled/{env_name}/train]", follower::NAME), inputs, w);
    }
    let mut inputs = Vec::new();
    let w = pairs::PairsWork { env_name: env_name.clone(), prompts: prompts.clone(), family: env.family().name().into(), scored: scored.input(&mut inputs) };
    let pairs_node = b.push(format!("{}[{env_name}]", pairs::NAME), inputs, w);
    if !p.trainable {
        return Ok(());
    }
    let wanted = |v: PlannerVariant| spec.eval.as_ref().is_some_and(|e| e.planners.contains(&v));
    if wanted(PlannerVariant::Mpo) || spec.eval.is_none() {
        let mut inputs = Vec::new();
        let data = pairs_node.input(&mut inputs);
        let base = b.use_planner(p, p.sft_node(), &mut inputs);
        let planner = training::PlannerTraining { base, prompts: prompts.clone(), family: env.family(), train: spec.train.dpo.clone(), data };
        let w = dpo::DpoWork { planner, beta: spec.mpo.beta };
        p.dpo = Some(b.push(format!("{}[{}]", dpo::NAME, p.name), inputs, w));
    }
    if wanted(PlannerVariant::Rft) {
        let mut inputs = Vec::new();
        let data = pairs_node.input(&mut inputs);
        let base = b.use_planner(p, p.sft_node(), &mut inputs);
        let w = rft::RftWork(training::PlannerTraining { base, prompts, family: env.family(), train: spec.train.rft.clone(), data });
        p.rft = Some(b.push(format!("{}[{}]", rft::NAME, p.name), inputs, w));
    }
    Ok(())
}

/// Test plans per (env, split, planner variant), for the judge.
type TestPlanNodes = BTreeMap<(String, String, PlannerVariant), Handle<test_plans::TestPlansWork>>;

/// Evaluation: for every env and split, the random baseline, each planner
/// variant's test plans, the scripted follower with them, and each agent
/// at each insertion position.
fn evaluation(b: &mut Builder, planner: Option<&Planner>) -> Result<TestPlanNodes> {
    let spec = b.spec;
    let mut test_plan_nodes = TestPlanNodes::new();
    let Some(ev) = &spec.eval else { return Ok(test_plan_nodes) };
    for env_name in &ev.envs {
        let env = spec.envs.get(env_name).ok_or_else(|| anyhow::anyhow!("env `{env_name}` is not declared"))?;
        for split in &ev.splits {
            let tasks = ev.tasks.or_else(|| env.task_count(split));
            if ev.random_baseline > 0 && env.has_scripted_players() {
                let w = baseline::BaselineWork {
                    env_name: env_name.clone(),
                    env: env.clone(),
                    split: split.clone(),
                    tasks,
                    episodes_per_task: ev.random_baseline,
                    seed: spec.experiment.seed,
                };
                b.push(format!("{}[random/{env_name}/{split}]", baseline::NAME), vec![], w);
            }
            let ablation = ev.ablation_tasks.map(|k| tasks.map_or(k, |t| t.min(k))).or(tasks);
            for variant in &ev.planners {
                let tasks = if *variant == PlannerVariant::Rft { ablation } else { tasks };
                let plans_node = match variant {
                    PlannerVariant::None => None,
                    PlannerVariant::Good | PlannerVariant::Misleading => {
                        let w = rule_plans::RulePlansWork { variant: *variant, env_name: env_name.clone(), env: env.clone(), split: split.clone(), tasks };
                        Some(b.push(format!("{}[{}/{env_name}/{split}]", rule_plans::NAME, test_plans::variant_name(*variant)), vec![], w).index)
                    }
                    v => {
                        let h = test_plans_node(b, planner, *v, env_name, env, split, tasks)?;
                        test_plan_nodes.insert((env_name.clone(), split.clone(), *v), h);
                        Some(h.index)
                    }
                };
                if ev.follower && env.has_scripted_players() {
                    let mut inputs = Vec::new();
                    let plans = plans_node.map(|i| Slot::push(&mut inputs, i));
                    let w = follower::FollowerWork { env_name: env_name.clone(), env: env.clone(), split: split.clone(), tasks, planner: *variant, plans, sampled: false };
                    let label = format!("{}[{}/{env_name}/{split}]", follower::NAME, test_plans::variant_name(*variant));
                    b.push(label, inputs, w);
                }
                // Rule plans are the premise check's probe: the instruction only.
                let probe = plans_node.is_none() || rule_plans::quality(*variant).is_some();
                let insertions: Vec<Insertion> = if probe { vec![Insertion::Instruction] } else { ev.insertion.clone() };
                for insertion in insertions {
                    for agent in &ev.agents {
                        let mut inputs = Vec::new();
                        let plans = plans_node.map(|i| Slot::push(&mut inputs, i));
                        let agent_ref = b.use_model(agent, &mut inputs)?;
                        let w = eval::EvalWork {
                            agent: agent_ref,
                            env_name: env_name.clone(),
                            env: env.clone(),
                            split: split.clone(),
                            tasks: if insertion == Insertion::Instruction { tasks } else { ablation },
                            planner: *variant,
                            insertion,
                            prompts: spec.experiment.prompt_set_name(),
                            temperature: ev.temperature,
                            seed: spec.experiment.seed,
                            concurrency: ev.concurrency,
                            env_retries: spec.experiment.env_retries,
                            quirks: crate::agent::episode::Quirks { zero_reward_on_format_error: ev.zero_reward_on_format_error },
                            plans,
                        };
                        let pos = if plans_node.is_some() { format!("/{}", common::insertion_name(insertion)) } else { String::new() };
                        let label = format!("{}[{agent}/{env_name}/{split}/{}{pos}]", eval::NAME, test_plans::variant_name(*variant));
                        b.push(label, inputs, w);
                    }
                }
            }
        }
    }
    Ok(test_plan_nodes)
}

/// One planner variant's test plans for an env's split.
fn test_plans_node(
    b: &mut Builder,
    planner: Option<&Planner>,
    variant: PlannerVariant,
    env_name: &str,
    env: &EnvSpec,
    split: &str,
    tasks: Option<usize>,
) -> Result<Handle<test_plans::TestPlansWork>> {
    let spec = b.spec;
    let mut inputs = Vec::new();
    let vname = test_plans::variant_name(variant);
    let model_ref = match variant {
        PlannerVariant::Prompted => {
            let Some(name) = spec.planner.as_ref().and_then(|p| p.prompted.clone()) else {
                bail!("planner variant `prompted` in `eval.planners` needs `planner.prompted` (a model name)");
            };
            b.use_model(&name, &mut inputs)?
        }
        _ => {
            let Some(p) = planner else {
                bail!("planner variant `{vname}` in `eval.planners` needs `planner.model` (a model name) or `planner.checkpoint`");
            };
            let node = match variant {
                PlannerVariant::Sft => p.sft_node(),
                PlannerVariant::Mpo | PlannerVariant::Rft if !p.trainable => bail!(
                    "planner variant `{vname}` needs a planner trained in-process (`dpo`/`rft` on a `kind = \"local\"` \
                     model), but `planner.model` (`{}`) is a served model; evaluate `none`, `sft` or `prompted`, or train \
                     elsewhere with the datasets the `pairs` stage exports",
                    p.name
                ),
                PlannerVariant::Mpo => p.dpo.map(|h| h.index),
                _ => p.rft.map(|h| h.index),
            };
            b.use_planner(p, node, &mut inputs)
        }
    };
    let w = test_plans::TestPlansWork {
        variant,
        env_name: env_name.to_string(),
        env: env.clone(),
        split: split.to_string(),
        tasks,
        model: model_ref,
        prompts: spec.experiment.prompts.clone(),
        max_tokens: spec.planner.as_ref().map_or(512, |p| p.max_tokens),
    };
    Ok(b.push(format!("{}[{vname}/{env_name}/{split}]", test_plans::NAME), inputs, w))
}

/// The judge of MPO vs SFT test plans, for every evaluated env and split
/// that has both.
fn judge_phase(b: &mut Builder, test_plans: &TestPlanNodes) -> Result<()> {
    let spec = b.spec;
    let (Some(j), Some(ev)) = (&spec.judge, &spec.eval) else { return Ok(()) };
    for env_name in &ev.envs {
        let env = b.env(env_name)?.clone();
        for split in &ev.splits {
            let key = |v| (env_name.clone(), split.clone(), v);
            let (Some(&mpo), Some(&sft)) = (test_plans.get(&key(PlannerVariant::Mpo)), test_plans.get(&key(PlannerVariant::Sft))) else {
                continue;
            };
            let mut inputs = Vec::new();
            let (mpo, sft) = (mpo.input(&mut inputs), sft.input(&mut inputs));
            let tasks = j.tasks.or(ev.tasks).or_else(|| env.task_count(split));
            let model = match (j.kind, &j.model) {
                (crate::spec::JudgeKind::Model, Some(model)) => model,
                (crate::spec::JudgeKind::Model, None) => bail!("`[judge]` needs `model` (a model name), or `kind = \"rule\"`"),
                (crate::spec::JudgeKind::Rule, _) => {
                    // Validated: the built-in world, and no model.
                    let w = judge::rule::RuleJudgeWork { env_name: env_name.clone(), env: env.clone(), split: split.clone(), tasks, mpo, sft };
                    b.push(format!("{}[rule/{env_name}/{split}]", judge::rule::NAME), inputs, w);
                    continue;
                }
            };
            let model_ref = b.use_model(model, &mut inputs)?;
            let w = judge::stage::JudgeWork {
                model: model_ref,
                env_name: env_name.clone(),
                tasks,
                env: env.clone(),
                split: split.clone(),
                attempts: j.attempts,
                seed: spec.experiment.seed,
                mpo,
                sft,
            };
            b.push(format!("{}[{env_name}/{split}]", judge::stage::NAME), inputs, w);
        }
    }
    Ok(())
}

/// How many train tasks of `env` the experiment uses.
pub(crate) fn train_tasks(env: &EnvSpec) -> usize {
    env.task_count("train").unwrap_or(0)
}
