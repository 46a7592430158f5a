//! Prompt sets and the released assembly of an agent's first message.
//!
//! The "first" format (the release's `prompt_with_icl`, `icl_num = 1`): one
//! user message `{instruction}\n---\nHere is an example.\n\n{example}\n---\n\nNow,
//! it's your turn and here is the task.\n{task}`, where `{example}`
//! concatenates the 1-shot messages by position: the first followed by one
//! newline, then each later message at an even position (a user message:
//! an observation) followed by a blank line and each at an odd position (an
//! assistant turn) by one newline. ETO's multi-turn "conversation" format
//! ([`IclFormat::Conversation`], an option) sends the same pieces as turns.
//!
//! Meta-plan insertion (Table 4; the release's `main.py` and `envs/*_env.py`):
//! - `instruction`: `\n\n{phrase}\n{plan}` follows the task;
//! - `observation`: the same text follows every observation that answers a
//!   parsed action — `Nothing happens.` and ScienceWorld's unknown-action
//!   answers included — and never the format-error message;
//! - `thought`: every request of the episode ends with an assistant message
//!   `{thought_phrase}\n{plan}\nThought: ` that the model continues; only the
//!   continuation is kept in the history.
//!
//! An empty plan is no plan: the prompt is the no-plan prompt at every
//! position (the release tests `if not workflow`).
//!
//! The planner (the release's `scripts/template.py`, `gen_metaplan.py`,
//! `construct_metaplan_pairs.py`): `{task}` of the planner prompt is the task
//! text the environment prints — ALFWorld's room description and
//! `Your task is to: …`, ScienceWorld's task description — for every set but
//! `compact`, whose tiny planners get the goal alone ([`PlannerInput`]). A
//! set whose planner prompt asks for `<workflow>` (or `<meta_plan>`) tags has
//! its plans extracted from the first such pair and is trained on
//! `<tag>\n{plan}\n</tag>` ([`PromptSet::extract_plan`],
//! [`PromptSet::plan_target`]).
//!
//! Prompt sets ship embedded (`prompts/released`, the default, and
//! `prompts/paper`, the paper's wording); a spec may point at its own
//! directory with the same file names.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, Context, Result};

use crate::model::{Message, Role};
use super::Insertion;

pub use crate::env::Family;

/// Instruction, in-context examples and planner prompt of one environment.
#[derive(Clone, Debug, PartialEq)]
pub struct PromptSet {
    pub name: String,
    pub instruction: String,
    /// Task-type key → examples, each a list of messages.
    pub icl: BTreeMap<String, Vec<Vec<Message>>>,
    pub planner: String,
    /// The teacher prompt that turns an expert trajectory into a seed meta
    /// plan (`{task}`, `{conversation}`; paper App. E.1).
    pub seed: String,
    /// Sentence before a plan in the instruction or an observation.
    pub plan_phrase: String,
    /// Sentence before a plan in a thought prefill.
    pub thought_phrase: String,
    /// The user message answering an action: `{observation}`, and `{task}`
    /// (the task's sentence, e.g. `Your task is to: put a mug in shelf.`)
    /// for sets that restate the task after every observation (`compact`:
    /// tiny models attend reliably only a few dozen tokens back).
    pub observation: String,
    /// What the planner prompt's `{task}` is.
    pub planner_input: PlannerInput,
    /// The tag the planner prompt asks the plan to be written in
    /// (`workflow`, `meta_plan`), if any: plans are extracted from it and
    /// planners trained to write it.
    pub plan_tag: Option<String>,
    /// How the 1-shot example is laid out.
    pub icl_format: IclFormat,
}

/// What a planner is given as the task.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlannerInput {
    /// The task text the environment prints, as the agent sees it
    /// (ALFWorld: the room's receptacles and `Your task is to: …`), as
    /// released.
    #[default]
    TaskText,
    /// The goal alone (`Your task is to: …` → `…`): the `compact` set.
    Goal,
}

/// How the 1-shot example reaches the model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IclFormat {
    /// One user message with the example inlined (MPO's configs for
    /// ALFWorld and ScienceWorld).
    #[default]
    First,
    /// ETO's multi-turn format: the instruction, `OK`, the example's
    /// messages as turns, then the task.
    Conversation,
}

