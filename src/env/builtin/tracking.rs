//! "Tracking" thoughts: a thought on every turn of a demonstration that
//! restates what the agent is doing, so that what each decision needs sits
//! a few tokens before it. For agents too small to look far back in their
//! context (the quickstart's 2-layer models): the expert's own thoughts
//! (as in the released ALFWorld examples) decide "found it" before naming
//! the object and leave the task target a whole episode behind.
//!
//! Each thought states the agent's state, in words the next action needs:
//! - searching: `Looking for watch: none here.` or `… watch 1 is here.` —
//!   the object is named before the verdict, which reads the last
//!   observation (`nothing seen yet.` on the first turn);
//! - carrying: `Holding knife 1, clean.` (the state the task asks for,
//!   once done), or for the lamp task `Holding cellphone 1. Looking for
//!   desklamp: none here.`
//!
//! With a prompt set that restates the task after every observation
//! (`compact`), the task's object and target are then a few tokens away
//! from every decision. The thoughts are a function of the game's state
//! before each action (the episode is replayed), so they are true
//! statements about it.

use super::catalog::ObjType;
use super::game::{Game, HELD, S_CLEAN, S_COOL, S_HOT};
use super::TaskType;

/// One thought per action of an episode played from `game`'s start.
/// Actions after the episode ends (none in an expert's trajectory) get the
/// thought of the state they met.
pub fn tracking_thoughts(game: &Game, actions: &[String]) -> Vec<String> {
    let mut g = game.clone();
    let (tt, ot, target) = (g.spec.task_type, g.spec.obj, g.spec.target);
    let mut out = Vec::with_capacity(actions.len());
    for (i, action) in actions.iter().enumerate() {
        let mut th = String::new();
        let held = g.objs.iter().position(|x| x.loc == HELD);
        let looking = match held {
            None => Some(ot),
            Some(_) if tt == TaskType::LookAtObjInLight => Some(ObjType::Desklamp),
            Some(_) => None,
        };
        if let Some(h) = held {
            th.push_str(&format!("Holding {}", g.obj_name(h as u8)));
            let st = g.objs[h].state;
            let done = match tt {
                TaskType::PickCleanThenPlace if st & S_CLEAN != 0 => Some("clean"),
                TaskType::PickHeatThenPlace if st & S_HOT != 0 => Some("hot"),
                TaskType::PickCoolThenPlace if st & S_COOL != 0 => Some("cool"),
                _ => None,
            };
            if let Some(d) = done {
                th.push_str(&format!(", {d}"));
            }
            th.push('.');
        }
        if let Some(ty) = looking {
            if !th.is_empty() {
                th.push(' ');
            }
            th.push_str(&format!("Looking for {}: ", ty.name()));
            // Objects already in the task's target receptacle do not count
            // (the second object of pick-two tasks).
            let here = g.at.filter(|&r| g.recs[r as usize].accessible() && !(ty == ot && Some(g.recs[r as usize].ty) == target)).and_then(|r| {
                let (ids, n) = g.contents(r);
                ids[..n].iter().copied().find(|&o| g.objs[o as usize].ty == ty)
            });
            match here {
                Some(o) if i > 0 => th.push_str(&format!("{} is here.", g.obj_name(o))),
                _ if i == 0 => th.push_str("nothing seen yet."),
                _ => th.push_str("none here."),
            }
        }
        out.push(th);
        g.step(action);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::builtin::{expert_on, Split};

    fn thoughts_of(split: Split, index: usize) -> (Vec<String>, Vec<String>) {
        let g = Game::new(split, index);
        let t = expert_on(&g);
        let actions: Vec<String> = t.turns.iter().map(|x| x.action.clone()).collect();
        (tracking_thoughts(&g, &actions), actions)
    }

    /// Every task type: the object is named before each verdict, a `take`
    /// follows "… is here." of that very instance, a search step follows
    /// "none here.", and a carried object is named in every thought.
    #[test]
    fn thoughts_state_what_the_next_action_needs() {
        let mut types = std::collections::BTreeSet::new();
        for index in 0..120 {
            let g = Game::new(Split::Train, index);
            types.insert(format!("{:?}", g.task_type()));
            let (th, acts) = thoughts_of(Split::Train, index);
            assert_eq!(th.len(), acts.len());
            for (t, a) in th.iter().zip(&acts) {
                if let Some(rest) = a.strip_prefix("put ") {
                    let obj = rest.split(" in/on ").next().unwrap();
                    assert!(t.starts_with(&format!("Holding {obj}")), "put {obj} after `{t}`");
                }
                if let Some(rest) = a.strip_prefix("take ") {
                    let obj = rest.split(" from ").next().unwrap();
                    assert!(t.ends_with(&format!("{obj} is here.")), "take {obj} after `{t}`");
                }
                if a.starts_with("go to ") && !t.contains("Holding") {
                    assert!(t.ends_with("none here.") || t.ends_with("nothing seen yet."), "search `{a}` after `{t}`");
                }
            }
        }
        assert_eq!(types.len(), TaskType::ALL.len(), "{types:?}");
    }

    #[test]
    fn one_episode_reads_as_expected() {
        let (th, acts) = thoughts_of(Split::Train, 3);
        let text: Vec<String> = th.iter().zip(&acts).map(|(t, a)| format!("Thought: {t}\nAction: {a}")).collect();
        insta::assert_snapshot!(text.join("\n"));
    }
}
