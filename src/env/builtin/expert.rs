//! The expert: a policy that uses only what an agent can observe plus the
//! world's location priors. It searches receptacles in prior order of the
//! object type (opening closed ones), takes the object, uses the right
//! appliance, and places it; it remembers what it has seen (a second object
//! for pick_two, the desklamp). Its turns are written in the style of the
//! released ALFWorld ReAct in-context examples.

use serde::{Deserialize, Serialize};

use super::catalog::{info, ObjType, RecepType};
use super::game::{Game, Rec, HELD};
use super::gen::appliance;
use super::{Split, TaskType};

/// One assistant turn and the environment's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Turn {
    pub thought: Option<String>,
    pub action: String,
    /// The env's observation string (the agent loop adds `Observation: `).
    pub observation: String,
}

impl Turn {
    /// `"Thought: …\nAction: …"`, or `"Action: …"` without a thought.
    pub fn assistant_text(&self) -> String {
        match &self.thought {
            Some(t) => format!("Thought: {t}\nAction: {}", self.action),
            None => format!("Action: {}", self.action),
        }
    }
}

/// An episode of the expert (or any agent) on one task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trajectory {
    pub task_id: String,
    pub task_type: TaskType,
    pub goal: String,
    pub initial_observation: String,
    pub turns: Vec<Turn>,
    pub reward: f64,
}

impl Trajectory {
    /// Renders the episode as text (`> action` lines as in the ReAct
    /// examples, thoughts as `Thought:` lines).
    pub fn render(&self) -> String {
        let mut s = format!("{}\n", self.initial_observation);
        for t in &self.turns {
            if let Some(th) = &t.thought {
                s.push_str(&format!("Thought: {th}\n"));
            }
            s.push_str(&format!("> {}\n{}\n", t.action, t.observation));
        }
        s.push_str(&format!("[reward {}]\n", self.reward));
        s
    }
}

/// Receptacles in the order the expert searches for `obj`: types with a
/// positive prior (minus the task target type), by descending weight, each
/// type's instances ascending; then all others in initial-observation order.
pub(crate) fn search_order(recs: &[Rec], obj: ObjType, target: Option<RecepType>) -> Vec<u8> {
    let inf = info(obj);
    let mut pri: Vec<(RecepType, u16)> = inf
        .priors
        .iter()
        .copied()
        .filter(|&(t, w)| w > 0 && Some(t) != target)
        .collect();
    pri.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut order = Vec::with_capacity(recs.len());
    for (t, _) in pri {
        let mut ids: Vec<u8> = (0..recs.len() as u8)
            .filter(|&i| recs[i as usize].ty == t)
            .collect();
        ids.sort_by_key(|&i| recs[i as usize].num);
        order.extend(ids);
    }
    for i in 0..recs.len() as u8 {
        if !order.contains(&i) {
            order.push(i);
        }
    }
    order
}

/// "fridge (1), countertop (1-3), …" over the prior-ranked types present.
pub(crate) fn likely_list(g: &Game, obj: ObjType, target: Option<RecepType>) -> String {
    let inf = info(obj);
    let order = search_order(&g.recs, obj, target);
    let mut parts: Vec<String> = Vec::new();
    let mut seen: Vec<RecepType> = Vec::new();
    for &r in &order {
        let t = g.recs[r as usize].ty;
        if inf.prior(t) == 0 || Some(t) == target || seen.contains(&t) {
            continue;
        }
        seen.push(t);
        let n = g.recs.iter().filter(|x| x.ty == t).count();
        parts.push(if n == 1 {
            format!("{} (1)", t.name())
        } else {
            format!("{} (1-{n})", t.name())
        });
    }
    parts.join(", ")
}

pub(crate) fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

pub(crate) struct Run {
    pub g: Game,
    pub turns: Vec<Turn>,
    pub visited: Vec<bool>,
}

impl Run {
    pub(crate) fn new(g: Game) -> Run {
        let n = g.recs.len();
        Run {
            g,
            turns: Vec::new(),
            visited: vec![false; n],
        }
    }

    /// The episode played so far, as a trajectory.
    pub(crate) fn into_trajectory(self, initial_observation: String) -> Trajectory {
        Trajectory {
            task_id: self.g.task_id(),
            task_type: self.g.task_type(),
            goal: self.g.goal_text().to_string(),
            initial_observation,
            reward: if self.g.won() { 1.0 } else { 0.0 },
            turns: self.turns,
        }
    }

    /// Plays one turn; `false` once the episode is over.
    pub(crate) fn act(&mut self, thought: Option<String>, action: String) -> bool {
        let out = self.g.step(&action);
        self.turns.push(Turn {
            thought,
            action,
            observation: out.observation,
        });
        !out.done
    }

    pub(crate) fn go(&mut self, thought: Option<String>, r: u8) -> bool {
        let a = format!("go to {}", self.g.rec_name(r));
        self.visited[r as usize] = true;
        self.act(thought, a)
    }