impl IclFormat {
    /// The suffix a prompt-set name carries for this format (the `first`
    /// format has none).
    pub fn suffix(self) -> &'static str {
        match self {
            IclFormat::First => "",
            IclFormat::Conversation => "#conversation",
        }
    }

    /// Splits `released#conversation` into the set's name and the format.
    pub fn split_name(name: &str) -> (&str, IclFormat) {
        match name.strip_suffix(IclFormat::Conversation.suffix()) {
            Some(base) => (base, IclFormat::Conversation),
            None => (name, IclFormat::First),
        }
    }
}

/// The plan tags a planner prompt may ask for, in order of preference.
pub const PLAN_TAGS: &[&str] = &["workflow", "meta_plan"];

/// The tag a planner prompt asks the plan to be written in: the first of
/// [`PLAN_TAGS`] whose opening and closing tags both appear in it.
pub fn plan_tag_of(planner: &str) -> Option<String> {
    PLAN_TAGS
        .iter()
        .find(|t| planner.contains(&format!("<{t}>")) && planner.contains(&format!("</{t}>")))
        .map(|t| t.to_string())
}

/// The text inside the first `<tag>…</tag>` of `reply`, stripped; the whole
/// reply, stripped, when there is no such pair (an unterminated `<tag>`
/// included) — the release's `re.findall(r'<workflow>(.*?)</workflow>',
/// re.DOTALL)[0].strip()`, else `text.strip()`.
pub fn extract_tagged(reply: &str, tag: &str) -> String {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    if let Some(start) = reply.find(&open) {
        let rest = &reply[start + open.len()..];
        if let Some(end) = rest.find(&close) {
            return py_strip(&rest[..end]).to_string();
        }
    }
    py_strip(reply).to_string()
}

/// Python's `str.strip()`: Unicode whitespace and the separators
/// `\x1c`–`\x1f`, which Rust's `trim` keeps.
fn py_strip(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || ('\x1c'..='\x1f').contains(&c))
}

/// The released observation message.
pub const PLAIN_OBSERVATION: &str = "Observation: {observation}";

/// The goal of a task text: its goal line without `Your task is to: `, else
/// the whole text, trimmed.
pub fn task_goal(task_text: &str) -> String {
    match task_text.rsplit_once("Your task is to: ") {
        Some((_, goal)) => goal.trim().to_string(),
        None => task_text.trim().to_string(),
    }
}

/// The line of a task text that states the task (`Your task is to: …`),
/// else its last line.
pub fn task_sentence(task_text: &str) -> &str {
    let lines = task_text.lines().map(str::trim).filter(|l| !l.is_empty());
    lines.clone().rev().find(|l| l.starts_with("Your task is to")).or_else(|| lines.last()).unwrap_or("")
}

const EMBEDDED: &[(&str, &str, &str, &str, &str, &str)] = &[
    // A short prompt without an in-context example, for the tiny models
    // the quickstart trains (built-in world only).
    (
        "compact",
        "alfworld",
        include_str!("../../prompts/compact/alfworld_instruction.txt"),
        include_str!("../../prompts/compact/alfworld_icl.json"),
        include_str!("../../prompts/compact/alfworld_planner.txt"),
        include_str!("../../prompts/compact/alfworld_seed.txt"),
    ),
    (
        "released",
        "webshop",
        include_str!("../../prompts/released/webshop_instruction.txt"),
        include_str!("../../prompts/released/webshop_icl.json"),
        include_str!("../../prompts/released/webshop_planner.txt"),
        include_str!("../../prompts/released/webshop_seed.txt"),
    ),
    (
        "paper",
        "webshop",
        include_str!("../../prompts/paper/webshop_instruction.txt"),
        include_str!("../../prompts/paper/webshop_icl.json"),
        include_str!("../../prompts/paper/webshop_planner.txt"),
        include_str!("../../prompts/paper/webshop_seed.txt"),
    ),
    (
        "released",
        "alfworld",
        include_str!("../../prompts/released/alfworld_instruction.txt"),
        include_str!("../../prompts/released/alfworld_icl.json"),
        include_str!("../../prompts/released/alfworld_planner.txt"),
        include_str!("../../prompts/released/alfworld_seed.txt"),
    ),
    (
        "released",
        "sciworld",
        include_str!("../../prompts/released/sciworld_instruction.txt"),
        include_str!("../../prompts/released/sciworld_icl.json"),
        include_str!("../../prompts/released/sciworld_planner.txt"),
        include_str!("../../prompts/released/sciworld_seed.txt"),
    ),
    (
        "paper",
        "alfworld",
        include_str!("../../prompts/paper/alfworld_instruction.txt"),
        include_str!("../../prompts/paper/alfworld_icl.json"),
        include_str!("../../prompts/paper/alfworld_planner.txt"),
        include_str!("../../prompts/paper/alfworld_seed.txt"),
    ),
    (
        "paper",
        "sciworld",
        include_str!("../../prompts/paper/sciworld_instruction.txt"),
        include_str!("../../prompts/paper/sciworld_icl.json"),
        include_str!("../../prompts/paper/sciworld_planner.txt"),
        include_str!("../../prompts/paper/sciworld_seed.txt"),
    ),
];

