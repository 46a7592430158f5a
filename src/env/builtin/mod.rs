//! The built-in household world: an ALFWorld-style text environment in pure
//! Rust (std + serde only), deterministic and fast.
//!
//! * Tasks are the six ALFWorld types in ALFWorld's words, in kitchens,
//!   living rooms, bedrooms and bathrooms built from layout templates, with
//!   objects placed by per-object location priors ([`catalog`]).
//! * A task is a pure function of (split, index, [`GENERATOR_VERSION`]);
//!   the random generator is written out here ([`rng`]), not a crate.
//! * [`Game`] speaks ALFWorld's command grammar and observation texts (in
//!   the MPO release form, without "You arrive at loc N.").
//! * [`expert_trajectory`] is a prior-following expert that solves every
//!   task within 30 steps; [`teacher_plan`] turns its trajectory into an
//!   abstract meta plan (optionally flawed); [`follow_plan`] is a scripted
//!   plan follower used to measure how much a plan's quality matters, and
//!   [`informed_follower_trajectory`] its informed variant (the expert's
//!   search where the plan says nothing): demonstrations of an agent that
//!   does what its plan says. [`plan_for`] writes good or misleading plans
//!   from the world's priors; [`rules`] checks a plan against the task's
//!   ground truth (the rule judge).
//!
//! Splits: `train` 3321, `seen` 140 (same distribution as train), `unseen`
//! 134 (held-out layout templates only; about half its tasks use
//! (type, object, target) combinations that never occur in train/seen).

mod actions;
pub mod catalog;
mod expert;
mod follower;
mod game;
mod gen;
mod rng;
pub mod rules;
mod teacher;
mod tracking;

use serde::{Deserialize, Serialize};

pub use catalog::{ObjType, RecepType, RoomKind};
pub use expert::{expert_on, expert_trajectory, Trajectory, Turn};
pub use follower::{follow_plan, follow_plan_on, follower_trajectory, informed_follower_trajectory, parse_plan, EpisodeSummary, Place, PlanHints};
pub use game::{Action, Game, DEFAULT_MAX_STEPS, NOTHING_HAPPENS};
pub use teacher::{plan_for, teacher_plan, PlanFlaw, PlanQuality, TeacherPlan};
pub use tracking::tracking_thoughts;

/// Version of the task generator. Bump on any change to what a
/// (split, index) produces: it goes into cache keys.
pub const GENERATOR_VERSION: u32 = 1;

/// A task split, with the sizes of the MPO paper's ALFWorld splits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Seen,
    Unseen,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Train, Split::Seen, Split::Unseen];

    /// Number of tasks: 3321 / 140 / 134.
    pub fn size(self) -> usize {
        match self {
            Split::Train => 3321,
            Split::Seen => 140,
            Split::Unseen => 134,
        }
    }

    /// `"train"`, `"seen"` or `"unseen"`.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Seen => "seen",
            Split::Unseen => "unseen",
        }
    }

    /// Inverse of [`Split::name`] (case-insensitive, surrounding space ignored).
    pub fn parse(s: &str) -> Option<Split> {
        match s.trim().to_ascii_lowercase().as_str() {
            "train" => Some(Split::Train),
            "seen" => Some(Split::Seen),
            "unseen" => Some(Split::Unseen),
            _ => None,
        }
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The six ALFWorld task types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskType {
    PickAndPlace,
    PickCleanThenPlace,
    PickHeatThenPlace,
    PickCoolThenPlace,
    LookAtObjInLight,
    PickTwoObj,
}

impl TaskType {
    pub const ALL: &'static [TaskType] = &[
        TaskType::PickAndPlace,
        TaskType::PickCleanThenPlace,
        TaskType::PickHeatThenPlace,
        TaskType::PickCoolThenPlace,
        TaskType::LookAtObjInLight,
        TaskType::PickTwoObj,
    ];

    /// `"pick_and_place"`, …, `"look_at_obj_in_light"`, `"pick_two_obj"`.
    pub fn name(self) -> &'static str {
        match self {
            TaskType::PickAndPlace => "pick_and_place",
            TaskType::PickCleanThenPlace => "pick_clean_then_place",
            TaskType::PickHeatThenPlace => "pick_heat_then_place",
            TaskType::PickCoolThenPlace => "pick_cool_then_place",
            TaskType::LookAtObjInLight => "look_at_obj_in_light",
            TaskType::PickTwoObj => "pick_two_obj",
        }
    }

    /// The key of the released in-context examples (`"look_at_obj"` for
    /// look_at_obj_in_light; the others equal [`TaskType::name`]).
    pub fn icl_key(self) -> &'static str {
        match self {
            TaskType::LookAtObjInLight => "look_at_obj",
            t => t.name(),
        }
    }

    /// Inverse of [`TaskType::name`] (also accepts the ICL key).
    pub fn parse(s: &str) -> Option<TaskType> {
        TaskType::ALL
            .iter()
            .copied()
            .find(|t| t.name() == s || t.icl_key() == s)
    }
}

impl std::fmt::Display for TaskType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The result of one [`Game::step`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepOutcome {
    pub observation: String,
    /// 1.0 once the goal is reached, else 0.0.
    pub reward: f64,
    /// Goal reached or step limit hit.
    pub done: bool,
    pub won: bool,
}

/// A task index past the end of its split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskIndexError {
    pub split: Split,
    pub index: usize,
    pub size: usize,
}

impl std::fmt::Display for TaskIndexError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "task index {} out of range for split `{}` (size {})",
            self.index, self.split, self.size
        )
    }
}

impl std::error::Error for TaskIndexError {}
