//! The experiment spec: serde types, loading and validation.
//!
//! A spec is TOML. It is resolved in two steps (as ripgrep resolves flags):
//! [`load`] merges the layers and deserialises them into [`Spec`] with
//! `deny_unknown_fields` everywhere, then [`validate`] checks values and
//! cross-references without side effects. Only a valid spec is turned into a
//! plan.
//!
//! Layers, lowest first: built-in defaults (the `#[serde(default)]`s below) <
//! the file named by `extends` (recursively, relative to the file naming it) <
//! the spec file < `MPO_SECTION__KEY` environment variables < `--set
//! key.path=value` flags < the overrides of one sweep variant.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub mod limits;
pub mod load;
pub mod report;
pub mod sweep;
pub mod validate;

pub use load::{load, LoadOptions, LoadedSpec, SpecError};
pub use sweep::{expand, Variant};
pub use crate::agent::Insertion;
pub use crate::env::{BuiltinEnvSpec, EnvSpec};
pub use crate::model::ModelSpec;
pub use report::ReportSpec;

/// A whole experiment spec, as written by a user.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// A base spec this one extends, relative to this file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extends: Option<String>,
    pub experiment: ExperimentSpec,
    #[serde(default)]
    pub models: BTreeMap<String, ModelSpec>,
    #[serde(default)]
    pub envs: BTreeMap<String, EnvSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planner: Option<PlannerSpec>,
    #[serde(default)]
    pub mpo: MpoSpec,
    /// Agents fine-tuned on expert trajectories before they are used
    /// (stage `agent_sft`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_sft: Option<AgentSftSpec>,
    /// Hyper-parameters of the trainings (`[train.sft]`, `[train.dpo]`,
    /// `[train.rft]`, `[train.agent_sft]`).
    #[serde(default)]
    pub train: TrainSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval: Option<EvalSpec>,
    /// The judge of MPO vs SFT meta plans (App. E.3, Figure 6), for every
    /// evaluated env and split that has both planner variants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<JudgeSpec>,
    #[serde(default)]
    pub report: ReportSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep: Option<SweepSpec>,
}

/// `[experiment]`: names and places.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentSpec {
    /// Names the experiment in results and reports (`[A-Za-z0-9_.-]+`).
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Base seed of every sampled thing in the experiment.
    #[serde(default)]
    pub seed: u64,
    /// Where artifacts and Parquet results go (relative to the working dir).
    #[serde(default = "default_results_dir")]
    pub results_dir: String,
    /// Where tables and figures go.
    #[serde(default = "default_reports_dir")]
    pub reports_dir: String,
    /// Prompt set of agents and planners: `released` (the MPO release's
    /// prompts, default), `paper` (the paper's wording) or a directory with
    /// the same files.
    #[serde(default = "default_prompt_set")]
    pub prompts: String,
    /// How agents get the 1-shot example: `first` (one message, MPO's
    /// configs, default) or `conversation` (ETO's multi-turn format).
    #[serde(default, skip_serializing_if = "is_default_icl_format")]
    pub icl_format: crate::agent::prompt::IclFormat,
    /// Retries of an episode whose environment failed (a dead worker, a
    /// server gone), before it is recorded as an environment failure.
    #[serde(default = "default_env_retries")]
    pub env_retries: u32,
}

fn default_prompt_set() -> String {
    "released".into()
}
fn is_default_icl_format(f: &crate::agent::prompt::IclFormat) -> bool {
    *f == crate::agent::prompt::IclFormat::First
}

impl ExperimentSpec {
    /// The prompt set stages resolve (`prompts`, with `#conversation` for
    /// the conversation format; see `mpo::common::prompt_set`).
    pub fn prompt_set_name(&self) -> String {
        format!("{}{}", self.prompts, self.icl_format.suffix())
    }
}
fn default_env_retries() -> u32 {
    2
}

fn default_results_dir() -> String {
    "results".into()
}
fn default_reports_dir() -> String {
    "reports".into()
}

/// `[planner]`: the meta planner and its seed data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlannerSpec {
    /// The environment whose train split the planner learns from (default:
    /// the only env of the spec).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// Who writes seed plans: `rule` (the built-in world's summariser) or the
    /// name of a model in `[models]`.
    #[serde(default = "default_teacher")]
    pub teacher: String,
    /// Fraction of deliberately flawed seed plans (rule teacher only).
    #[serde(default = "default_flaw_rate")]
    pub flaw_rate: f64,
    /// A seed set made elsewhere (JSONL lines `{"task_id", "task", "plan"}`,
    /// `task` being the goal the planner is given, e.g. the MPO release's
    /// SFT data): replaces the `expert` and teacher stages, for
    /// environments without an expert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed_set: Option<String>,
    /// Seed plans for the first K train tasks only (default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed_tasks: Option<usize>,
    /// Attempts per task when an LLM teacher's reply cannot be parsed.
    #[serde(default = "default_teacher_attempts")]
    pub teacher_attempts: u32,
    /// The planner (a model name). A `kind = "local"` model is the base
    /// that the `sft` stage fine-tunes on the seed plans (then `dpo`/`rft`
    /// train from that); a served (`openai`) model is used as an already
    /// fine-tuned SFT planner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// A Hugging Face directory of an already fine-tuned SFT planner: it
    /// replaces the `sft` stage (`planner.model` then only gives sampling
    /// settings and must be `kind = "local"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
    /// A strong model prompted as planner (Table 3's "GPT" row, planner
    /// variant `prompted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompted: Option<String>,
    /// Train tasks used for plan sampling and Monte Carlo scoring (default:
    /// all of the env's train tasks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_tasks: Option<usize>,
    /// Max new tokens of a plan.
    #[serde(default = "default_plan_tokens")]
    pub max_tokens: u32,
}

