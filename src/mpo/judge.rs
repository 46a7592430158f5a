//! The `judge` stage's logic (App. E.3, Fig. 6): a judge model compares the
//! MPO and the SFT meta plan of one test task on correctness,
//! followability, standardization and overall.
//!
//! Inputs: the task text, both plans, a judge model. Output: one
//! [`JudgeRow`] per dimension (`judge.parquet`, [`JUDGE`]).
//!
//! The prompt is the paper's Figure 13 (`prompts/judge.txt`) with one
//! change: the plans are shown as neutral "Plan A" / "Plan B" instead of
//! "DPO Plan" / "SFT Plan", and which one is A is a seeded coin flip per
//! task ([`mpo_first`]), recorded in every row, so neither the label nor the
//! position can favour MPO. The reply is parsed leniently ([`parse_reply`]:
//! code fences, prose around the object, trailing commas, single quotes,
//! `Plan A`, spaces in keys); a reply that still does not parse is sent
//! back with the parse error for another try, up to `attempts` calls. A
//! task that never parses yields rows with verdict `failed` and the error
//! as reason, so failures are counted rather than dropped.
//!
//! Everything but [`judge_task`] is pure.

use std::sync::Arc;

use serde_json::Value;

use crate::model::{ChatModel, ChatRequest, Message};
use crate::store::table::JudgeRow;

/// The judge prompt (Fig. 13, neutral plan names); `{task}`, `{plan_a}`,
/// `{plan_b}` are filled in.
pub const PROMPT: &str = include_str!("../../prompts/judge.txt");

/// Dimensions, in the paper's order.
pub const DIMENSIONS: [&str; 4] = ["correctness", "followability", "standardization", "overall"];

/// Which plan a dimension prefers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Mpo,
    Sft,
    Tie,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Mpo => "mpo",
            Verdict::Sft => "sft",
            Verdict::Tie => "tie",
        }
    }
}

/// One dimension's verdict and the judge's reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DimensionVerdict {
    pub dimension: String,
    pub verdict: Verdict,
    pub reason: String,
}

/// A test task to judge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JudgeTask {
    pub task_id: String,
    /// The task text shown to the planners.
    pub description: String,
}

/// What judging one task gave.
#[derive(Clone, Debug, PartialEq)]
pub struct JudgeOutcome {
    pub task_id: String,
    /// Whether the MPO plan was shown first (as Plan A).
    pub mpo_first: bool,
    /// One per [`DIMENSIONS`] entry; empty when every attempt failed.
    pub verdicts: Vec<DimensionVerdict>,
    /// Calls made (1 ..= attempts).
    pub attempts: u32,
    /// Why the last attempt failed, when no verdict was obtained.
    pub error: Option<String>,
    /// Every reply received, in order (for the artifact's log).
    pub replies: Vec<String>,
}

impl JudgeOutcome {
    /// The outcome's rows: one per dimension; `failed` rows when no reply
    /// parsed.
    pub fn rows(&self, judge: &str) -> Vec<JudgeRow> {
        let row = |dimension: &str, verdict: &str, reason: &str| JudgeRow {
            task_id: self.task_id.clone(),
            dimension: dimension.to_string(),
            verdict: verdict.to_string(),
            reason: reason.to_string(),
            mpo_first: self.mpo_first,
            judge: judge.to_string(),
            attempts: self.attempts as u64,
        };
        if self.verdicts.is_empty() {
            let e = self.error.as_deref().unwrap_or("no verdict");
            return DIMENSIONS.iter().map(|d| row(d, "failed", e)).collect();
        }
        self.verdicts.iter().map(|v| row(&v.dimension, v.verdict.as_str(), &v.reason)).collect()
    }
}

/// Whether the MPO plan is shown first for `task_id`: a fair coin from
/// `seed` and the task (SplitMix64 of both), stable across runs.
pub fn mpo_first(seed: u64, task_id: &str) -> bool {
    let h = blake3::hash(task_id.as_bytes());
    let mut z = seed ^ u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"));
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) & 1 == 1
}

