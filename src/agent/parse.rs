//! Reading an action out of a model's reply, by the released environments'
//! rules (the MPO release's loops, WeiminXiong/MPO @ 93bc9a5; see
//! `prompts/README.md` and `docs/ARCHITECTURE.md`).
//!
//! - ALFWorld: the reply is stripped, then `Action:\s?(.*)` with dot matching
//!   newlines, first match: everything after `Action:` and at most one
//!   whitespace character, to the end of the reply. `put X in Y` and
//!   `put X on Y` are rewritten to `put X in/on Y`.
//! - ScienceWorld, WebShop: `Action: (.*)`, same flags.
//!
//! A reply without a match is a format error, answered with the
//! environment's error observation; it costs a step.

use std::sync::LazyLock;

use regex::Regex;

pub use crate::env::ActionRule;

static ALFWORLD: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?s)Action:\s?(.*)").expect("valid regex"));
static STRICT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?s)Action: (.*)").expect("valid regex"));
static PUT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?s)^put (.*) (in|on) (.*)$").expect("valid regex"));

impl ActionRule {
    /// The observation text (without `Observation: `) answering a reply that
    /// has no action.
    pub fn format_error(self) -> &'static str {
        match self {
            ActionRule::Alfworld => "Error Input. Your input must contains 'Action: '",
            ActionRule::Sciworld | ActionRule::Webshop => "Invalid format. The input must contains 'Action: '",
        }
    }
}

/// The action in `reply`, or `None` when the reply has none.
pub fn parse_action(reply: &str, rule: ActionRule) -> Option<String> {
    match rule {
        ActionRule::Alfworld => {
            let reply = reply.trim();
            let action = ALFWORLD.captures(reply)?.get(1)?.as_str().to_string();
            Some(rewrite_put(&action))
        }
        ActionRule::Sciworld | ActionRule::Webshop => {
            Some(STRICT.captures(reply)?.get(1)?.as_str().to_string())
        }
    }
}

/// ALFWorld's `put X in Y` / `put X on Y` → `put X in/on Y`.
pub fn rewrite_put(action: &str) -> String {
    if !action.starts_with("put ") || action.contains(" in/on ") {
        return action.to_string();
    }
    PUT.replace(action, "put $1 in/on $3").into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ActionRule::*;

    #[test]
    fn thought_then_action() {
        let r = "Thought: I need a mug.\nAction: go to cabinet 1";
        assert_eq!(parse_action(r, Alfworld).as_deref(), Some("go to cabinet 1"));
        assert_eq!(parse_action(r, Sciworld).as_deref(), Some("go to cabinet 1"));
    }

    #[test]
    fn no_action_is_a_format_error() {
        assert_eq!(parse_action("Thought: hmm, let me think.", Alfworld), None);
        assert_eq!(parse_action("", Alfworld), None);
        assert_eq!(parse_action("   \n ", Sciworld), None);
    }

    #[test]
    fn two_actions_keep_everything_after_the_first() {
        // The release takes the first match with dot-matches-newline: the
        // second action stays in the string (and the env rejects it).
        let r = "Action: go to desk 1\nAction: take pen 1 from desk 1";
        assert_eq!(parse_action(r, Alfworld).as_deref(), Some("go to desk 1\nAction: take pen 1 from desk 1"));
    }

    #[test]
    fn trailing_text_is_kept_and_outer_whitespace_stripped() {
        assert_eq!(parse_action("Action: open fridge 1. Then I look.", Alfworld).as_deref(), Some("open fridge 1. Then I look."));
        assert_eq!(parse_action("  Action: look  \n", Alfworld).as_deref(), Some("look"));
        // ALFWorld's `\s?` allows no space; the strict rule does not.
        assert_eq!(parse_action("Action:look", Alfworld).as_deref(), Some("look"));
        assert_eq!(parse_action("Action:look", Sciworld), None);
    }

    #[test]
    fn put_in_and_on_are_rewritten() {
        assert_eq!(parse_action("Action: put mug 1 in cabinet 2", Alfworld).as_deref(), Some("put mug 1 in/on cabinet 2"));
        assert_eq!(parse_action("Action: put mug 1 on countertop 1", Alfworld).as_deref(), Some("put mug 1 in/on countertop 1"));
        assert_eq!(parse_action("Action: put mug 1 in/on countertop 1", Alfworld).as_deref(), Some("put mug 1 in/on countertop 1"));
        // Not rewritten for other environments.
        assert_eq!(parse_action("Action: put mug 1 in cabinet 2", Sciworld).as_deref(), Some("put mug 1 in cabinet 2"));
    }

    #[test]
    fn very_long_replies_do_not_break_the_parser() {
        let long = format!("Thought: {}\nAction: look", "blah ".repeat(100_000));
        assert_eq!(parse_action(&long, Alfworld).as_deref(), Some("look"));
    }
}
