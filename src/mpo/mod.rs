//! The MPO pipeline as stages (DESIGN.md §1).
//!
//! [`drafts`] turns one variant's spec into the stage instances it needs, in
//! topological order; [`run`] executes one node. Each stage lives in its own
//! file whose top says its inputs, outputs and the config in its key.
//!
//! Wiring:
//! ```text
//! expert ─► seed_plans                         (needs [planner])
//! sample_plans ─► mc_rollouts ─► pairs         (needs planner.model, mpo.explorer)
//! test_plans(variant, env, split) ─► eval(agent, env, split, variant, insertion)
//! eval(agent, env, split, none)                (no plans)
//! ```
//! Not available yet (they need local models and trainers): `agent_sft`,
//! `sft`, `dpo`, `rft` and so the `mpo`/`rft` planner variants, and the
//! `judge` stage. A spec that needs them gets a clear error.

use anyhow::{bail, Result};

use crate::exec::{NodeCtx, StageOutput};
use crate::plan::{Draft, Node, Plan};
use crate::spec::{EnvSpec, Insertion, ModelSpec, PlannerVariant, Spec};
use crate::store::{ArtifactWriter, Store};

pub mod common;
pub mod eval;
pub mod expert;
pub mod judge;
pub mod mc_rollouts;
pub mod pairs;
pub mod sample_plans;
pub mod seed_plans;
pub mod test_plans;

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
}

fn model<'a>(spec: &'a Spec, name: &str) -> Result<&'a ModelSpec> {
    spec.models.get(name).ok_or_else(|| anyhow::anyhow!("model `{name}` is not declared"))
}

fn draft(stage: &'static str, version: u32, label: String, config: serde_json::Value, inputs: Vec<usize>, work: Work) -> Draft {
    Draft { stage, version, label, config, inputs, work }
}

