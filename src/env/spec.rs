//! `[envs.NAME]`: the environment kinds a spec can declare, with their
//! settings. An environment's identity (what goes into cache keys) and its
//! capabilities (has an expert, a rule teacher, a scripted follower; its
//! family and step limit) are pure functions of these settings: computing
//! them starts nothing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{agentgym, builtin, sciworld, ActionRule, Family};

/// `[envs.NAME]`: an environment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum EnvSpec {
    /// The built-in ALFWorld-style household world.
    Builtin(BuiltinEnvSpec),
    /// A server speaking the AgentGym HTTP protocol (ALFWorld, WebShop,
    /// SciWorld).
    Agentgym(agentgym::AgentgymEnvSpec),
    /// The real ScienceWorld simulator, through a pool of bridge workers.
    Sciworld(sciworld::SciworldEnvSpec),
}

impl EnvSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            EnvSpec::Builtin(_) => "builtin",
            EnvSpec::Agentgym(_) => "agentgym",
            EnvSpec::Sciworld(_) => "sciworld",
        }
    }
    /// How many tasks of `split` the experiment uses.
    pub fn task_count(&self, split: &str) -> Option<usize> {
        match self {
            EnvSpec::Builtin(b) => b.task_count(split),
            EnvSpec::Agentgym(a) => a.task_count(split),
            EnvSpec::Sciworld(s) => s.task_count(split),
        }
    }
    pub fn splits(&self) -> &'static [&'static str] {
        match self {
            EnvSpec::Builtin(_) => &["train", "seen", "unseen"],
            EnvSpec::Agentgym(a) => a.splits(),
            EnvSpec::Sciworld(_) => &sciworld::tasks::SPLITS,
        }
    }

    /// Everything that changes what an episode does, for cache keys: a pure
    /// function of the settings (no process, no network), so every machine
    /// computes the same keys whether or not it can run the environment.
    pub fn identity(&self) -> serde_json::Value {
        match self {
            EnvSpec::Builtin(b) => super::builtin_identity(b.max_steps),
            EnvSpec::Agentgym(a) => a.identity(),
            EnvSpec::Sciworld(s) => s.identity(),
        }
    }

    /// The first `limit` tasks of a split (all if `None`), known from the
    /// settings alone (no process, no network).
    pub fn tasks(&self, split: &str, limit: Option<usize>) -> Result<Vec<super::TaskInfo>, super::EnvError> {
        match self {
            EnvSpec::Builtin(b) => super::builtin_tasks(split, limit, b.max_steps),
            EnvSpec::Agentgym(a) => a.tasks(split, limit),
            EnvSpec::Sciworld(s) => s.tasks(split, limit),
        }
    }

    /// The prompt family of its episodes.
    pub fn family(&self) -> Family {
        match self {
            EnvSpec::Builtin(_) => Family::Alfworld,
            EnvSpec::Agentgym(a) => a.env.family(),
            EnvSpec::Sciworld(_) => Family::Sciworld,
        }
    }

    /// The released rule that parses its agents' actions.
    pub fn action_rule(&self) -> ActionRule {
        match self.family() {
            Family::Alfworld => ActionRule::Alfworld,
            Family::Sciworld => ActionRule::Sciworld,
            Family::Webshop => ActionRule::Webshop,
        }
    }

    /// Whether it has an expert that plays its train split (the built-in
    /// world's, or ScienceWorld's gold action sequences replayed).
    pub fn has_expert(&self) -> bool {
        match self {
            EnvSpec::Builtin(_) | EnvSpec::Sciworld(_) => true,
            EnvSpec::Agentgym(_) => false,
        }
    }

    /// Whether the rule teacher (a summariser of the expert's episodes)
    /// can write its seed plans.
    pub fn has_rule_teacher(&self) -> bool {
        match self {
            EnvSpec::Builtin(_) => true,
            EnvSpec::Agentgym(_) | EnvSpec::Sciworld(_) => false,
        }
    }

    /// Whether scripted players run in-process on it: the plan follower
    /// (`eval.follower`, `demonstrations = "follower"`), the random
    /// baseline and tracking thoughts.
    pub fn has_scripted_players(&self) -> bool {
        match self {
            EnvSpec::Builtin(_) => true,
            EnvSpec::Agentgym(_) | EnvSpec::Sciworld(_) => false,
        }
    }

    /// The step limit of every episode, or `None` where each task has its
    /// own (ScienceWorld without `max_steps`).
    pub fn max_steps(&self) -> Option<u32> {
        match self {
            EnvSpec::Builtin(b) => Some(b.max_steps),
            EnvSpec::Agentgym(a) => Some(a.max_steps()),
            EnvSpec::Sciworld(s) => s.max_steps,
        }
    }
}

/// `[envs.NAME] kind = "builtin"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuiltinEnvSpec {
    /// Step limit of an episode (the paper: 30).
    #[serde(default = "default_max_steps")]
    pub max_steps: u32,
    /// Use only the first K tasks of a split, e.g. `tasks = { train = 200 }`.
    #[serde(default)]
    pub tasks: BTreeMap<String, usize>,
}

fn default_max_steps() -> u32 {
    builtin::DEFAULT_MAX_STEPS
}

impl BuiltinEnvSpec {
    pub fn task_count(&self, split: &str) -> Option<usize> {
        let split = builtin::Split::parse(split)?;
        let all = split.size();
        Some(self.tasks.get(split.name()).map_or(all, |&k| k.min(all)))
    }
}