fn phrases(set: &str) -> (String, String) {
    let noun = if set == "paper" { "meta plan" } else { "workflow" };
    (
        format!("This {noun} maybe helpful for you to complete the task:"),
        format!("This {noun} maybe helpful to complete the task:"),
    )
}

fn parse_icl(text: &str, origin: &str) -> Result<BTreeMap<String, Vec<Vec<Message>>>> {
    let raw: serde_json::Value = serde_json::from_str(text).with_context(|| format!("`{origin}` is not JSON"))?;
    let to_examples = |v: &serde_json::Value| -> Result<Vec<Vec<Message>>> {
        // Either a list of examples (lists of messages) or one example.
        let arr = v.as_array().ok_or_else(|| anyhow!("`{origin}`: examples must be a list"))?;
        if arr.first().is_some_and(|x| x.is_object()) {
            Ok(vec![serde_json::from_value(v.clone())?])
        } else {
            Ok(serde_json::from_value(v.clone())?)
        }
    };
    let mut out = BTreeMap::new();
    match &raw {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                out.insert(k.clone(), to_examples(v)?);
            }
        }
        other => {
            out.insert("default".to_string(), to_examples(other)?);
        }
    }
    Ok(out)
}

impl PromptSet {
    /// An embedded set: `released` (default) or `paper`.
    pub fn embedded(set: &str, family: Family) -> Result<Self> {
        let (_, _, inst, icl, planner, seed) = EMBEDDED
            .iter()
            .find(|(s, f, ..)| *s == set && *f == family.name())
            .ok_or_else(|| anyhow!("unknown prompt set `{set}` for {}; embedded sets: `released`, `paper` (and `compact` for the built-in world)", family.name()))?;
        let (plan_phrase, thought_phrase) = phrases(set);
        let observation = match set {
            "compact" => include_str!("../../prompts/compact/alfworld_observation.txt"),
            _ => PLAIN_OBSERVATION,
        };
        Ok(Self {
            name: set.to_string(),
            instruction: inst.to_string(),
            icl: parse_icl(icl, &format!("prompts/{set}/{}_icl.json", family.name()))?,
            planner: planner.to_string(),
            seed: seed.to_string(),
            plan_phrase,
            thought_phrase,
            observation: observation.trim_end().to_string(),
            planner_input: if set == "compact" { PlannerInput::Goal } else { PlannerInput::TaskText },
            plan_tag: plan_tag_of(planner),
            icl_format: IclFormat::First,
        })
    }

    /// A set from a directory with the same file names as `prompts/released`.
    pub fn from_dir(dir: &Path, family: Family) -> Result<Self> {
        let read = |suffix: &str| {
            let p = dir.join(format!("{}_{suffix}", family.name()));
            std::fs::read_to_string(&p).with_context(|| format!("cannot read prompt file `{}`", p.display()))
        };
        let (plan_phrase, thought_phrase) = phrases("released");
        let planner = read("planner.txt")?;
        Ok(Self {
            name: dir.display().to_string(),
            instruction: read("instruction.txt")?,
            icl: parse_icl(&read("icl.json")?, &dir.display().to_string())?,
            plan_tag: plan_tag_of(&planner),
            planner,
            seed: read("seed.txt")?,
            plan_phrase,
            thought_phrase,
            // Optional: `{family}_observation.txt` (`{observation}`, `{task}`).
            observation: read("observation.txt").map(|t| t.trim_end().to_string()).unwrap_or_else(|_| PLAIN_OBSERVATION.to_string()),
            planner_input: PlannerInput::TaskText,
            icl_format: IclFormat::First,
        })
    }

