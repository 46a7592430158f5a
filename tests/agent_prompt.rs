//! The first message of an episode, at each insertion position, assembled
//! by the released rules (`prompts/README.md`), and the rules of the
//! released loop, planner and training data pinned against the release's
//! own code: `tests/fixtures/release/` holds what the MPO release's
//! functions (WeiminXiong/MPO @ 93bc9a5, run unmodified by
//! `tests/fixtures/release/generate.py`) return on fixed inputs.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use mpo_run::agent::episode::{run_episode, EpisodeSpec, Quirks};
use mpo_run::agent::parse::ActionRule;
use mpo_run::agent::prompt::{observation_message, opening, Family, IclFormat, PlannerInput, PromptSet};
use mpo_run::env::{EnvError, Environment, Episode, StepOutcome, TaskInfo};
use mpo_run::model::{ChatModel, ChatRequest, Completion, Message, ModelError, Role};
use mpo_run::spec::Insertion;

const TASK: &str = "You are in the middle of a room. Looking quickly around you, you see a cabinet 2, a cabinet 1, a desk 1, and a desklamp 1.\nYour task is to: look at pen under the desklamp.";
const PLAN: &str = "Step 1: Go to where the pen may be placed.\nStep 2: Take the pen.\nStep 3: Go to the desklamp.\nStep 4: Use the desklamp to look at the pen.";

fn tiny_set() -> PromptSet {
    let mut icl = std::collections::BTreeMap::new();
    icl.insert(
        "look_at_obj".to_string(),
        vec![vec![
            Message::user("Your task is to: look at cd under the desklamp."),
            Message::assistant("Thought: find the cd.\nAction: go to desk 1"),
            Message::user("Observation: On the desk 1, you see a cd 1."),
            Message::assistant("Action: take cd 1 from desk 1"),
            Message::user("Observation: You pick up the cd 1 from the desk 1."),
        ]],
    );
    PromptSet {
        name: "tiny".into(),
        instruction: "Interact with a household.".into(),
        icl,
        planner: "Plan for {task}".into(),
        seed: "Summarise {conversation} for {task}".into(),
        plan_phrase: "This workflow maybe helpful for you to complete the task:".into(),
        thought_phrase: "This workflow maybe helpful to complete the task:".into(),
        observation: mpo_run::agent::prompt::PLAIN_OBSERVATION.into(),
        planner_input: PlannerInput::TaskText,
        plan_tag: Some("workflow".into()),
        icl_format: IclFormat::First,
    }
}

#[test]
fn byte_exact_first_message_by_the_release_rules() {
    // Written by hand from the rules, not by calling the code: the first
    // example message is followed by one newline, later observations by a
    // blank line, assistant turns by one newline.
    let example = "Your task is to: look at cd under the desklamp.\n\
Thought: find the cd.\nAction: go to desk 1\n\
Observation: On the desk 1, you see a cd 1.\n\n\
Action: take cd 1 from desk 1\n\
Observation: You pick up the cd 1 from the desk 1.\n\n";
    let head = format!("Interact with a household.\n---\nHere is an example.\n\n{example}\n---\n\nNow, it's your turn and here is the task.\n{TASK}");
    let set = tiny_set();

    let none = opening(&set, "look_at_obj", TASK, None, Insertion::Instruction).unwrap();
    assert_eq!(none.messages, vec![Message::user(head.clone())]);
    assert_eq!(none.prefill, None);

    let inst = opening(&set, "look_at_obj", TASK, Some(PLAN), Insertion::Instruction).unwrap();
    assert_eq!(inst.messages[0].content, format!("{head}\n\nThis workflow maybe helpful for you to complete the task:\n{PLAN}"));

    let thought = opening(&set, "look_at_obj", TASK, Some(PLAN), Insertion::Thought).unwrap();
    assert_eq!(thought.messages[0].content, head);
    assert_eq!(thought.prefill.as_deref(), Some(format!("This workflow maybe helpful to complete the task:\n{PLAN}\nThought: ").as_str()));

    let obs = opening(&set, "look_at_obj", TASK, Some(PLAN), Insertion::Observation).unwrap();
    assert_eq!(obs.messages[0].content, head);
    assert_eq!(
        observation_message(&set, "On the desk 1, you see a pen 1.", TASK, Some(PLAN), Insertion::Observation, true),
        format!("Observation: On the desk 1, you see a pen 1.\n\nThis workflow maybe helpful for you to complete the task:\n{PLAN}")
    );
    // Every observation answering an action gets the plan, `Nothing
    // happens.` included; a message answering no action does not.
    assert_eq!(
        observation_message(&set, "Nothing happens.", TASK, Some(PLAN), Insertion::Observation, true),
        format!("Observation: Nothing happens.\n\nThis workflow maybe helpful for you to complete the task:\n{PLAN}")
    );
    assert_eq!(
        observation_message(&set, "Nothing happens.", TASK, Some(PLAN), Insertion::Observation, false),
        "Observation: Nothing happens."
    );
}