/// The judge prompt for a task with plans in the given order.
pub fn build_prompt(template: &str, task: &str, plan_a: &str, plan_b: &str) -> String {
    // Fill `{task}` last so that braces inside plans are never re-expanded.
    template.replace("{plan_a}", plan_a.trim()).replace("{plan_b}", plan_b.trim()).replacen("{task}", task.trim(), 1)
}

/// Why a reply did not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("the reply has no JSON object")]
    NoObject,
    #[error("the reply's JSON object is malformed: {0}")]
    Malformed(String),
    #[error("the reply gives no verdict for `{0}`")]
    Missing(String),
    #[error("`{dimension}_better` is `{value}`; expected \"A\", \"B\" or \"tie\"")]
    BadVerdict { dimension: String, value: String },
}

/// Parses a judge reply into one verdict per dimension. `mpo_first` says
/// whether Plan A was the MPO plan (labels `dpo`/`mpo`/`sft` are also
/// understood, for replies to the paper's own prompt).
pub fn parse_reply(reply: &str, mpo_first: bool) -> Result<Vec<DimensionVerdict>, ParseError> {
    let obj = extract_object(reply)?;
    let map: std::collections::BTreeMap<String, String> = obj
        .iter()
        .map(|(k, v)| {
            let key = k.trim().to_lowercase().replace([' ', '-'], "_");
            let val = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (key, val)
        })
        .collect();
    DIMENSIONS
        .iter()
        .map(|d| {
            let raw = [format!("{d}_better"), format!("{d}_winner"), d.to_string()]
                .iter()
                .find_map(|k| map.get(k))
                .ok_or_else(|| ParseError::Missing(d.to_string()))?;
            let verdict = verdict_of(raw, mpo_first)
                .ok_or_else(|| ParseError::BadVerdict { dimension: d.to_string(), value: raw.clone() })?;
            let reason = map.get(&format!("{d}_reason")).or_else(|| map.get(&format!("{d}_reasoning"))).cloned().unwrap_or_default();
            Ok(DimensionVerdict { dimension: d.to_string(), verdict, reason })
        })
        .collect()
}

fn verdict_of(raw: &str, mpo_first: bool) -> Option<Verdict> {
    let v = raw.trim().trim_matches(|c: char| !c.is_alphanumeric()).to_lowercase();
    let v = v.strip_prefix("plan ").unwrap_or(&v).trim();
    let (first, second) = if mpo_first { (Verdict::Mpo, Verdict::Sft) } else { (Verdict::Sft, Verdict::Mpo) };
    match v {
        "a" | "1" | "first" => Some(first),
        "b" | "2" | "second" => Some(second),
        "tie" | "equal" | "both" | "same" | "draw" | "neither" => Some(Verdict::Tie),
        "dpo" | "mpo" => Some(Verdict::Mpo),
        "sft" => Some(Verdict::Sft),
        _ => None,
    }
}

/// The first balanced `{…}` of `text` as a JSON object, repairing the
/// usual slips (fences, trailing commas, single or curly quotes).
fn extract_object(text: &str) -> Result<serde_json::Map<String, Value>, ParseError> {
    let start = text.find('{').ok_or(ParseError::NoObject)?;
    let (mut depth, mut in_str, mut esc, mut end) = (0usize, None::<char>, false, None);
    for (i, c) in text[start..].char_indices() {
        match (in_str, c) {
            (Some(_), _) if esc => esc = false,
            (Some(_), '\\') => esc = true,
            (Some(q), c) if c == q => in_str = None,
            (Some(_), _) => {}
            (None, '"') => in_str = Some('"'),
            (None, '{') => depth += 1,
            (None, '}') => {
                depth -= 1;
                if depth == 0 {
                    end = Some(start + i + 1);
                    break;
                }
            }
            _ => {}
        }
    }
    // An unterminated object (a reply cut by max_tokens) is closed.
    let candidate = match end {
        Some(e) => text[start..e].to_string(),
        None => format!("{}\"}}", text[start..].trim_end().trim_end_matches('"')),
    };
    let attempts = [candidate.clone(), repair(&candidate)];
    let mut last = String::new();
    for c in &attempts {
        match serde_json::from_str::<Value>(c) {
            Ok(Value::Object(m)) => return Ok(m),
            Ok(_) => last = "not an object".into(),
            Err(e) => last = e.to_string(),
        }
    }
    Err(ParseError::Malformed(last))
}