    /// Goes to `r` (unless there) and opens it if closed.
    pub(crate) fn visit(&mut self, thought: Option<String>, r: u8) -> bool {
        let mut thought = thought;
        if self.g.at != Some(r) && !self.go(thought.take(), r) {
            return false;
        }
        self.visited[r as usize] = true;
        if !self.g.recs[r as usize].accessible() {
            let a = format!("open {}", self.g.rec_name(r));
            return self.act(thought, a);
        }
        true
    }

    /// A seen, reachable instance of `ty` (not inside `exclude`).
    pub(crate) fn known(&self, ty: ObjType, exclude: Option<u8>) -> Option<(u8, u8)> {
        let mut best: Option<(u8, u8)> = None;
        for (r, _) in self.visited.iter().enumerate().filter(|v| *v.1) {
            let r = r as u8;
            if Some(r) == exclude || !self.g.recs[r as usize].accessible() {
                continue;
            }
            let (ids, n) = self.g.contents(r);
            if let Some(&o) = ids[..n].iter().find(|&&o| self.g.objs[o as usize].ty == ty) {
                // Prefer where the agent stands.
                if best.is_none() || self.g.at == Some(r) {
                    best = Some((o, r));
                }
            }
        }
        best
    }

    /// Searches for an instance of `ty`; returns (object, receptacle) with
    /// the agent standing there. `thought` goes on the first action.
    pub(crate) fn find(
        &mut self,
        ty: ObjType,
        order: &[u8],
        exclude: Option<u8>,
        mut thought: Option<String>,
    ) -> Option<(u8, u8)> {
        loop {
            if let Some((o, r)) = self.known(ty, exclude) {
                if self.g.at != Some(r) && !self.go(thought.take(), r) {
                    return None;
                }
                return Some((o, r));
            }
            let r = *order
                .iter()
                .find(|&&r| !self.visited[r as usize] && Some(r) != exclude)?;
            if !self.visit(thought.take(), r) {
                return None;
            }
        }
    }
}