/// The `compact` set (tiny models) restates the task's sentence after every
/// observation, before an inserted plan; the released sets do not.
#[test]
fn compact_observations_restate_the_task() {
    let compact = PromptSet::embedded("compact", Family::Alfworld).unwrap();
    assert_eq!(
        observation_message(&compact, "On the desk 1, you see a pen 1.", TASK, None, Insertion::Instruction, true),
        "Observation: On the desk 1, you see a pen 1.\nYour task is to: look at pen under the desklamp."
    );
    assert_eq!(
        observation_message(&compact, "Nothing happens.", TASK, Some(PLAN), Insertion::Observation, true),
        format!("Observation: Nothing happens.\nYour task is to: look at pen under the desklamp.\n\nThis workflow maybe helpful for you to complete the task:\n{PLAN}")
    );
    let released = PromptSet::embedded("released", Family::Alfworld).unwrap();
    assert_eq!(observation_message(&released, "Nothing happens.", TASK, None, Insertion::Instruction, true), "Observation: Nothing happens.");
    assert_eq!(mpo_run::agent::prompt::task_sentence("a room.\nYour task is to: x.\n"), "Your task is to: x.");
    assert_eq!(mpo_run::agent::prompt::task_sentence("only line"), "only line");
}

fn render(family: Family, key: &str, insertion: Insertion) -> String {
    let set = PromptSet::embedded("released", family).unwrap();
    let o = opening(&set, key, TASK, Some(PLAN), insertion).unwrap();
    format!(
        "{}\n===== prefill =====\n{}",
        o.messages[0].content,
        o.prefill.unwrap_or_else(|| "(none)".into())
    )
}

#[test]
fn released_alfworld_opening_instruction() {
    insta::assert_snapshot!(render(Family::Alfworld, "look_at_obj", Insertion::Instruction));
}

#[test]
fn released_alfworld_opening_thought() {
    insta::assert_snapshot!(render(Family::Alfworld, "look_at_obj", Insertion::Thought));
}

#[test]
fn released_alfworld_opening_observation() {
    insta::assert_snapshot!(render(Family::Alfworld, "look_at_obj", Insertion::Observation));
}

#[test]
fn released_sciworld_opening_instruction() {
    insta::assert_snapshot!(render(Family::Sciworld, "boil", Insertion::Instruction));
}

#[test]
fn released_webshop_opening_instruction() {
    insta::assert_snapshot!(render(Family::Webshop, "default", Insertion::Instruction));
}

#[test]
fn released_sciworld_opening_thought() {
    insta::assert_snapshot!(render(Family::Sciworld, "boil", Insertion::Thought));
}

#[test]
fn released_sciworld_opening_observation() {
    insta::assert_snapshot!(render(Family::Sciworld, "boil", Insertion::Observation));
}

#[test]
fn released_webshop_opening_thought() {
    insta::assert_snapshot!(render(Family::Webshop, "default", Insertion::Thought));
}

#[test]
fn released_webshop_opening_observation() {
    insta::assert_snapshot!(render(Family::Webshop, "default", Insertion::Observation));
}

#[test]
fn single_turn_examples_pair_each_reply_with_the_message_it_answers() {
    use mpo_run::env::builtin::{expert_trajectory, tracking_thoughts, Game, Split};
    use mpo_run::mpo::agent_sft::{agent_conversation, single_turns};
    let compact = PromptSet::embedded("compact", Family::Alfworld).unwrap();
    let mut traj = expert_trajectory(Split::Train, 3);
    let actions: Vec<String> = traj.turns.iter().map(|t| t.action.clone()).collect();
    for (turn, th) in traj.turns.iter_mut().zip(tracking_thoughts(&Game::new(Split::Train, 3), &actions)) {
        turn.thought = Some(th);
    }
    let messages = agent_conversation(&compact, "put", &traj.into(), None, Insertion::Instruction, true).unwrap();
    let turns = single_turns(&messages);
    assert_eq!(turns.len(), (messages.len() + 1) / 2, "one example per reply");
    for (k, t) in turns.iter().enumerate() {
        assert_eq!(t.as_slice(), &messages[2 * k..2 * k + 2], "reply {k} and the message before it");
    }
    let shown: Vec<String> = turns[1..3]
        .iter()
        .map(|t| t.iter().map(|m| format!("[{:?}] {}", m.role, m.content)).collect::<Vec<_>>().join("\n"))
        .collect();
    insta::assert_snapshot!(shown.join("\n-----\n"));
}

