//! The MPO pipeline as stages (DESIGN.md §1).
//!
//! [`drafts`] turns one variant's spec into the stage instances it needs, in
//! topological order; [`run`] executes one node. Each stage lives in its own
//! file whose top says its inputs, outputs and the config in its key.
//!
//! Stages available now: `expert` (built-in world) and `seed_plans` (rule
//! teacher). The remaining stages of DESIGN.md §1 (`agent_sft`, `sft`,
//! `sample_plans`, `mc_rollouts`, `pairs`, `dpo`, `rft`, `test_plans`, `eval`,
//! `judge`) plug in here the same way.

use anyhow::{bail, Result};

use crate::exec::{NodeCtx, StageOutput};
use crate::plan::{Draft, Node};
use crate::spec::{EnvSpec, Spec};
use crate::store::ArtifactWriter;

pub mod expert;
pub mod seed_plans;

/// The typed parameters of a node; what its `run` needs.
#[derive(Clone, Debug)]
pub enum Work {
    Expert(expert::ExpertWork),
    SeedPlans(seed_plans::SeedPlansWork),
}

/// The stage instances one variant needs, in topological order.
pub fn drafts(spec: &Spec) -> Result<Vec<Draft>> {
    let mut out: Vec<Draft> = Vec::new();
    let Some(planner) = &spec.planner else {
        if spec.eval.is_some() {
            bail!(
                "the `eval` stage is not available in this version of mpo-run; \
                 remove `[eval]` or use a version that has it"
            );
        }
        // Without a planner or an evaluation there is nothing to run but
        // the expert of each env (useful to inspect a world).
        for (name, env) in &spec.envs {
            out.push(expert::draft(name, env, spec));
        }
        return Ok(out);
    };
    let env_name = match &planner.env {
        Some(e) => e.clone(),
        None => spec.envs.keys().next().cloned().unwrap_or_default(),
    };
    let Some(env) = spec.envs.get(&env_name) else {
        bail!("`planner.env` names env `{env_name}`, which is not declared");
    };
    let expert = out.len();
    out.push(expert::draft(&env_name, env, spec));
    out.push(seed_plans::draft(&env_name, env, spec, planner, expert)?);
    if spec.eval.is_some() {
        bail!(
            "the `eval` stage is not available in this version of mpo-run; \
             remove `[eval]` or use a version that has it"
        );
    }
    Ok(out)
}

/// Item keys of a node (for `--dry-run` counts and for running).
pub fn item_keys(node: &Node) -> Result<Vec<String>> {
    match &node.work {
        Work::Expert(w) => Ok(w.item_keys()),
        Work::SeedPlans(w) => Ok(w.item_keys()),
    }
}

/// Runs one node, writing its files into `writer`.
pub async fn run(ctx: &NodeCtx, writer: &ArtifactWriter) -> Result<StageOutput> {
    match &ctx.node.work {
        Work::Expert(w) => expert::run(w, ctx, writer).await,
        Work::SeedPlans(w) => seed_plans::run(w, ctx, writer).await,
    }
}

/// How many train tasks of `env` the experiment uses.
pub(crate) fn train_tasks(env: &EnvSpec) -> usize {
    env.task_count("train").unwrap_or(0)
}