fn default_plan_tokens() -> u32 {
    512
}

fn default_teacher() -> String {
    "rule".into()
}
fn default_flaw_rate() -> f64 {
    0.3
}
fn default_teacher_attempts() -> u32 {
    3
}

/// `[judge]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JudgeSpec {
    /// `model` (default): a judge model compares the plans (the paper's
    /// GPT-4o, App. E.3); `rule` (built-in world): each plan is checked
    /// against the world's ground truth — the task's object, target and
    /// appliance, where its object can be, the scripted follower's outcome,
    /// the plan's form — labelled as a rule judge.
    #[serde(default)]
    pub kind: JudgeKind,
    /// The judge model (a name in `[models]`); `kind = "model"` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Calls per task when a reply cannot be read.
    #[serde(default = "default_judge_attempts")]
    pub attempts: u32,
    /// Judge only the first K test tasks of each split (default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks: Option<usize>,
}

/// Who judges the plans (`[judge] kind`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JudgeKind {
    #[default]
    Model,
    Rule,
}

fn default_judge_attempts() -> u32 {
    3
}

/// `[agent_sft]`: agents trained on expert trajectories (AgentTuning-style
/// SFT, loss on the assistant turns) before every use.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSftSpec {
    /// Local models (names in `[models]`) that are fine-tuned.
    pub models: Vec<String>,
    /// The env whose expert trajectories are the data (default: the
    /// planner's env, else the only env).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// Train tasks used (default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks: Option<usize>,
    /// Share of trajectories shown with their task's seed plan inserted (at
    /// `mpo.insertion`), so that the agent learns to read plans; 0 = the
    /// paper's plain agent SFT.
    #[serde(default)]
    pub plan_share: f64,
    /// `true`: keep the expert's `Thought:` lines; `false`: the agent
    /// learns to answer `Action: …` only (shorter sequences); `"tracking"`
    /// (built-in world): a thought on every turn stating the agent's state
    /// (what it looks for and whether it is here, what it holds) — for tiny
    /// agents that cannot look far back in their context.
    #[serde(default)]
    pub thoughts: Thoughts,
    /// Whose episodes are the data: `expert` (the built-in world's expert,
    /// which ignores plans) or `follower` (the built-in scripted plan
    /// follower, run with the inserted seed plan or with none: an agent
    /// that learns to read plans). Successful episodes only.
    #[serde(default = "default_demonstrations")]
    pub demonstrations: String,
    /// Each turn also as a short example of its own (the observation it
    /// answers, then the reply), beside the whole episodes: the
    /// observation-to-verdict lookups are learned in short contexts, where
    /// a tiny model's attention finds them far sooner.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub single_turns: bool,
    /// `follower` demonstrations: also show the seed plans the teacher
    /// flawed (the follower follows them as written: a wrong appliance is
    /// tried first, a missing step is repaired afterwards), so that the
    /// agent learns to follow a plan whatever its quality.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub flawed_plans: bool,
    /// `follower` demonstrations: the share of the planned episodes shown
    /// with the world's misleading plan instead of the seed plan (places
    /// where the object never is, the wrong appliance); the follower pays
    /// for it in steps, and only its successful episodes are kept.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub misleading_share: f64,
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

fn default_demonstrations() -> String {
    "expert".into()
}

/// `[agent_sft] thoughts`: `true`, `false` or `"tracking"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Thoughts {
    /// Actions only.
    Off,
    /// The expert's own thoughts.
    #[default]
    Expert,
    /// A state-tracking thought on every turn (built-in world).
    Tracking,
}

impl Serialize for Thoughts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Thoughts::Off => s.serialize_bool(false),
            Thoughts::Expert => s.serialize_bool(true),
            Thoughts::Tracking => s.serialize_str("tracking"),
        }
    }
}

impl<'de> Deserialize<'de> for Thoughts {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            B(bool),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::B(false) => Ok(Thoughts::Off),
            Raw::B(true) => Ok(Thoughts::Expert),
            Raw::S(s) if s == "tracking" => Ok(Thoughts::Tracking),
            Raw::S(s) => Err(serde::de::Error::custom(format!("\"{s}\" is not allowed: true, false or \"tracking\""))),
        }
    }
}

