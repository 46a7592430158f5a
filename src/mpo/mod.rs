//! The MPO pipeline as stages (DESIGN.md §1).
//!
//! [`drafts`] turns one variant's spec into the stage instances it needs, in
//! topological order; [`run`] executes one node. Each stage lives in its own
//! file whose top says its inputs, outputs and the config in its key.
//!
//! Wiring:
//! ```text
//! expert ─► seed_plans ─► sft                  (needs [planner]; or planner.seed_set)
//! expert (+ seed_plans) ─► init_model, agent_sft
//! sample_plans ─► mc_rollouts ─► pairs ─► dpo, rft   (needs planner.model, mpo.explorer)
//! test_plans(variant, env, split) ─► eval(agent, env, split, variant, insertion)
//! eval(agent, env, split, none)                (no plans)
//! test_plans(mpo), test_plans(sft) ─► judge
//! ```
//! An `expert` exists for the built-in world and ScienceWorld (gold
//! replays); the rule teacher for the built-in world only. A spec that
//! needs what its envs lack gets an error naming the key and its file.

use anyhow::{bail, Result};

use crate::exec::{NodeCtx, StageOutput};
use crate::plan::{Draft, Node, Plan};
use crate::spec::{EnvSpec, Insertion, ModelSpec, PlannerVariant, Spec};
use crate::store::{ArtifactWriter, Store};

pub mod baseline;
pub mod common;
pub mod eval;
pub mod expert;
pub mod follower;
pub mod export;
pub mod judge;
pub mod mc_rollouts;
pub mod pairs;
pub mod sample_plans;
pub mod seed_plans;
pub mod models;
pub mod test_plans;
pub mod train_stages;

use std::collections::BTreeMap;

use models::ModelRef;

/// The typed parameters of a node; what its `run` needs.
#[derive(Clone, Debug)]
pub enum Work {
    Expert(expert::ExpertWork),
    SeedPlans(seed_plans::SeedPlansWork),
    SamplePlans(sample_plans::SamplePlansWork),
    McRollouts(mc_rollouts::McRolloutsWork),
    Pairs(pairs::PairsWork),
    TestPlans(test_plans::TestPlansWork),
    Eval(eval::EvalWork),
    Init(train_stages::InitWork),
    SeedFile(seed_plans::SeedFileWork),
    Judge(judge::stage::JudgeWork),
    Baseline(baseline::BaselineWork),
    Follower(follower::FollowerWork),
    AgentSft(train_stages::AgentSftWork),
    /// `sft`, `rft` or `dpo` (the node's stage says which).
    PlannerTrain(train_stages::PlannerTrainWork),
}

impl Work {
    /// Records the keys of the node's inputs in the model references that
    /// point at trained weights (called by [`Plan::build`]).
    pub fn bind(&mut self, input_keys: &[String]) {
        match self {
            Work::SamplePlans(w) => w.model.bind(input_keys),
            Work::McRollouts(w) => w.explorer.bind(input_keys),
            Work::TestPlans(w) => w.model.bind(input_keys),
            Work::Eval(w) => w.agent.bind(input_keys),
            Work::Judge(w) => w.model.bind(input_keys),
            Work::AgentSft(w) => w.base.bind(input_keys),
            Work::PlannerTrain(w) => w.base.bind(input_keys),
            _ => {}
        }
    }
}

fn model<'a>(spec: &'a Spec, name: &str) -> Result<&'a ModelSpec> {
    spec.models.get(name).ok_or_else(|| anyhow::anyhow!("model `{name}` is not declared"))
}

fn draft(stage: &'static str, version: u32, label: String, config: serde_json::Value, inputs: Vec<usize>, work: Work) -> Draft {
    Draft { stage, version, label, config, inputs, work }
}