fn repair(s: &str) -> String {
    let s = s.replace(['\u{201c}', '\u{201d}'], "\"").replace(['\u{2018}', '\u{2019}'], "'");
    // Single-quoted keys and values become double-quoted when the text has
    // no double quotes at all (a Python-dict-style reply).
    let s = if !s.contains('"') { s.replace('\'', "\"") } else { s };
    let re = regex::Regex::new(r",\s*([}\]])").expect("valid regex");
    re.replace_all(&s, "$1").into_owned()
}

/// Judges one task: asks `model` up to `attempts` times (at least once),
/// sending a malformed reply back with the parse error.
pub async fn judge_task(
    model: Arc<dyn ChatModel>,
    task: &JudgeTask,
    mpo_plan: &str,
    sft_plan: &str,
    seed: u64,
    attempts: u32,
) -> JudgeOutcome {
    let first = mpo_first(seed, &task.task_id);
    let (a, b) = if first { (mpo_plan, sft_plan) } else { (sft_plan, mpo_plan) };
    let mut messages = vec![Message::user(build_prompt(PROMPT, &task.description, a, b))];
    let mut out = JudgeOutcome {
        task_id: task.task_id.clone(),
        mpo_first: first,
        verdicts: vec![],
        attempts: 0,
        error: None,
        replies: vec![],
    };
    for attempt in 0..attempts.max(1) {
        out.attempts = attempt + 1;
        let mut req = ChatRequest::new(messages.clone());
        req.params.temperature = Some(0.0);
        req.params.seed = Some(seed.wrapping_add(attempt as u64));
        let reply = match model.chat(&req).await {
            Ok(c) => c.texts.into_iter().next().unwrap_or_default(),
            Err(e) => {
                out.error = Some(format!("model error: {e}"));
                continue;
            }
        };
        out.replies.push(reply.clone());
        match parse_reply(&reply, first) {
            Ok(v) => {
                out.verdicts = v;
                out.error = None;
                return out;
            }
            Err(e) => {
                out.error = Some(e.to_string());
                messages.push(Message::assistant(reply));
                messages.push(Message::user(format!(
                    "Your reply could not be read: {e}. Answer again with only the JSON object, with the fields \
                     listed above and \"A\", \"B\" or \"tie\" as each `_better` value."
                )));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLEAN: &str = r#"{"correctness_better": "A", "correctness_reason": "covers the goal",
        "followability_better": "B", "followability_reason": "shorter",
        "standardization_better": "tie", "standardization_reason": "both numbered",
        "overall_better": "A", "overall_reason": "more correct"}"#;

    fn verdicts(r: &[DimensionVerdict]) -> Vec<&'static str> {
        r.iter().map(|v| v.verdict.as_str()).collect()
    }

    #[test]
    fn a_clean_reply_maps_a_and_b_through_the_order() {
        assert_eq!(verdicts(&parse_reply(CLEAN, true).unwrap()), ["mpo", "sft", "tie", "mpo"]);
        assert_eq!(verdicts(&parse_reply(CLEAN, false).unwrap()), ["sft", "mpo", "tie", "sft"]);
        assert_eq!(parse_reply(CLEAN, true).unwrap()[0].reason, "covers the goal");
    }

    #[test]
    fn messy_replies_parse() {
        let fenced = format!("Sure! Here is my assessment:\n```json\n{CLEAN}\n```\nHope this helps.");
        assert_eq!(verdicts(&parse_reply(&fenced, true).unwrap()), ["mpo", "sft", "tie", "mpo"]);
        let trailing = "{\"correctness_better\": \"Plan A\", \"followability_better\": \"plan b\",\n \"standardization better\": \"Tie\", \"Overall_Better\": \"a\",}";
        assert_eq!(verdicts(&parse_reply(trailing, true).unwrap()), ["mpo", "sft", "tie", "mpo"]);
        let single = "{'correctness_better': 'B', 'followability_better': 'B', 'standardization_better': 'A', 'overall_better': 'B'}";
        assert_eq!(verdicts(&parse_reply(single, true).unwrap()), ["sft", "sft", "mpo", "sft"]);
        let curly = "{\u{201c}correctness_better\u{201d}: \u{201c}tie\u{201d}, \"followability_better\": \"tie\", \"standardization_better\": \"tie\", \"overall_better\": \"tie\"}";
        assert_eq!(verdicts(&parse_reply(curly, false).unwrap()), ["tie"; 4]);
        // The paper's own labels, whatever the order.
        let paper = r#"{"correctness_better": "dpo", "followability_better": "sft", "standardization_better": "dpo", "overall_better": "dpo", "note": {"x": "}"}}"#;
        assert_eq!(verdicts(&parse_reply(paper, false).unwrap()), ["mpo", "sft", "mpo", "mpo"]);
        // Cut off by max_tokens after the last verdict.
        let cut = r#"{"correctness_better": "A", "followability_better": "A", "standardization_better": "B", "overall_better": "A", "overall_reason": "A is mor"#;
        assert_eq!(verdicts(&parse_reply(cut, true).unwrap()), ["mpo", "mpo", "sft", "mpo"]);
    }

    #[test]
    fn bad_replies_say_why() {
        assert_eq!(parse_reply("I prefer plan A.", true), Err(ParseError::NoObject));
        assert_eq!(
            parse_reply(r#"{"correctness_better": "A"}"#, true),
            Err(ParseError::Missing("followability".into()))
        );
        let bad = r#"{"correctness_better": "C", "followability_better": "A", "standardization_better": "A", "overall_better": "A"}"#;
        assert!(matches!(parse_reply(bad, true), Err(ParseError::BadVerdict { .. })));
        assert!(matches!(parse_reply("{correctness: A B C", true), Err(ParseError::Malformed(_))));
    }

    #[test]
    fn the_order_is_seeded_and_balanced() {
        let firsts = (0..1000).filter(|i| mpo_first(7, &format!("task-{i}"))).count();
        assert!((420..580).contains(&firsts), "{firsts}");
        assert_eq!(mpo_first(7, "t1"), mpo_first(7, "t1"));
        assert!((0..64).any(|s| mpo_first(s, "t1") != mpo_first(0, "t1")));
    }

    #[test]
    fn the_prompt_shows_plans_in_order() {
        let p = build_prompt(PROMPT, "put a mug in the sink", "Step 1: {task}", "Step 1: b");
        assert!(p.contains("Task description: put a mug in the sink"));
        let (a, b) = (p.find("Plan A: Step 1: {task}").unwrap(), p.find("Plan B: Step 1: b").unwrap());
        assert!(a < b);
    }

    struct Scripted(std::sync::Mutex<Vec<String>>);

    #[async_trait::async_trait]
    impl ChatModel for Scripted {
        fn identity(&self) -> String {
            "scripted".into()
        }
        async fn chat(&self, _: &ChatRequest) -> Result<crate::model::Completion, crate::model::ModelError> {
            let text = self.0.lock().unwrap().remove(0);
            Ok(crate::model::Completion { texts: vec![text], finish_reasons: vec!["stop".into()], prompt_tokens: 0, completion_tokens: 0, wall_ms: 0 })
        }
    }

    #[tokio::test]
    async fn malformed_replies_are_retried_then_recorded() {
        let task = JudgeTask { task_id: "t1".into(), description: "put a mug in the sink".into() };
        let model = Arc::new(Scripted(std::sync::Mutex::new(vec!["no idea".into(), CLEAN.into()])));
        let out = judge_task(model, &task, "mpo plan", "sft plan", 3, 3).await;
        assert_eq!(out.attempts, 2);
        assert_eq!(out.verdicts.len(), 4);
        assert_eq!(out.rows("scripted")[0].verdict, if out.mpo_first { "mpo" } else { "sft" });

        let model = Arc::new(Scripted(std::sync::Mutex::new(vec!["no".into(), "still no".into()])));
        let out = judge_task(model, &task, "mpo plan", "sft plan", 3, 2).await;
        assert_eq!(out.attempts, 2);
        let rows = out.rows("scripted");
        assert_eq!(rows.len(), 4);
        assert!(rows.iter().all(|r| r.verdict == "failed" && r.reason.contains("no JSON object")));
    }
}

/// Stage `judge` (one per evaluated env and split): the judge model
/// compares the `mpo` and `sft` test plan of every task.
///
/// - In: `test_plans` of `mpo` (input 0) and of `sft` (input 1); the judge
///   model (`judge.model`).
/// - Out: `judge.parquet` ([`JUDGE`]: one row per task and dimension) and
///   `replies.jsonl` (every reply, for auditing).
/// - Items: one per task, keyed by the judge's identity, both plans, the
///   seed and `attempts`.
pub mod stage {
    use anyhow::Result;
    use serde::{Deserialize, Serialize};

    use super::{judge_task, JudgeTask};
    use std::path::PathBuf;

    use async_trait::async_trait;

    use crate::stage::{Items, NodeCtx, Slot, Stage, StageOutput};
    use crate::mpo::common::{planner_goal, write_jsonl};
    use crate::mpo::models::ModelRef;
    use crate::mpo::test_plans::read_plans;
    use crate::plan::short_hash;
    use crate::spec::EnvSpec;
    use crate::store::table::{self, JudgeRow, JUDGE};
    use crate::store::ArtifactWriter;

    pub const NAME: &str = "judge";
    pub const VERSION: u32 = 1;

    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub struct JudgeWork {
        pub model: ModelRef,
        pub env_name: String,
        pub env: EnvSpec,
        pub split: String,
        pub tasks: Option<usize>,
        pub attempts: u32,
        pub seed: u64,
        /// The `test_plans` artifacts of the MPO and the SFT planner.
        pub mpo: Slot,
        pub sft: Slot,
    }

    #[derive(Clone, Debug, Serialize, Deserialize)]
    struct Item {
        rows: Vec<JudgeRow>,
        replies: Vec<String>,
    }

    impl JudgeWork {
        pub fn config(&self) -> serde_json::Value {
            serde_json::json!({
                "model": self.model.config(),
                "env": self.env.identity(),
                "env_name": self.env_name, "split": self.split, "tasks": self.tasks,
                "attempts": self.attempts, "seed": self.seed,
            })
        }

        fn item_key(&self, task_id: &str, mpo: &str, sft: &str) -> String {
            short_hash(
                &serde_json::json!({
                    "stage": NAME, "version": VERSION, "judge": self.model.identity(), "task": task_id,
                    "mpo": mpo, "sft": sft, "seed": self.seed, "attempts": self.attempts,
                })
                .to_string(),
            )
        }
    }

    #[async_trait]
    impl Stage for JudgeWork {
        fn sharded(&self) -> bool {
            true
        }
        fn name(&self) -> &'static str {
            NAME
        }
        fn version(&self) -> u32 {
            VERSION
        }
        fn config(&self) -> serde_json::Value {
            self.config()
        }
        fn bind(&mut self, input_keys: &[String]) {
            self.model.bind(input_keys);
        }
        fn leases(&self) -> Vec<String> {
            self.model.lease().into_iter().collect()
        }
        fn items(&self, _inputs: &[Option<PathBuf>]) -> Result<Items> {
            Ok(Items::KnownLater)
        }
        async fn run(&self, ctx: &NodeCtx, writer: &ArtifactWriter) -> Result<StageOutput> {
            run(self, ctx, writer).await
        }
    }

    pub async fn run(w: &JudgeWork, ctx: &NodeCtx, writer: &ArtifactWriter) -> Result<StageOutput> {
        let mpo = read_plans(ctx.input(w.mpo)?)?;
        let sft = read_plans(ctx.input(w.sft)?)?;
        let env = ctx.envs.get(&w.env).await?;
        let model = w.model.resolve(ctx).await?;
        let judge_id = format!("{}", w.model.name);
        let mut items = Vec::new();
        for t in env.tasks(&w.split, w.tasks)? {
            let (Some(m), Some(s)) = (mpo.get(&t.task_id), sft.get(&t.task_id)) else {
                anyhow::bail!("task `{}` lacks an mpo or sft test plan", t.task_id);
            };
            let description = planner_goal(env.as_ref(), &t).await?;
            items.push((w.item_key(&t.task_id, m, s), (JudgeTask { task_id: t.task_id.clone(), description }, m.clone(), s.clone())));
        }
        let (seed, attempts) = (w.seed, w.attempts);
        let results = ctx
            .run_items(items, 64, move |(task, m, s): (JudgeTask, String, String)| {
                let (model, judge_id) = (model.clone(), judge_id.clone());
                async move {
                    let out = judge_task(model, &task, &m, &s, seed, attempts).await;
                    Ok(serde_json::to_value(Item { rows: out.rows(&judge_id), replies: out.replies })?)
                }
            })
            .await?;
        let mut rows = Vec::new();
        let mut replies = Vec::new();
        for v in &results.values {
            let item: Item = serde_json::from_value(v.clone())?;
            if let Some(r) = item.rows.first() {
                replies.push(serde_json::json!({ "task_id": r.task_id, "replies": item.replies }));
            }
            rows.extend(item.rows);
        }
        let failed = rows.iter().filter(|r| r.verdict == "failed").count() / super::DIMENSIONS.len();
        if failed > 0 {
            tracing::warn!("judge: no readable verdict for {failed} of {} tasks (rows with verdict `failed`)", results.values.len());
        }
        let n = table::write_rows(&writer.path("judge.parquet"), JUDGE, &rows)?;
        write_jsonl(&writer.path("replies.jsonl"), &replies)?;
        Ok(StageOutput::new(results.reused, results.computed).table("judge", n).file("replies.jsonl", replies.len()))
    }
}

/// The rule judge (`[judge] kind = "rule"`, built-in world): the paper's
/// four dimensions from the world's ground truth instead of a model —
/// *correctness* counts the checks of
/// [`crate::env::builtin::rules::correctness`] each plan passes,
/// *followability* is the scripted plan follower's outcome with it
/// (success, then fewer steps), *standardization* counts
/// [`crate::env::builtin::rules::standardization`]'s checks, and *overall*
/// is the plan that wins more of those three. Deterministic; no position
/// to randomise (`mpo_first` is false, `attempts` 0, `judge` = `rule`).
pub mod rule {
    use std::cmp::Ordering;
    use std::path::PathBuf;

    use anyhow::{anyhow, bail, Result};
    use async_trait::async_trait;
    use serde::{Deserialize, Serialize};

    use super::{Verdict, DIMENSIONS};
    use crate::env::builtin::{follow_plan_on, rules, Game};
    use crate::mpo::test_plans::read_plans;
    use crate::spec::EnvSpec;
    use crate::stage::{Items, NodeCtx, Slot, Stage, StageOutput};
    use crate::store::table::{self, JudgeRow, JUDGE};
    use crate::store::ArtifactWriter;

    pub const NAME: &str = "judge";
    pub const VERSION: u32 = 1;
    /// The `judge` column of its rows.
    pub const JUDGE_ID: &str = "rule";

    fn verdict(o: Ordering) -> Verdict {
        match o {
            Ordering::Greater => Verdict::Mpo,
            Ordering::Less => Verdict::Sft,
            Ordering::Equal => Verdict::Tie,
        }
    }

    fn failed(checks: &[rules::Check]) -> String {
        let f: Vec<&str> = checks.iter().filter(|c| !c.1).map(|c| c.0).collect();
        if f.is_empty() {
            "all passed".into()
        } else {
            format!("failed: {}", f.join(", "))
        }
    }

    /// The four verdicts (dimension, verdict, reason) of one task's MPO and
    /// SFT plans.
    pub fn verdicts(game: &Game, mpo: &str, sft: &str, max_steps: u32) -> Vec<(&'static str, Verdict, String)> {
        let passed = |c: &[rules::Check]| c.iter().filter(|x| x.1).count();
        let (cm, cs) = (rules::correctness(game, mpo), rules::correctness(game, sft));
        let (sm, ss) = (rules::standardization(mpo), rules::standardization(sft));
        let (fm, fs) = (follow_plan_on(game, Some(mpo), max_steps), follow_plan_on(game, Some(sft), max_steps));
        let follow_key = |r: &crate::env::builtin::EpisodeSummary| (r.reward > 0.0, std::cmp::Reverse(r.steps));
        let outcome = |r: &crate::env::builtin::EpisodeSummary| {
            if r.reward > 0.0 {
                format!("succeeds in {} steps", r.steps)
            } else {
                format!("fails after {} steps", r.steps)
            }
        };
        let c = verdict(passed(&cm).cmp(&passed(&cs)));
        let f = verdict(follow_key(&fm).cmp(&follow_key(&fs)));
        let s = verdict(passed(&sm).cmp(&passed(&ss)));
        let score = |v: Verdict| match v {
            Verdict::Mpo => 1i32,
            Verdict::Sft => -1,
            Verdict::Tie => 0,
        };
        let total = score(c) + score(f) + score(s);
        let dims = [
            (c, format!("MPO {}/{} ({}); SFT {}/{} ({})", passed(&cm), cm.len(), failed(&cm), passed(&cs), cs.len(), failed(&cs))),
            (f, format!("the follower with MPO's plan {}, with SFT's {}", outcome(&fm), outcome(&fs))),
            (s, format!("MPO {}/{} ({}); SFT {}/{} ({})", passed(&sm), sm.len(), failed(&sm), passed(&ss), ss.len(), failed(&ss))),
            (verdict(total.cmp(&0)), format!("MPO wins {} and SFT wins {} of the three dimensions", [c, f, s].iter().filter(|v| **v == Verdict::Mpo).count(), [c, f, s].iter().filter(|v| **v == Verdict::Sft).count())),
        ];
        DIMENSIONS.iter().zip(dims).map(|(d, (v, r))| (*d, v, r)).collect()
    }

    #[derive(Clone, Debug, Serialize, Deserialize)]
    pub struct RuleJudgeWork {
        pub env_name: String,
        pub env: EnvSpec,
        pub split: String,
        pub tasks: Option<usize>,
        /// The `test_plans` artifacts of the MPO and the SFT planner.
        pub mpo: Slot,
        pub sft: Slot,
    }

    async fn run(w: &RuleJudgeWork, ctx: &NodeCtx, writer: &ArtifactWriter) -> Result<StageOutput> {
        let EnvSpec::Builtin(b) = &w.env else { bail!("the rule judge needs the built-in world") };
        let mpo = read_plans(ctx.input(w.mpo)?)?;
        let sft = read_plans(ctx.input(w.sft)?)?;
        let mut rows = Vec::new();
        let tasks = w.env.tasks(&w.split, w.tasks)?;
        for t in &tasks {
            let (Some(m), Some(s)) = (mpo.get(&t.task_id), sft.get(&t.task_id)) else {
                bail!("task `{}` lacks an mpo or sft test plan", t.task_id);
            };
            let game = Game::from_task_id(&t.task_id).ok_or_else(|| anyhow!("unknown task `{}`", t.task_id))?;
            for (dimension, v, reason) in verdicts(&game, m, s, b.max_steps) {
                rows.push(JudgeRow {
                    task_id: t.task_id.clone(),
                    dimension: dimension.into(),
                    verdict: v.as_str().into(),
                    reason,
                    mpo_first: false,
                    judge: JUDGE_ID.into(),
                    attempts: 0,
                });
            }
        }
        let n = table::write_rows(&writer.path("judge.parquet"), JUDGE, &rows)?;
        Ok(StageOutput::new(0, tasks.len()).table("judge", n))
    }

    #[async_trait]
    impl Stage for RuleJudgeWork {
        fn name(&self) -> &'static str {
            NAME
        }
        fn version(&self) -> u32 {
            VERSION
        }
        fn config(&self) -> serde_json::Value {
            serde_json::json!({
                "judge": JUDGE_ID, "env": self.env.identity(), "env_name": self.env_name,
                "split": self.split, "tasks": self.tasks,
            })
        }
        fn items(&self, _inputs: &[Option<PathBuf>]) -> Result<Items> {
            Ok(Items::Whole("one job (the rule judge)"))
        }
        async fn run(&self, ctx: &NodeCtx, writer: &ArtifactWriter) -> Result<StageOutput> {
            run(self, ctx, writer).await
        }
    }
}