    /// The 1-shot example for a task type (the first example of its key, or
    /// of the only key).
    pub fn example(&self, key: &str) -> Result<&[Message]> {
        if self.icl.values().all(Vec::is_empty) {
            // A set without in-context examples (`[]`).
            return Ok(&[]);
        }
        let examples = self
            .icl
            .get(key)
            .or_else(|| if self.icl.len() == 1 { self.icl.values().next() } else { None })
            .ok_or_else(|| anyhow!("prompt set `{}` has no in-context example for `{key}`", self.name))?;
        examples.first().map(Vec::as_slice).ok_or_else(|| anyhow!("empty example list for `{key}`"))
    }

    /// The teacher's prompt for a task and its expert trajectory.
    pub fn seed_prompt(&self, task: &str, conversation: &str) -> String {
        self.seed.replace("{task}", task).replace("{conversation}", conversation)
    }

    /// The planner's prompt for a task (`task` as [`PromptSet::planner_task`]
    /// makes it).
    pub fn planner_prompt(&self, task: &str) -> String {
        self.planner.replace("{task}", task)
    }

    /// What the planner is given for a task whose environment prints
    /// `task_text` (see [`PlannerInput`]).
    pub fn planner_task(&self, task_text: &str) -> String {
        match self.planner_input {
            PlannerInput::TaskText => task_text.to_string(),
            PlannerInput::Goal => task_goal(task_text),
        }
    }

    /// The plan in a planner's reply: inside the first `<tag>…</tag>` of the
    /// set's plan tag, stripped; otherwise (no tag pair, an unterminated
    /// tag, a set without a tag) the whole reply, stripped — the release's
    /// rule.
    pub fn extract_plan(&self, reply: &str) -> String {
        match &self.plan_tag {
            Some(tag) => extract_tagged(reply, tag),
            None => py_strip(reply).to_string(),
        }
    }

    /// The text a planner is trained to write for `plan`: `<tag>\n{plan}\n</tag>`
    /// for a set with a plan tag (the release's pairs and SFT data), the
    /// bare plan otherwise.
    pub fn plan_target(&self, plan: &str) -> String {
        match &self.plan_tag {
            Some(tag) => format!("<{tag}>\n{plan}\n</{tag}>"),
            None => plan.to_string(),
        }
    }
}

/// The released concatenation of a 1-shot example's messages (the
/// release's `prompt_with_icl` with one example): the first message
/// followed by one newline, then by position — even (user: observations)
/// followed by a blank line, odd (assistant) by one newline.
pub fn render_example(messages: &[Message]) -> String {
    let mut out = String::new();
    for (j, m) in messages.iter().enumerate() {
        out.push_str(&m.content);
        out.push_str(if j == 0 || j % 2 == 1 { "\n" } else { "\n\n" });
    }
    out
}

/// A transcript for the seed-plan teacher (paper App. E.1, which the
/// release has no code for): every user message followed by a blank line,
/// every assistant turn by one newline. Not the release's example join
/// ([`render_example`]): kept as it was so that teacher prompts, and the
/// seed plans cached under them, do not change.
pub fn render_transcript(messages: &[Message]) -> String {
    let mut out = String::new();
    for m in messages {
        out.push_str(&m.content);
        out.push_str(if m.role == Role::Assistant { "\n" } else { "\n\n" });
    }
    out
}

/// The opening of an episode: the messages and, for thought insertion, the
/// assistant text that ends every request of the episode (the model
/// continues it; only the continuation enters the history).
#[derive(Clone, Debug, PartialEq)]
pub struct Opening {
    pub messages: Vec<Message>,
    pub prefill: Option<String>,
}

/// The plan an episode inserts: none for an empty one (the release tests
/// `if not workflow`).
pub fn effective_plan(plan: Option<&str>) -> Option<&str> {
    plan.filter(|p| !p.is_empty())
}

/// The trailing assistant message of thought insertion, sent with every
/// request of the episode.
pub fn thought_prefill(set: &PromptSet, plan: &str) -> String {
    format!("{}\n{plan}\nThought: ", set.thought_phrase)
}