/// Builds one variant's drafts: each stage once, models resolved to the
/// stage that produced their weights.
struct Builder<'a> {
    spec: &'a Spec,
    /// Where a spec key's value came from (file, `--set`, default).
    source: &'a dyn Fn(&str) -> String,
    out: Vec<Draft>,
    experts: BTreeMap<String, usize>,
    seeds: Option<usize>,
    /// Model name → the node whose `model/` holds the weights it is used
    /// with (`init_model` or `agent_sft`).
    produced: BTreeMap<String, usize>,
    planner_env: Option<String>,
}

impl<'a> Builder<'a> {
    fn push(&mut self, d: Draft) -> usize {
        self.out.push(d);
        self.out.len() - 1
    }

    fn env(&self, name: &str) -> Result<&'a EnvSpec> {
        self.spec.envs.get(name).ok_or_else(|| anyhow::anyhow!("env `{name}` is not declared"))
    }

    fn expert(&mut self, env_name: &str) -> Result<usize> {
        if let Some(&i) = self.experts.get(env_name) {
            return Ok(i);
        }
        let env = self.env(env_name)?;
        if !matches!(env, EnvSpec::Builtin(_) | EnvSpec::Sciworld(_)) {
            bail!(
                "`envs.{env_name}.kind` = \"{}\" in {}: this env has no expert, and the spec needs its expert trajectories \
                 (seed plans from a teacher, an `init` model's tokenizer corpus, or agent SFT); envs with an expert: \
                 `kind = \"builtin\"`, `kind = \"sciworld\"`\nhint: give the planner a seed set (`planner.seed_set = \"seeds.jsonl\"`), \
                 or learn on a built-in or ScienceWorld env",
                env.kind(),
                (self.source)(&format!("envs.{env_name}.kind"))
            );
        }
        let i = self.push(expert::draft(env_name, env, self.spec)?);
        self.experts.insert(env_name.to_string(), i);
        Ok(i)
    }

    fn seeds(&mut self) -> Result<usize> {
        if let Some(i) = self.seeds {
            return Ok(i);
        }
        let planner = self.spec.planner.as_ref().ok_or_else(|| anyhow::anyhow!("seed plans need a `[planner]` table"))?;
        let env_name = self.planner_env.clone().unwrap_or_default();
        if let Some(path) = &planner.seed_set {
            let i = self.push(seed_plans::file_draft(&env_name, path));
            self.seeds = Some(i);
            return Ok(i);
        }
        let env = self.env(&env_name)?;
        if planner.teacher == "rule" && !matches!(env, EnvSpec::Builtin(_)) {
            let (allowed, or_teacher) = match env {
                EnvSpec::Sciworld(_) => (
                    "a teacher model declared in `[models]` (`planner.teacher = \"NAME\"`: the paper's App. E.1 prompt on the simulator's gold trajectories) or a seed set file (`planner.seed_set`)",
                    " or `planner.teacher` to a model name",
                ),
                _ => ("a seed set file (`planner.seed_set`): this env has no expert", ""),
            };
            bail!(
                "`planner.teacher` = \"rule\" in {}: the rule teacher summarises the built-in world's expert only, and the planner's env `{env_name}` is `kind = \"{}\"`; allowed: {allowed}\nhint: set `planner.seed_set = \"seeds.jsonl\"` (lines `{{\"task_id\", \"task\", \"plan\"}}`){or_teacher}",
                (self.source)("planner.teacher"),
                env.kind()
            );
        }
        let expert = self.expert(&env_name)?;
        let i = self.push(seed_plans::draft(&env_name, env, self.spec, planner, expert)?);
        self.seeds = Some(i);
        Ok(i)
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
                let mut inputs = vec![self.expert(&data_env)?];
                if self.spec.planner.is_some() {
                    inputs.push(self.seeds()?);
                }
                let family = crate::env::build(self.env(&data_env)?)?.family();
                let w = train_stages::InitWork {
                    model_name: name.to_string(),
                    settings: l.clone(),
                    seed: self.spec.experiment.seed,
                    prompts: self.spec.experiment.prompts.clone(),
                    family,
                };
                Some(self.push(draft(train_stages::INIT, train_stages::VERSION, format!("{}[{name}]", train_stages::INIT), w.config(), inputs, Work::Init(w))))
            }
            _ => None,
        };
        let trained = match &self.spec.agent_sft {
            Some(a) if a.models.iter().any(|m| m == name) => {
                let env_name = self.data_env()?;
                let env = self.env(&env_name)?.clone();
                let mut inputs = vec![self.expert(&env_name)?];
                let seed_input = if a.plan_share > 0.0 {
                    inputs.push(self.seeds()?);
                    Some(inputs.len() - 1)
                } else {
                    None
                };
                let base = match init {
                    Some(i) => {
                        inputs.push(i);
                        ModelRef::trained(name, spec, inputs.len() - 1)
                    }
                    None => ModelRef::declared(name, spec),
                };
                let w = train_stages::AgentSftWork {
                    base,
                    tasks: a.tasks.unwrap_or(usize::MAX).min(train_tasks(&env)),
                    env,
                    prompts: self.spec.experiment.prompts.clone(),
                    plan_share: a.plan_share,
                    insertion: self.spec.mpo.insertion,
                    train: self.spec.train.agent_sft.clone(),
                    seed: self.spec.experiment.seed,
                    thoughts: a.thoughts,
                    demonstrations: a.demonstrations.clone(),
                    single_turns: a.single_turns,
                    seed_input,
                };
                let label = format!("{}[{name}]", train_stages::AGENT_SFT);
                Some(self.push(draft(train_stages::AGENT_SFT, train_stages::VERSION, label, w.config(), inputs, Work::AgentSft(w))))
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
            Some(node) => {
                inputs.push(node);
                ModelRef::trained(name, spec, inputs.len() - 1)
            }
            None => ModelRef::declared(name, spec),
        })
    }

    /// A planner checkpoint (`sft`/`dpo`/`rft` node) as a consumer uses it.
    fn use_planner(&self, planner: &Planner, node: Option<usize>, inputs: &mut Vec<usize>) -> ModelRef {
        match node {
            Some(n) => {
                inputs.push(n);
                ModelRef::trained(&planner.name, &planner.spec, inputs.len() - 1)
            }
            None => ModelRef::declared(&planner.name, &planner.spec),
        }
    }
}