/// The stage instances one variant needs, in topological order.
pub fn drafts(spec: &Spec) -> Result<Vec<Draft>> {
    let mut out: Vec<Draft> = Vec::new();
    let seed = spec.experiment.seed;
    let prompts = spec.experiment.prompts.clone();

    if let Some(planner) = &spec.planner {
        let env_name = match &planner.env {
            Some(e) => e.clone(),
            None => spec.envs.keys().next().cloned().unwrap_or_default(),
        };
        let Some(env) = spec.envs.get(&env_name) else {
            bail!("`planner.env` names env `{env_name}`, which is not declared");
        };
        // Seed plans feed the planner's SFT. Until the `sft` stage lands,
        // `planner.model` is an already fine-tuned planner (a local HF
        // directory or a served model), and a prompted planner needs none.
        let needs_seed = planner.model.is_none() && planner.prompted.is_none();
        if needs_seed {
            let expert = out.len();
            out.push(expert::draft(&env_name, env, spec)?);
            out.push(seed_plans::draft(&env_name, env, spec, planner, expert)?);
        }

        if let Some(pm) = &planner.model {
            let pspec = model(spec, pm)?;
            let Some(explorer) = &spec.mpo.explorer else {
                bail!("`planner.model` is set, so Monte Carlo scoring needs an explorer agent: set `mpo.explorer` to a model name");
            };
            let w = sample_plans::SamplePlansWork {
                env_name: env_name.clone(),
                env: env.clone(),
                model_name: pm.clone(),
                model: pspec.clone(),
                prompts: prompts.clone(),
                tasks: planner.train_tasks.unwrap_or(usize::MAX).min(train_tasks(env)),
                m: spec.mpo.m,
                temperature: spec.mpo.sample_temperature,
                max_tokens: planner.max_tokens,
                seed,
            };
            let sp = out.len();
            out.push(draft(sample_plans::NAME, sample_plans::VERSION, format!("{}[{env_name}/{pm}]", sample_plans::NAME), w.config(), vec![], Work::SamplePlans(w)));
            let w = mc_rollouts::McRolloutsWork {
                env_name: env_name.clone(),
                env: env.clone(),
                explorer_name: explorer.clone(),
                explorer: model(spec, explorer)?.clone(),
                prompts: prompts.clone(),
                n: spec.mpo.n,
                temperature: spec.mpo.explorer_temperature,
                insertion: spec.mpo.insertion,
                seed,
                env_retries: spec.experiment.env_retries,
            };
            let mc = out.len();
            out.push(draft(mc_rollouts::NAME, mc_rollouts::VERSION, format!("{}[{env_name}/{explorer}]", mc_rollouts::NAME), w.config(), vec![sp], Work::McRollouts(w)));
            let w = pairs::PairsWork { env_name: env_name.clone(), prompts: prompts.clone(), family: family_name(env).into() };
            let config = serde_json::json!({ "prompts": prompts });
            out.push(draft(pairs::NAME, pairs::VERSION, format!("{}[{env_name}]", pairs::NAME), config, vec![mc], Work::Pairs(w)));
        }
    }

    if let Some(ev) = &spec.eval {
        for env_name in &ev.envs {
            let env = spec.envs.get(env_name).ok_or_else(|| anyhow::anyhow!("env `{env_name}` is not declared"))?;
            for split in &ev.splits {
                for variant in &ev.planners {
                    let plans_node = match variant {
                        PlannerVariant::None => None,
                        PlannerVariant::Sft | PlannerVariant::Prompted => {
                            let planner = spec.planner.as_ref();
                            let name = match variant {
                                PlannerVariant::Sft => planner.and_then(|p| p.model.clone()),
                                _ => planner.and_then(|p| p.prompted.clone()),
                            };
                            let Some(name) = name else {
                                bail!(
                                    "planner variant `{}` in `eval.planners` needs `planner.{}` (a model name)",
                                    test_plans::variant_name(*variant),
                                    if *variant == PlannerVariant::Sft { "model" } else { "prompted" }
                                );
                            };
                            let w = test_plans::TestPlansWork {
                                variant: *variant,
                                env_name: env_name.clone(),
                                env: env.clone(),
                                split: split.clone(),
                                tasks: ev.tasks,
                                model_name: name.clone(),
                                model: model(spec, &name)?.clone(),
                                prompts: prompts.clone(),
                                max_tokens: planner.map_or(512, |p| p.max_tokens),
                            };
                            let label = format!("{}[{}/{env_name}/{split}]", test_plans::NAME, test_plans::variant_name(*variant));
                            out.push(draft(test_plans::NAME, test_plans::VERSION, label, w.config(), vec![], Work::TestPlans(w)));
                            Some(out.len() - 1)
                        }
                        PlannerVariant::Rft | PlannerVariant::Mpo => bail!(
                            "planner variant `{}` needs a planner trained in-process (the `sft`/`dpo`/`rft` stages on a \
                             `kind = \"local\"` model), which this version of mpo-run does not have yet; \
                             evaluate `none`, `sft` or `prompted`, or train with the exported datasets of the `pairs` stage",
                            test_plans::variant_name(*variant)
                        ),
                    };
                    let insertions: Vec<Insertion> =
                        if plans_node.is_none() { vec![Insertion::Instruction] } else { ev.insertion.clone() };
                    for insertion in insertions {
                        for agent in &ev.agents {
                            let w = eval::EvalWork {
                                agent_name: agent.clone(),
                                agent: model(spec, agent)?.clone(),
                                env_name: env_name.clone(),
                                env: env.clone(),
                                split: split.clone(),
                                tasks: ev.tasks,
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
                            out.push(draft(eval::NAME, eval::VERSION, label, w.config(), plans_node.into_iter().collect(), Work::Eval(w)));
                        }
                    }
                }
            }
        }
    }

    if out.is_empty() {
        // Nothing else asked: the expert of each env (useful to inspect a world).
        for (name, env) in &spec.envs {
            if matches!(env, EnvSpec::Builtin(_)) {
                out.push(expert::draft(name, env, spec)?);
            }
        }
    }
    Ok(out)
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
        Work::Expert(w) => Some(w.item_keys()),
        Work::SeedPlans(w) => Some(w.item_keys()),
        Work::SamplePlans(w) => Some(w.item_keys()?),
        Work::TestPlans(w) => Some(w.item_keys()?),
        Work::McRollouts(w) => match input_dir(0) {
            Some(dir) => Some(w.item_keys(&common::read_jsonl(&dir.join("plans.jsonl"))?)?),
            None => None,
        },
        Work::Pairs(_) => Some(vec![]),
        Work::Eval(w) => match w.planner {
            PlannerVariant::None => Some(w.item_keys(None)?),
            _ => match input_dir(0) {
                Some(dir) => Some(w.item_keys(Some(&test_plans::read_plans(&dir)?))?),
                None => None,
            },
        },
    })
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
    }
}

/// How many train tasks of `env` the experiment uses.
pub(crate) fn train_tasks(env: &EnvSpec) -> usize {
    env.task_count("train").unwrap_or(0)
}
