//! The agent side: prompt sets, first-message assembly with meta-plan
//! insertion, and action parsing by the released rules. The ReAct episode
//! loop and the `eval` stage build on these (issue: agent loop and eval).

pub mod episode;
pub mod parse;
pub mod prompt;

use serde::{Deserialize, Serialize};

/// Where a meta plan goes in the agent's prompt (Table 4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Insertion {
    #[default]
    Instruction,
    Thought,
    Observation,
}