/// The planner of a spec and its trained versions.
struct Planner {
    name: String,
    /// Settings (for a `planner.checkpoint`: a local model at that path).
    spec: ModelSpec,
    /// `sft` node (none: the declared model is already the SFT planner).
    sft: Option<usize>,
    /// Whether `dpo`/`rft` can train it (a local model).
    trainable: bool,
    pairs: Option<usize>,
    dpo: Option<usize>,
    rft: Option<usize>,
}

/// The stage instances one variant needs, in topological order.
///
/// `source` says where a spec key's value came from, for errors.
pub fn drafts(spec: &Spec, source: &dyn Fn(&str) -> String) -> Result<Vec<Draft>> {
    let seed = spec.experiment.seed;
    let prompts = spec.experiment.prompts.clone();
    let mut b = Builder { spec, source, out: Vec::new(), experts: BTreeMap::new(), seeds: None, produced: BTreeMap::new(), planner_env: None };
    let mut planner_state: Option<Planner> = None;
    let wanted = |v: PlannerVariant| spec.eval.as_ref().is_some_and(|e| e.planners.contains(&v));

    if let Some(planner) = &spec.planner {
        let env_name = match &planner.env {
            Some(e) => e.clone(),
            None => spec.envs.keys().next().cloned().unwrap_or_default(),
        };
        let Some(env) = spec.envs.get(&env_name) else {
            bail!("`planner.env` names env `{env_name}`, which is not declared");
        };
        b.planner_env = Some(env_name.clone());
        let family = crate::env::build(env)?.family();

        // The SFT planner: trained here from a local base, given as a
        // checkpoint directory, or a served model used as it is.
        let mut state = match (&planner.model, &planner.checkpoint) {
            (m, Some(dir)) => {
                let base = match m {
                    Some(name) => match model(spec, name)? {
                        ModelSpec::Local(l) => l.clone(),
                        ModelSpec::Openai(_) => bail!("`planner.checkpoint` is set, so `planner.model` (`{name}`) must be a `kind = \"local\"` model (its sampling settings are used)"),
                    },
                    None => Default::default(),
                };
                let l = crate::model::local::LocalModelConfig { path: Some(dir.into()), init: None, ..base };
                Some(Planner { name: m.clone().unwrap_or_else(|| "planner".into()), spec: ModelSpec::Local(l), sft: None, trainable: true, pairs: None, dpo: None, rft: None })
            }
            (Some(name), None) => {
                let mspec = model(spec, name)?.clone();
                match &mspec {
                    ModelSpec::Local(_) => {
                        let mut inputs = vec![b.seeds()?];
                        let base = b.use_model(name, &mut inputs)?;
                        let w = train_stages::PlannerTrainWork { base, prompts: prompts.clone(), family, train: spec.train.sft.clone(), beta: spec.mpo.beta };
                        let cfg = w.config(train_stages::SFT);
                        let sft = b.push(draft(train_stages::SFT, train_stages::VERSION, format!("{}[{name}]", train_stages::SFT), cfg, inputs, Work::PlannerTrain(w)));
                        Some(Planner { name: name.clone(), spec: mspec, sft: Some(sft), trainable: true, pairs: None, dpo: None, rft: None })
                    }
                    ModelSpec::Openai(_) => Some(Planner { name: name.clone(), spec: mspec, sft: None, trainable: false, pairs: None, dpo: None, rft: None }),
                }
            }
            (None, None) => None,
        };
        if state.is_none() && planner.prompted.is_none() {
            // Nothing to train: the seed set itself (and its expert data).
            b.seeds()?;
        }

        if let Some(p) = state.as_mut() {
            let Some(explorer) = &spec.mpo.explorer else {
                bail!("`planner.model` is set, so Monte Carlo scoring needs an explorer agent: set `mpo.explorer` to a model name");
            };
            let mut inputs = Vec::new();
            let model_ref = b.use_planner(p, p.sft, &mut inputs);
            let w = sample_plans::SamplePlansWork {
                env_name: env_name.clone(),
                env: env.clone(),
                model: model_ref,
                prompts: prompts.clone(),
                tasks: planner.train_tasks.unwrap_or(usize::MAX).min(train_tasks(env)),
                m: spec.mpo.m,
                temperature: spec.mpo.sample_temperature,
                max_tokens: planner.max_tokens,
                seed,
            };
            let sp = b.push(draft(sample_plans::NAME, sample_plans::VERSION, format!("{}[{env_name}/{}]", sample_plans::NAME, p.name), w.config(), inputs, Work::SamplePlans(w)));
            let mut inputs = vec![sp];
            let explorer_ref = b.use_model(explorer, &mut inputs)?;
            let w = mc_rollouts::McRolloutsWork {
                env_name: env_name.clone(),
                env: env.clone(),
                explorer: explorer_ref,
                prompts: prompts.clone(),
                n: spec.mpo.n,
                temperature: spec.mpo.explorer_temperature,
                insertion: spec.mpo.insertion,
                seed,
                env_retries: spec.experiment.env_retries,
            };
            let mc = b.push(draft(mc_rollouts::NAME, mc_rollouts::VERSION, format!("{}[{env_name}/{explorer}]", mc_rollouts::NAME), w.config(), inputs, Work::McRollouts(w)));
            let w = pairs::PairsWork { env_name: env_name.clone(), prompts: prompts.clone(), family: family_name(env).into() };
            let config = serde_json::json!({ "prompts": prompts });
            let pairs_node = b.push(draft(pairs::NAME, pairs::VERSION, format!("{}[{env_name}]", pairs::NAME), config, vec![mc], Work::Pairs(w)));
            p.pairs = Some(pairs_node);
            if p.trainable {
                for (stage, variant, cfg) in [
                    (train_stages::DPO, PlannerVariant::Mpo, &spec.train.dpo),
                    (train_stages::RFT, PlannerVariant::Rft, &spec.train.rft),
                ] {
                    if !wanted(variant) && !(stage == train_stages::DPO && spec.eval.is_none()) {
                        continue;
                    }
                    let mut inputs = vec![pairs_node];
                    let base = b.use_planner(p, p.sft, &mut inputs);
                    let w = train_stages::PlannerTrainWork { base, prompts: prompts.clone(), family, train: cfg.clone(), beta: spec.mpo.beta };
                    let config = w.config(stage);
                    let node = b.push(draft(stage, train_stages::VERSION, format!("{stage}[{}]", p.name), config, inputs, Work::PlannerTrain(w)));
                    if stage == train_stages::DPO {
                        p.dpo = Some(node);
                    } else {
                        p.rft = Some(node);
                    }
                }
            }
        }
        planner_state = state;
    }

    let mut test_plan_nodes: BTreeMap<(String, String, PlannerVariant), usize> = BTreeMap::new();
    if let Some(ev) = &spec.eval {
        for env_name in &ev.envs {
            let env = spec.envs.get(env_name).ok_or_else(|| anyhow::anyhow!("env `{env_name}` is not declared"))?;
            for split in &ev.splits {
                if ev.random_baseline > 0 && matches!(env, EnvSpec::Builtin(_)) {
                    let w = baseline::BaselineWork {
                        env_name: env_name.clone(),
                        env: env.clone(),
                        split: split.clone(),
                        tasks: ev.tasks.or_else(|| env.task_count(split)),
                        episodes_per_task: ev.random_baseline,
                        seed,
                    };
                    let label = format!("{}[random/{env_name}/{split}]", baseline::NAME);
                    b.push(draft(baseline::NAME, baseline::VERSION, label, w.config(), vec![], Work::Baseline(w)));
                }
                for variant in &ev.planners {
                    let plans_node = match variant {
                        PlannerVariant::None => None,
                        v => {
                            let mut inputs = Vec::new();
                            let vname = test_plans::variant_name(*v);
                            let model_ref = match v {
                                PlannerVariant::Prompted => {
                                    let Some(name) = spec.planner.as_ref().and_then(|p| p.prompted.clone()) else {
                                        bail!("planner variant `prompted` in `eval.planners` needs `planner.prompted` (a model name)");
                                    };
                                    b.use_model(&name, &mut inputs)?
                                }
                                _ => {
                                    let Some(p) = planner_state.as_ref() else {
                                        bail!("planner variant `{vname}` in `eval.planners` needs `planner.model` (a model name) or `planner.checkpoint`");
                                    };
                                    let node = match v {
                                        PlannerVariant::Sft => p.sft,
                                        PlannerVariant::Mpo | PlannerVariant::Rft if !p.trainable => bail!(
                                            "planner variant `{vname}` needs a planner trained in-process (`dpo`/`rft` on a `kind = \"local\"` \
                                             model), but `planner.model` (`{}`) is a served model; evaluate `none`, `sft` or `prompted`, or train \
                                             elsewhere with the datasets the `pairs` stage exports",
                                            p.name
                                        ),
                                        PlannerVariant::Mpo => p.dpo,
                                        _ => p.rft,
                                    };
                                    b.use_planner(p, node, &mut inputs)
                                }
                            };
                            let w = test_plans::TestPlansWork {
                                variant: *variant,
                                env_name: env_name.clone(),
                                env: env.clone(),
                                split: split.clone(),
                                tasks: ev.tasks.or_else(|| env.task_count(split)),
                                model: model_ref,
                                prompts: prompts.clone(),
                                max_tokens: spec.planner.as_ref().map_or(512, |p| p.max_tokens),
                            };
                            let label = format!("{}[{vname}/{env_name}/{split}]", test_plans::NAME);
                            let node = b.push(draft(test_plans::NAME, test_plans::VERSION, label, w.config(), inputs, Work::TestPlans(w)));
                            test_plan_nodes.insert((env_name.clone(), split.clone(), *v), node);
                            Some(node)
                        }
                    };
                    if ev.follower && matches!(env, EnvSpec::Builtin(_)) {
                        let w = follower::FollowerWork {
                            env_name: env_name.clone(),
                            env: env.clone(),
                            split: split.clone(),
                            tasks: ev.tasks.or_else(|| env.task_count(split)),
                            planner: *variant,
                        };
                        let label = format!("{}[{}/{env_name}/{split}]", follower::NAME, test_plans::variant_name(*variant));
                        let inputs: Vec<usize> = plans_node.into_iter().collect();
                        b.push(draft(follower::NAME, follower::VERSION, label, w.config(), inputs, Work::Follower(w)));
                    }
                    let insertions: Vec<Insertion> =
                        if plans_node.is_none() { vec![Insertion::Instruction] } else { ev.insertion.clone() };
                    for insertion in insertions {
                        for agent in &ev.agents {
                            let mut inputs: Vec<usize> = plans_node.into_iter().collect();
                            let agent_ref = b.use_model(agent, &mut inputs)?;
                            let w = eval::EvalWork {
                                agent: agent_ref,
                                env_name: env_name.clone(),
                                env: env.clone(),
                                split: split.clone(),
                                tasks: ev.tasks.or_else(|| env.task_count(split)),
                                planner: *variant,
                                insertion,
                                prompts: prompts.clone(),
                                temperature: ev.temperature,
                                seed,
                                concurrency: ev.concurrency,
                                env_retries: spec.experiment.env_retries,
                                quirks: crate::agent::episode::Quirks { zero_reward_on_format_error: ev.zero_reward_on_format_error },
                            };
                            let pos = if plans_node.is_some() { format!("/{}", common::insertion_name(insertion)) } else { String::new() };
                            let label = format!("{}[{agent}/{env_name}/{split}/{}{pos}]", eval::NAME, test_plans::variant_name(*variant));
                            b.push(draft(eval::NAME, eval::VERSION, label, w.config(), inputs, Work::Eval(w)));
                        }
                    }
                }
            }
        }
    }

    if let (Some(j), Some(ev)) = (&spec.judge, &spec.eval) {
        for env_name in &ev.envs {
            let env = b.env(env_name)?.clone();
            for split in &ev.splits {
                let key = |v| (env_name.clone(), split.clone(), v);
                let (Some(&mpo), Some(&sft)) = (test_plan_nodes.get(&key(PlannerVariant::Mpo)), test_plan_nodes.get(&key(PlannerVariant::Sft))) else {
                    continue;
                };
                let mut inputs = vec![mpo, sft];
                let model_ref = b.use_model(&j.model, &mut inputs)?;
                let w = judge::stage::JudgeWork {
                    model: model_ref,
                    env_name: env_name.clone(),
                    tasks: j.tasks.or(ev.tasks).or_else(|| env.task_count(split)),
                    env: env.clone(),
                    split: split.clone(),
                    attempts: j.attempts,
                    seed,
                };
                let label = format!("{}[{env_name}/{split}]", judge::stage::NAME);
                b.push(draft(judge::stage::NAME, judge::stage::VERSION, label, w.config(), inputs, Work::Judge(w)));
            }
        }
    }

    if b.out.is_empty() {
        // Nothing else asked: the expert of each env that has one (useful
        // to inspect a world, or to make ScienceWorld's gold trajectories).
        for (name, env) in &spec.envs {
            if matches!(env, EnvSpec::Builtin(_) | EnvSpec::Sciworld(_)) {
                b.out.push(expert::draft(name, env, spec)?);
            }
        }
    }
    Ok(b.out)
}

