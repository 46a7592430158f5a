//! The agent side: prompt sets, first-message assembly with meta-plan
//! insertion, and action parsing by the released rules. The ReAct episode
//! loop and the `eval` stage build on these (issue: agent loop and eval).

pub mod episode;
pub mod parse;
pub mod prompt;