// ---- The release's own outputs ----------------------------------------------

fn fixture(name: &str) -> serde_json::Value {
    let path = format!("{}/tests/fixtures/release/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn family_of(name: &str) -> Family {
    match name {
        "alfworld" => Family::Alfworld,
        "sciworld" => Family::Sciworld,
        other => panic!("unknown family {other}"),
    }
}

fn str_of(v: &serde_json::Value) -> &str {
    v.as_str().unwrap()
}

/// The first message of every ALFWorld task type and of ScienceWorld, at
/// each insertion position, equals the release's `prompt_with_icl` byte for
/// byte (instruction insertion: with the workflow; observation and thought
/// insertion: without it, the plan coming later).
#[test]
fn first_messages_equal_the_release_at_every_position() {
    let f = fixture("first_messages.json");
    let plan = str_of(&f["plan"]);
    let mut seen = 0;
    for c in f["cases"].as_array().unwrap() {
        let set = PromptSet::embedded("released", family_of(str_of(&c["family"]))).unwrap();
        let (key, task) = (str_of(&c["key"]), str_of(&c["task"]));
        for insertion in [Insertion::Instruction, Insertion::Observation, Insertion::Thought] {
            let o = opening(&set, key, task, Some(plan), insertion).unwrap();
            let want = if insertion == Insertion::Instruction { &c["first_with_plan"] } else { &c["first"] };
            assert_eq!(o.messages, vec![Message::user(str_of(want))], "{key} at {insertion:?}");
            let prefill = (insertion == Insertion::Thought).then(|| format!("This workflow maybe helpful to complete the task:\n{plan}\nThought: "));
            assert_eq!(o.prefill, prefill, "{key} at {insertion:?}");
        }
        // No plan, and an empty plan, give the no-plan message everywhere.
        for insertion in [Insertion::Instruction, Insertion::Observation, Insertion::Thought] {
            for none in [None, Some("")] {
                let o = opening(&set, key, task, none, insertion).unwrap();
                assert_eq!(o.messages, vec![Message::user(str_of(&c["first"]))], "{key} at {insertion:?} with {none:?}");
                assert_eq!(o.prefill, None);
            }
        }
        seen += 1;
    }
    assert_eq!(seen, 7, "six ALFWorld task types and ScienceWorld");
}

/// ETO's multi-turn example format (`experiment.icl_format = "conversation"`)
/// gives the release's `messages`.
#[test]
fn conversation_format_equals_the_release_messages() {
    let f = fixture("first_messages.json");
    let plan = str_of(&f["plan"]);
    let mut seen = 0;
    for c in f["cases"].as_array().unwrap().iter().filter(|c| c.get("conversation").is_some()) {
        let mut set = PromptSet::embedded("released", family_of(str_of(&c["family"]))).unwrap();
        set.icl_format = IclFormat::Conversation;
        let want = |k: &str| -> Vec<Message> { serde_json::from_value(c[k].clone()).unwrap() };
        let (key, task) = (str_of(&c["key"]), str_of(&c["task"]));
        assert_eq!(opening(&set, key, task, Some(plan), Insertion::Instruction).unwrap().messages, want("conversation_with_plan"));
        assert_eq!(opening(&set, key, task, Some(plan), Insertion::Observation).unwrap().messages, want("conversation"));
        assert_eq!(opening(&set, key, task, None, Insertion::Instruction).unwrap().messages, want("conversation"));
        seen += 1;
    }
    assert_eq!(seen, 2);
}

/// The planner's prompt for an ALFWorld task (the room and the goal, as the
/// environment prints them) and a ScienceWorld task equals the release's
/// template; the built-in world's planner is given the same kind of text.
#[test]
fn planner_prompts_equal_the_release() {
    let f = fixture("planner_prompts.json");
    for family in ["alfworld", "sciworld"] {
        let set = PromptSet::embedded("released", family_of(family)).unwrap();
        let task = str_of(&f[family]["task"]);
        assert_eq!(set.planner_prompt(&set.planner_task(task)), str_of(&f[family]["prompt"]), "{family}");
    }
    // The built-in world: the planner sees the env's first text, receptacles
    // included (`compact` keeps the goal alone, for tiny planners).
    let game = mpo_run::env::builtin::Game::new(mpo_run::env::builtin::Split::Seen, 3);
    let text = game.initial_observation();
    let released = PromptSet::embedded("released", Family::Alfworld).unwrap();
    assert_eq!(released.planner_task(&text), text);
    assert!(released.planner_prompt(&released.planner_task(&text)).contains("Looking quickly around you, you see"));
    let compact = PromptSet::embedded("compact", Family::Alfworld).unwrap();
    assert_eq!(compact.planner_task(&text), text.rsplit_once("Your task is to: ").unwrap().1);
}

/// A plan is the text inside the first `<workflow>…</workflow>`, stripped,
/// else the whole reply, stripped (an unterminated tag included) — what the
/// release's `parse_workflow` then `extract_workflow` give.
#[test]
fn plan_extraction_equals_the_release() {
    let set = PromptSet::embedded("released", Family::Alfworld).unwrap();
    let cases = fixture("extraction.json");
    for c in cases.as_array().unwrap() {
        assert_eq!(set.extract_plan(str_of(&c["reply"])), str_of(&c["plan"]), "reply {:?}", c["reply"]);
    }
    // Tags present / missing / unterminated, by hand.
    assert_eq!(set.extract_plan("ok\n<workflow>\nStep 1: a\n</workflow>"), "Step 1: a");
    assert_eq!(set.extract_plan(" Step 1: a \n"), "Step 1: a");
    assert_eq!(set.extract_plan("<workflow>\nStep 1: a"), "<workflow>\nStep 1: a");
    // The `paper` set's planner asks for `<meta_plan>`: its plans come from
    // those tags by the same rule.
    let paper = PromptSet::embedded("paper", Family::Alfworld).unwrap();
    assert_eq!(paper.extract_plan("<meta_plan>\nStep 1: a\n</meta_plan>"), "Step 1: a");
    assert_eq!(paper.extract_plan("<workflow>Step 1: a</workflow>"), "<workflow>Step 1: a</workflow>");
}

/// The release's pairs (and SFT data) hold `<workflow>\n{plan}\n</workflow>`;
/// sets without a plan tag train on bare plans.
#[test]
fn training_targets_are_wrapped_as_released() {
    let f = fixture("targets.json");
    let set = PromptSet::embedded("released", Family::Sciworld).unwrap();
    assert_eq!(set.plan_target(str_of(&f["plan"])), str_of(&f["target"]));
    assert_eq!(set.extract_plan(&set.plan_target(str_of(&f["plan"]))), str_of(&f["plan"]));
    let paper = PromptSet::embedded("paper", Family::Alfworld).unwrap();
    assert_eq!(paper.plan_target("Step 1: a"), "<meta_plan>\nStep 1: a\n</meta_plan>");
    let compact = PromptSet::embedded("compact", Family::Alfworld).unwrap();
    assert_eq!(compact.plan_target("Step 1: a"), "Step 1: a");
}

// ---- The released loop ------------------------------------------------------

/// A model that answers from a list and records every request.
struct Recording {
    replies: Mutex<Vec<String>>,
    requests: Mutex<Vec<ChatRequest>>,
}

impl Recording {
    fn new(replies: &[&str]) -> Arc<Recording> {
        Arc::new(Recording {
            replies: Mutex::new(replies.iter().rev().map(|r| r.to_string()).collect()),
            requests: Mutex::new(vec![]),
        })
    }
    fn requests(&self) -> Vec<ChatRequest> {
        self.requests.lock().unwrap().clone()
    }
}

#[async_trait]
impl ChatModel for Recording {
    fn identity(&self) -> String {
        "recording".into()
    }
    async fn chat(&self, request: &ChatRequest) -> Result<Completion, ModelError> {
        self.requests.lock().unwrap().push(request.clone());
        let text = self.replies.lock().unwrap().pop().unwrap_or_else(|| "Action: look".into());
        Ok(Completion { texts: vec![text], finish_reasons: vec!["stop".into()], prompt_tokens: 0, completion_tokens: 0, wall_ms: 0 })
    }
}

/// A built-in train task of type `ty` that the expert solves in a few steps.
fn short_builtin_task(ty: &str) -> (TaskInfo, mpo_run::env::builtin::Trajectory) {
    use mpo_run::env::builtin::{expert_trajectory, Split};
    let env = mpo_run::env::BuiltinEnv { max_steps: 30 };
    let tasks = env.tasks("train", Some(400)).unwrap();
    tasks
        .into_iter()
        .enumerate()
        .map(|(i, t)| (t, expert_trajectory(Split::Train, i)))
        .find(|(t, traj)| t.task_type == ty && traj.reward == 1.0 && (2..=4).contains(&traj.turns.len()))
        .expect("a short expert episode")
}

fn run(model: &Recording, task: &TaskInfo, set: &PromptSet, plan: Option<&str>, insertion: Insertion, quirks: Quirks) -> mpo_run::agent::episode::EpisodeResult {
    let env = mpo_run::env::BuiltinEnv { max_steps: task.max_steps };
    let spec = EpisodeSpec { prompts: set, plan, insertion, temperature: 0.0, seed: None, quirks };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(run_episode(model, &env, task, &spec)).unwrap()
}

/// Thought insertion over four turns: every request ends with the plan's
/// assistant prefill, and the history holds only what the model wrote
/// after it (the release's `call_with_workflow` on `state.history`).
#[test]
fn thought_insertion_sends_the_prefill_with_every_request() {
    let set = PromptSet::embedded("released", Family::Alfworld).unwrap();
    let mut task = short_builtin_task("pick_and_place").0;
    task.max_steps = 4;
    let replies = ["I should look around.\nAction: look", "Nothing here.\nAction: inventory", "Hmm.", "Still nothing.\nAction: look"];
    let model = Recording::new(&replies);
    let r = run(&model, &task, &set, Some(PLAN), Insertion::Thought, Quirks::default());
    let reqs = model.requests();
    assert_eq!(reqs.len(), 4);
    let prefill = format!("This workflow maybe helpful to complete the task:\n{PLAN}\nThought: ");
    let text = mpo_run::env::builtin::Game::from_task_id(&task.task_id).unwrap().initial_observation();
    let first = opening(&set, &task.icl_key, &text, None, Insertion::Thought).unwrap().messages;
    assert_eq!(first, vec![r.messages[0].clone()], "the first message carries no plan");
    for (k, req) in reqs.iter().enumerate() {
        assert_eq!(req.prefill.as_deref(), Some(prefill.as_str()), "request {k}");
        // The history so far: the first message, then (continuation,
        // observation) per earlier turn.
        assert_eq!(req.messages, r.messages[..1 + 2 * k].to_vec(), "request {k}");
        for (j, m) in req.messages.iter().enumerate().skip(1) {
            match m.role {
                Role::Assistant => assert_eq!(m.content, replies[(j - 1) / 2], "only the continuation is kept"),
                _ => assert!(!m.content.contains("This workflow"), "no plan in observations"),
            }
        }
    }
    assert_eq!(r.messages[6].content, "Observation: Error Input. Your input must contains 'Action: '");
    // No plan, or an empty one: no prefill at all.
    for plan in [None, Some("")] {
        let model = Recording::new(&replies);
        run(&model, &task, &set, plan, Insertion::Thought, Quirks::default());
        assert!(model.requests().iter().all(|r| r.prefill.is_none()));
    }
}

/// Observation insertion: the plan follows every observation that answers a
/// parsed action — a valid one, `Nothing happens.`, the success — and not
/// the format-error message.
#[test]
fn observation_insertion_follows_every_answered_action() {
    let set = PromptSet::embedded("released", Family::Alfworld).unwrap();
    let (task, traj) = short_builtin_task("pick_and_place");
    let mut replies: Vec<String> = vec![traj.turns[0].assistant_text(), "Action: dance with the fridge".into(), "Thought: where was I?".into()];
    replies.extend(traj.turns[1..].iter().map(|t| t.assistant_text()));
    let replies: Vec<&str> = replies.iter().map(String::as_str).collect();
    let model = Recording::new(&replies);
    let r = run(&model, &task, &set, Some(PLAN), Insertion::Observation, Quirks::default());
    assert!(r.success);
    let with_plan = |o: &str| format!("Observation: {o}\n\nThis workflow maybe helpful for you to complete the task:\n{PLAN}");
    let observations: Vec<&str> = r.messages.iter().skip(1).filter(|m| m.role == Role::User).map(|m| m.content.as_str()).collect();
    let mut want = vec![
        with_plan(&traj.turns[0].observation),
        with_plan("Nothing happens."),
        "Observation: Error Input. Your input must contains 'Action: '".to_string(),
    ];
    want.extend(traj.turns[1..].iter().map(|t| with_plan(&t.observation)));
    assert_eq!(observations, want);
    // The first message carries no plan; an empty plan inserts nothing.
    assert!(!r.messages[0].content.contains("This workflow"));
    let model = Recording::new(&replies);
    let r = run(&model, &task, &set, Some(""), Insertion::Observation, Quirks::default());
    assert!(r.messages.iter().all(|m| !m.content.contains("This workflow")));
}

/// An environment whose reward is the best step score (ScienceWorld's
/// rule), with scripted scores per action `score X`.
struct BestOf;

struct BestOfEpisode {
    best: f64,
    last: Option<f64>,
}

#[async_trait]
impl Episode for BestOfEpisode {
    fn task_text(&self) -> String {
        "Your task is to boil water.".into()
    }
    fn last_score(&self) -> Option<f64> {
        self.last
    }
    async fn step(&mut self, action: &str) -> Result<StepOutcome, EnvError> {
        let score: f64 = action.strip_prefix("score ").and_then(|s| s.parse().ok()).unwrap_or(0.0);
        self.last = Some(score);
        self.best = self.best.max(score);
        Ok(StepOutcome { observation: format!("score is {score}"), reward: self.best, done: false, success: false, invalid: false })
    }
    async fn close(self: Box<Self>) {}
}

#[async_trait]
impl Environment for BestOf {
    fn identity(&self) -> serde_json::Value {
        serde_json::json!("best-of")
    }
    fn family(&self) -> Family {
        Family::Sciworld
    }
    fn action_rule(&self) -> ActionRule {
        ActionRule::Sciworld
    }
    fn splits(&self) -> Vec<String> {
        vec!["test".into()]
    }
    fn tasks(&self, _: &str, _: Option<usize>) -> Result<Vec<TaskInfo>, EnvError> {
        Ok(vec![])
    }
    async fn start(&self, _: &TaskInfo) -> Result<Box<dyn Episode>, EnvError> {
        Ok(Box::new(BestOfEpisode { best: 0.0, last: None }))
    }
}

fn best_of_reward(replies: &[&str], quirk: bool) -> f64 {
    let set = PromptSet::embedded("released", Family::Sciworld).unwrap();
    let task = TaskInfo { task_id: "boil/0".into(), split: "test".into(), task_type: "boil".into(), icl_key: "default".into(), max_steps: replies.len() as u32 };
    let model = Recording::new(replies);
    let spec = EpisodeSpec { prompts: &set, plan: None, insertion: Insertion::Instruction, temperature: 0.0, seed: None, quirks: Quirks { zero_reward_on_format_error: quirk } };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(run_episode(model.as_ref(), &BestOf, &task, &spec)).unwrap().reward
}

/// `zero_reward_on_format_error`: as the release's ScienceWorld loop, a
/// format error resets the running best to 0 and later steps raise it again
/// when they score above it; off, the reward is the best score seen.
#[test]
fn the_format_error_quirk_resets_the_running_best() {
    // Format error, then recovery to the same score.
    let r = ["Action: score 0.25", "no action here", "Action: score 0.25"];
    assert_eq!(best_of_reward(&r, true), 0.25);
    assert_eq!(best_of_reward(&r, false), 0.25);
    // Recovery below the earlier best: the release keeps the later value.
    let r = ["Action: score 0.5", "no action here", "Action: score 0.25", "Action: score 0.1"];
    assert_eq!(best_of_reward(&r, true), 0.25);
    assert_eq!(best_of_reward(&r, false), 0.5);
    // A format error at the end: 0.
    let r = ["Action: score 0.5", "no action here"];
    assert_eq!(best_of_reward(&r, true), 0.0);
    assert_eq!(best_of_reward(&r, false), 0.5);
    // No format error: the best score, quirk or not.
    let r = ["Action: score 0.5", "Action: score 0.25"];
    assert_eq!(best_of_reward(&r, true), 0.5);
}