fn family_name(env: &EnvSpec) -> &'static str {
    match env {
        EnvSpec::Builtin(_) => "alfworld",
        EnvSpec::Agentgym(a) => a.env.name(),
        EnvSpec::Sciworld(_) => "sciworld",
    }
}

/// Item keys of a node, for `--dry-run` counts; `None` while they depend on
/// inputs that do not exist yet (e.g. the plans a rollout stage scores).
pub fn item_keys(node: &Node, plan: &Plan, store: &Store) -> Result<Option<Vec<String>>> {
    let input_dir = |i: usize| {
        let n = &plan.nodes[node.inputs[i]];
        store.exists(n.stage, &n.key).then(|| store.artifact_dir(n.stage, &n.key))
    };
    Ok(match &node.work {
        Work::Expert(w) => Some(w.item_keys()?),
        Work::SeedPlans(w) => Some(w.item_keys()?),
        Work::SamplePlans(w) => Some(w.item_keys()?),
        Work::TestPlans(w) => Some(w.item_keys()?),
        Work::McRollouts(w) => match input_dir(0) {
            Some(dir) => Some(w.item_keys(&common::read_jsonl(&dir.join("plans.jsonl"))?)?),
            None => None,
        },
        Work::Pairs(_) | Work::Init(_) | Work::SeedFile(_) | Work::AgentSft(_) | Work::PlannerTrain(_) => Some(vec![]),
        Work::Judge(_) => None,
        Work::Baseline(_) | Work::Follower(_) => Some(vec![]),
        Work::Eval(w) => match w.planner {
            PlannerVariant::None => Some(w.item_keys(None)?),
            _ => match input_dir(0) {
                Some(dir) => Some(w.item_keys(Some(&test_plans::read_plans(&dir)?))?),
                None => None,
            },
        },
    })
}

