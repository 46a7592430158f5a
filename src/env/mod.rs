//! Environments. Three kinds (DESIGN.md §2): the built-in household world
//! ([`builtin`], in-process, deterministic), ScienceWorld and AgentGym
//! servers (later). An environment identity — everything that changes what
//! an episode does — goes into cache keys; its name in the spec does not.

pub mod builtin;

/// The identity of the built-in world with its settings, for cache keys.
pub fn builtin_identity(max_steps: u32) -> serde_json::Value {
    serde_json::json!({
        "kind": "builtin",
        "generator_version": builtin::GENERATOR_VERSION,
        "max_steps": max_steps,
    })
}