/// `[train]`: one table per training stage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSpec {
    #[serde(default)]
    pub sft: crate::train::TrainConfig,
    #[serde(default = "crate::train::TrainConfig::dpo_default")]
    pub dpo: crate::train::TrainConfig,
    #[serde(default)]
    pub rft: crate::train::TrainConfig,
    #[serde(default)]
    pub agent_sft: crate::train::TrainConfig,
}

impl Default for TrainSpec {
    fn default() -> Self {
        Self {
            sft: Default::default(),
            dpo: crate::train::TrainConfig::dpo_default(),
            rft: Default::default(),
            agent_sft: Default::default(),
        }
    }
}

/// `[mpo]`: the method's hyper-parameters (paper §4: M = N = 5, β = 0.1,
/// sampling and exploration at temperature 0.7).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MpoSpec {
    /// Plans sampled per training task.
    #[serde(default = "default_five")]
    pub m: u32,
    /// Explorer episodes per plan.
    #[serde(default = "default_five")]
    pub n: u32,
    /// DPO's β.
    #[serde(default = "default_beta")]
    pub beta: f64,
    #[serde(default = "default_temperature")]
    pub sample_temperature: f64,
    #[serde(default = "default_temperature")]
    pub explorer_temperature: f64,
    /// The explorer agent (a model name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explorer: Option<String>,
    /// Where the explorer sees the plan.
    #[serde(default)]
    pub insertion: Insertion,
}

fn default_five() -> u32 {
    5
}
fn default_beta() -> f64 {
    0.1
}
fn default_temperature() -> f64 {
    0.7
}

impl Default for MpoSpec {
    fn default() -> Self {
        Self {
            m: 5,
            n: 5,
            beta: 0.1,
            sample_temperature: 0.7,
            explorer_temperature: 0.7,
            explorer: None,
            insertion: Insertion::Instruction,
        }
    }
}


/// A source of test-time plans (Table 3 rows).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlannerVariant {
    None,
    Sft,
    Rft,
    Mpo,
    Prompted,
    /// Built-in world: rule plans from the world's priors (the likeliest
    /// places, the right appliance) — the premise checks' good plans.
    Good,
    /// Built-in world: rule plans that mislead (places where the object
    /// never is, the wrong appliance) — the premise checks' flawed plans.
    Misleading,
}

/// `[eval]`: the cross product that gets evaluated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSpec {
    /// Agent models (names in `[models]`).
    pub agents: Vec<String>,
    /// Environments (names in `[envs]`).
    pub envs: Vec<String>,
    #[serde(default = "default_eval_splits")]
    pub splits: Vec<String>,
    /// Episodes per task of a random-admissible-action policy on each
    /// built-in env split (agent `random`, the floor a trained agent must
    /// clear); 0 = none.
    #[serde(default)]
    pub random_baseline: u32,
    /// Built-in world: the scripted plan follower also plays each split
    /// once with each evaluated planner's test plans and with none (agent
    /// `follower`, stage `follower`): the plans' quality apart from how
    /// well the trained agent reads them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub follower: bool,
    #[serde(default = "default_planners")]
    pub planners: Vec<PlannerVariant>,
    #[serde(default = "default_insertions")]
    pub insertion: Vec<Insertion>,
    /// Agent sampling temperature at test time (paper: 0).
    #[serde(default)]
    pub temperature: f64,
    /// Use only the first K tasks of each split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks: Option<usize>,
    /// Use only the first K tasks of each split in the ablation cells —
    /// the `rft` planner (Table 3's RFT row) and the `thought` and
    /// `observation` positions (Table 4) — so that the headline cells can
    /// rest on more tasks within one budget (default: as `tasks`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ablation_tasks: Option<usize>,
    /// Episodes in flight at once (bounded further by each model's own
    /// concurrency).
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// The released ScienceWorld loop's quirk: a reply without `Action:`
    /// zeroes the episode's reward. Off by default (it is not in the paper).
    #[serde(default)]
    pub zero_reward_on_format_error: bool,
}

fn default_concurrency() -> usize {
    64
}

fn default_eval_splits() -> Vec<String> {
    vec!["seen".into(), "unseen".into()]
}
fn default_planners() -> Vec<PlannerVariant> {
    vec![PlannerVariant::None]
}
fn default_insertions() -> Vec<Insertion> {
    vec![Insertion::Instruction]
}


/// `[sweep]`: one spec, many variants.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepSpec {
    #[serde(default)]
    pub mode: SweepMode,
    /// Key path → values, e.g. `"mpo.m" = [1, 2, 3, 4, 5]`.
    pub vary: BTreeMap<String, Vec<toml::Value>>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SweepMode {
    /// Every combination of the values.
    Grid,
    /// Vary one key at a time, the others at their base value (Figure 5).
    #[default]
    OneAtATime,
    /// The i-th value of every key together (all lists of one length): one
    /// variant per position, e.g. one planner per environment (Table 2).
    Zip,
}