/// Runs the expert on `g` (played to its step limit).
fn run_expert(g: Game) -> Run {
    let mut run = Run::new(g);
    let spec = run.g.spec.clone();
    let (tt, ot, target) = (spec.task_type, spec.obj, spec.target);
    let o = ot.name();
    let a = article(o);
    let order = search_order(&run.g.recs, ot, target);
    let first = run.g.rec_name(order[0]);
    let list = likely_list(&run.g, ot, target);
    let tname = target.map_or("", |t| t.name());
    let target_rec = target
        .and_then(|t| run.g.recs.iter().position(|r| r.ty == t && r.num == 1))
        .map(|i| i as u8);
    let app = appliance(tt);
    let plan = match tt {
        TaskType::PickAndPlace => format!("find and take {a} {o}, then put it in {tname}"),
        TaskType::LookAtObjInLight => format!("find and take {a} {o}, then find and use a desklamp"),
        TaskType::PickTwoObj => format!(
            "find and take the first {o}, then put it in {tname}, then find and take the second {o}, then put it in {tname}"
        ),
        _ => {
            let verb = verb(tt);
            format!("find and take {a} {o}, then {verb} it with {}, then put it in {tname}", app.map_or("", |x| x.name()))
        }
    };
    let which = if tt == TaskType::PickTwoObj {
        format!("the first {o}")
    } else {
        format!("{a} {o}")
    };
    let intro = format!(
        "To solve the task, I need to {plan}. First I need to find {which}. {} {o} is more likely to appear in {list}. I can check one by one, starting with {first}.",
        capitalize(a)
    );
    let rounds = if tt == TaskType::PickTwoObj { 2 } else { 1 };
    let mut thought = Some(intro);
    for k in 0..rounds {
        let ord = if k == 0 { "first " } else { "second " };
        let nth = if tt == TaskType::PickTwoObj { ord } else { "" };
        let exclude = if k == 1 { target_rec } else { None };
        if k == 1 {
            let tr = target_rec.map(|r| run.g.rec_name(r)).unwrap_or_default();
            let how = match run.known(ot, exclude) {
                Some((_, r)) => format!("I can directly go to {}.", run.g.rec_name(r)),
                None => match order
                    .iter()
                    .find(|&&r| !run.visited[r as usize] && Some(r) != exclude)
                {
                    Some(&r) => format!(
                        "I can check the remaining places one by one, starting with {}.",
                        run.g.rec_name(r)
                    ),
                    None => String::new(),
                },
            };
            thought = Some(format!(
                "Now I put the first {o} in {tr}. Next, I need to find the second {o}. {how}"
            ));
        }
        let Some((obj, rec)) = run.find(ot, &order, exclude, thought.take()) else {
            return run;
        };
        let on = run.g.objs[obj as usize].num;
        let (an, who) = if nth.is_empty() {
            (a, String::new())
        } else {
            ("the", nth.to_string())
        };
        let take = format!("take {} from {}", run.g.obj_name(obj), run.g.rec_name(rec));
        let th = format!("Now I find {an} {who}{o} ({on}). Next, I need to take it.");
        if !run.act(Some(th), take) {
            return run;
        }
        let took = format!("Now I take {an} {who}{o} ({on}).");
        match tt {
            TaskType::LookAtObjInLight => {
                let here = run
                    .g
                    .objs
                    .iter()
                    .position(|x| x.ty == ObjType::Desklamp && Some(x.loc) == run.g.at);
                let lamp_th;
                if let Some(l) = here {
                    lamp_th = format!(
                        "{took} Next, I need to use the desklamp ({}).",
                        run.g.objs[l].num
                    );
                    let act = format!("use {}", run.g.obj_name(l as u8));
                    run.act(Some(lamp_th), act);
                    return run;
                }
                let lorder = search_order(&run.g.recs, ObjType::Desklamp, None);
                let th = match run.known(ObjType::Desklamp, None) {
                    Some((_, r)) => format!(
                        "{took} Next, I need to find a desklamp. I can directly go to {}.",
                        run.g.rec_name(r)
                    ),
                    None => {
                        let next = lorder
                            .iter()
                            .find(|&&r| !run.visited[r as usize])
                            .copied()
                            .unwrap_or(lorder[0]);
                        format!(
                            "{took} Next, I need to find a desklamp. A desklamp is more likely to appear in {}. I can check one by one, starting with {}.",
                            likely_list(&run.g, ObjType::Desklamp, None),
                            run.g.rec_name(next)
                        )
                    }
                };
                let Some((lamp, _)) = run.find(ObjType::Desklamp, &lorder, None, Some(th)) else {
                    return run;
                };
                let th = format!(
                    "Now I find a desklamp ({}). Next, I need to use it.",
                    run.g.objs[lamp as usize].num
                );
                let act = format!("use {}", run.g.obj_name(lamp));
                run.act(Some(th), act);
                return run;
            }
            TaskType::PickCleanThenPlace
            | TaskType::PickHeatThenPlace
            | TaskType::PickCoolThenPlace => {
                let Some(at) =
                    app.and_then(|t| run.g.recs.iter().position(|r| r.ty == t && r.num == 1))
                else {
                    return run;
                };
                let at = at as u8;
                let ap = run.g.recs[at as usize].ty.name();
                let th = match tt {
                    TaskType::PickCleanThenPlace => {
                        format!("{took} Next, I need to go to {ap} (1) and clean it.")
                    }
                    _ => format!(
                        "{took} Next, I need go to {} {ap} (1) and {} it.",
                        article(ap),
                        verb(tt)
                    ),
                };
                let mut th = Some(th);
                if run.g.at != Some(at) && !run.go(th.take(), at) {
                    return run;
                }
                let act = format!(
                    "{} {} with {}",
                    verb(tt),
                    run.g.obj_name(obj),
                    run.g.rec_name(at)
                );
                if !run.act(th, act) {
                    return run;
                }
                let done = match tt {
                    TaskType::PickCleanThenPlace => "clean",
                    TaskType::PickHeatThenPlace => "heat",
                    _ => "cool",
                };
                thought = Some(format!(
                    "Now I {done} {a} {o} ({on}). Next, I need to put it in/on {}.",
                    target_rec.map(|r| run.g.rec_name(r)).unwrap_or_default()
                ));
            }
            _ => {
                thought = Some(format!(
                    "{took} Next, I need to put it in/on {}.",
                    target_rec.map(|r| run.g.rec_name(r)).unwrap_or_default()
                ));
            }
        }
        let Some(tr) = target_rec else { return run };
        if run.g.at != Some(tr) && !run.go(thought.take(), tr) {
            return run;
        }
        if !run.g.recs[tr as usize].accessible() {
            let act = format!("open {}", run.g.rec_name(tr));
            if !run.act(thought.take(), act) {
                return run;
            }
        }
        let act = format!("put {} in/on {}", run.g.obj_name(obj), run.g.rec_name(tr));
        if !run.act(thought.take(), act) {
            return run;
        }
    }
    run
}

pub(crate) fn verb(tt: TaskType) -> &'static str {
    match tt {
        TaskType::PickHeatThenPlace => "heat",
        TaskType::PickCoolThenPlace => "cool",
        TaskType::PickCleanThenPlace => "clean",
        _ => "",
    }
}

/// Whether the expert wins `g` within `max_steps`.
pub(crate) fn solves_within(g: &Game, max_steps: u32) -> bool {
    let run = run_expert(g.clone().with_max_steps(max_steps));
    run.g.won()
}

/// The expert's episode on a task (played under a generous step limit;
/// every generated task is solved within the default 30 steps).
pub fn expert_trajectory(split: Split, index: usize) -> Trajectory {
    expert_on(&Game::new(split, index))
}

/// The expert's episode from the current state of `game` (normally fresh).
pub fn expert_on(game: &Game) -> Trajectory {
    let g = game.clone().with_max_steps(game.max_steps().max(200));
    let initial_observation = g.initial_observation();
    let run = run_expert(g);
    debug_assert!(run
        .g
        .objs
        .iter()
        .all(|o| o.loc != HELD || run.g.holding.is_some()));
    run.into_trajectory(initial_observation)
}
