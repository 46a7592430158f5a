//! The first message of an episode, at each insertion position, assembled
//! by the released rules (shared/reference/README.md).

use mpo_run::agent::prompt::{observation_message, opening, Family, PromptSet};
use mpo_run::model::Message;
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
    }
}

#[test]
fn byte_exact_first_message_by_the_release_rules() {
    // Written by hand from the rules, not by calling the code.
    let example = "Your task is to: look at cd under the desklamp.\n\n\
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