/// Assembles the opening of an episode: the first message (or, in the
/// conversation format, the first messages) and, for thought insertion,
/// the prefill every request ends with.
pub fn opening(set: &PromptSet, example_key: &str, task: &str, plan: Option<&str>, insertion: Insertion) -> Result<Opening> {
    let plan = effective_plan(plan);
    let example_messages = set.example(example_key)?;
    let mut task_text = task.to_string();
    let mut prefill = None;
    if let Some(plan) = plan {
        match insertion {
            Insertion::Instruction => {
                task_text.push_str(&format!("\n\n{}\n{plan}", set.plan_phrase));
            }
            Insertion::Thought => prefill = Some(thought_prefill(set, plan)),
            Insertion::Observation => {}
        }
    }
    let messages = if example_messages.is_empty() {
        vec![Message::user(format!("{}\n\n{task_text}", set.instruction))]
    } else if set.icl_format == IclFormat::Conversation {
        // The release's `messages`: instruction, `OK`, the example's
        // messages with roles by position, then the task.
        let mut m = vec![Message::user(set.instruction.clone()), Message::assistant("OK")];
        for (j, x) in example_messages.iter().enumerate() {
            m.push(if j % 2 == 0 { Message::user(x.content.clone()) } else { Message::assistant(x.content.clone()) });
        }
        m.push(Message::user(task_text));
        m
    } else {
        vec![Message::user(format!(
            "{}\n---\nHere is an example.\n\n{}\n---\n\nNow, it's your turn and here is the task.\n{task_text}",
            set.instruction,
            render_example(example_messages)
        ))]
    };
    Ok(Opening { messages, prefill })
}

/// The user message answering an action: `Observation: …`, with the plan
/// appended for observation insertion. `after_action`: the observation
/// answers a parsed action — every such observation gets the plan, whatever
/// it says (`Nothing happens.` included), as released; the caller passes
/// `false` for a message that answers no action.
pub fn observation_message(set: &PromptSet, observation: &str, task_text: &str, plan: Option<&str>, insertion: Insertion, after_action: bool) -> String {
    let mut text = set.observation.replace("{task}", task_sentence(task_text)).replace("{observation}", observation);
    if let (Some(plan), Insertion::Observation, true) = (effective_plan(plan), insertion, after_action) {
        text.push_str(&format!("\n\n{}\n{plan}", set.plan_phrase));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_sets_load() {
        for set in ["released", "paper"] {
            let a = PromptSet::embedded(set, Family::Alfworld).unwrap();
            assert_eq!(a.icl.len(), 6);
            assert!(a.example("look_at_obj").is_ok());
            let s = PromptSet::embedded(set, Family::Sciworld).unwrap();
            assert!(s.example("anything").is_ok(), "sciworld has one example for all tasks");
            let w = PromptSet::embedded(set, Family::Webshop).unwrap();
            assert!(w.example("anything").is_ok(), "webshop has one example for all tasks");
        }
        let p = PromptSet::embedded("paper", Family::Alfworld).unwrap();
        assert!(p.planner.contains("<meta_plan>") && !p.planner.contains("workflow"));
    }

    #[test]
    fn example_rendering_follows_the_release_rule() {
        let m = vec![Message::user("task"), Message::assistant("Action: look"), Message::user("Observation: ok")];
        // First message + `\n`, assistant + `\n`, later user + `\n\n`.
        assert_eq!(render_example(&m), "task\nAction: look\nObservation: ok\n\n");
        // The teacher's transcript keeps its own layout.
        assert_eq!(render_transcript(&m), "task\n\nAction: look\nObservation: ok\n\n");
    }

    #[test]
    fn plan_tags_come_from_the_planner_prompt() {
        assert_eq!(PromptSet::embedded("released", Family::Alfworld).unwrap().plan_tag.as_deref(), Some("workflow"));
        assert_eq!(PromptSet::embedded("released", Family::Sciworld).unwrap().plan_tag.as_deref(), Some("workflow"));
        assert_eq!(PromptSet::embedded("paper", Family::Alfworld).unwrap().plan_tag.as_deref(), Some("meta_plan"));
        assert_eq!(PromptSet::embedded("compact", Family::Alfworld).unwrap().plan_tag, None);
        assert_eq!(PromptSet::embedded("compact", Family::Alfworld).unwrap().planner_input, PlannerInput::Goal);
        assert_eq!(PromptSet::embedded("released", Family::Alfworld).unwrap().planner_input, PlannerInput::TaskText);
    }

    #[test]
    fn python_strip_also_strips_separators() {
        assert_eq!(extract_tagged("\x1c plan \x1f\n", "workflow"), "plan");
        assert_eq!(extract_tagged("<workflow>\u{3000}a\u{85}</workflow>", "workflow"), "a");
    }

    #[test]
    fn icl_format_names() {
        assert_eq!(IclFormat::split_name("released"), ("released", IclFormat::First));
        assert_eq!(IclFormat::split_name("released#conversation"), ("released", IclFormat::Conversation));
        assert_eq!(IclFormat::split_name("/my/dir#conversation"), ("/my/dir", IclFormat::Conversation));
    }
}
