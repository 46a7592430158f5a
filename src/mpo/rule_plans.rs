//! Stage `rule_plans`: the built-in world's prior-based plans for a test
//! split — `good` (the likeliest places of the task's object, the right
//! appliance) or `misleading` (places where the object never is, the wrong
//! appliance) — with no model involved. Evaluated like any planner's test
//! plans, they measure how much the agent's success depends on what a plan
//! says: the report's first premise check.
//!
//! - In: nothing (the plans are a function of the task).
//! - Out: `plans.jsonl` and `plans.parquet`, as `test_plans` writes them
//!   (planner = the variant).
//! - Key: variant, env identity, split, task count.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::test_plans::{variant_name, write_plans, TestPlan};
use crate::env::builtin::{plan_for, Game, PlanQuality};
use crate::spec::{EnvSpec, PlannerVariant};
use crate::stage::{Items, NodeCtx, Stage, StageOutput};
use crate::store::ArtifactWriter;

pub const NAME: &str = "rule_plans";
pub const VERSION: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RulePlansWork {
    pub variant: PlannerVariant,
    pub env_name: String,
    pub env: EnvSpec,
    pub split: String,
    pub tasks: Option<usize>,
}

/// The rule plan quality of a planner variant, if it is one.
pub fn quality(v: PlannerVariant) -> Option<PlanQuality> {
    match v {
        PlannerVariant::Good => Some(PlanQuality::Good),
        PlannerVariant::Misleading => Some(PlanQuality::Misleading),
        _ => None,
    }
}

async fn run(w: &RulePlansWork, writer: &ArtifactWriter) -> Result<StageOutput> {
    let Some(q) = quality(w.variant) else { bail!("rule_plans: `{}` is not a rule plan variant", variant_name(w.variant)) };
    if !matches!(w.env, EnvSpec::Builtin(_)) {
        bail!("rule plans (`{}`) need the built-in world", variant_name(w.variant));
    }
    let mut plans = Vec::new();
    for t in w.env.tasks(&w.split, w.tasks)? {
        let game = Game::from_task_id(&t.task_id).ok_or_else(|| anyhow!("unknown task `{}`", t.task_id))?;
        plans.push(TestPlan { task_id: t.task_id, plan: plan_for(&game, q) });
    }
    let n = write_plans(writer, NAME, &w.split, w.variant, &plans)?;
    Ok(StageOutput::new(0, plans.len()).table("plans", n).file("plans.jsonl", plans.len()))
}

#[async_trait]
impl Stage for RulePlansWork {
    fn name(&self) -> &'static str {
        NAME
    }
    fn version(&self) -> u32 {
        VERSION
    }
    fn config(&self) -> serde_json::Value {
        serde_json::json!({
            "variant": self.variant, "env": self.env.identity(), "env_name": self.env_name,
            "split": self.split, "tasks": self.tasks,
        })
    }
    fn items(&self, _inputs: &[Option<PathBuf>]) -> Result<Items> {
        Ok(Items::Whole("one job (rule plans from the world's priors)"))
    }
    async fn run(&self, _ctx: &NodeCtx, writer: &ArtifactWriter) -> Result<StageOutput> {
        run(self, writer).await
    }
}