/// For stages that are one job rather than memoised items, what `--dry-run`
/// says instead of item counts.
pub fn whole_stage(work: &Work) -> Option<&'static str> {
    match work {
        Work::Pairs(_) => Some("one job (reads its input)"),
        Work::Init(_) => Some("one job (tokenizer and weights from the seed)"),
        Work::AgentSft(_) | Work::PlannerTrain(_) => Some("one training (checkpointed with `save_every`)"),
        Work::SeedFile(_) => Some("one job (reads `planner.seed_set`)"),
        Work::Baseline(_) => Some("one job (random admissible actions)"),
        Work::Follower(_) => Some("one job (the scripted plan follower)"),
        _ => None,
    }
}

/// Runs one node, writing its files into `writer`.
pub async fn run(ctx: &NodeCtx, writer: &ArtifactWriter) -> Result<StageOutput> {
    match &ctx.node.work {
        Work::Expert(w) => expert::run(w, ctx, writer).await,
        Work::SeedPlans(w) => seed_plans::run(w, ctx, writer).await,
        Work::SamplePlans(w) => sample_plans::run(w, ctx, writer).await,
        Work::McRollouts(w) => mc_rollouts::run(w, ctx, writer).await,
        Work::Pairs(w) => pairs::run(w, ctx, writer).await,
        Work::TestPlans(w) => test_plans::run(w, ctx, writer).await,
        Work::Eval(w) => eval::run(w, ctx, writer).await,
        Work::Init(w) => train_stages::run_init(w, ctx, writer).await,
        Work::SeedFile(w) => seed_plans::run_file(w, writer).await,
        Work::Judge(w) => judge::stage::run(w, ctx, writer).await,
        Work::Baseline(w) => baseline::run(w, ctx, writer).await,
        Work::Follower(w) => follower::run(w, ctx, writer).await,
        Work::AgentSft(w) => train_stages::run_agent_sft(w, ctx, writer).await,
        Work::PlannerTrain(w) => match ctx.node.stage {
            train_stages::SFT => train_stages::run_sft(w, ctx, writer).await,
            train_stages::RFT => train_stages::run_rft(w, ctx, writer).await,
            _ => train_stages::run_dpo(w, ctx, writer).await,
        },
    }
}

/// How many train tasks of `env` the experiment uses.
pub(crate) fn train_tasks(env: &EnvSpec) -> usize {
    env.task_count("train").unwrap_or(0)
}
