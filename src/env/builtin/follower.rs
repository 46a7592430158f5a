//! A scripted plan-following policy, to measure how much a meta plan's
//! quality matters. It reads the plan for the places and appliances it
//! names, tries those first, then falls back to blind search in the
//! initial observation's order. Without a plan it searches blindly and uses
//! the commonsense appliance for the verb in the task (microwave / fridge /
//! sinkbasin). A plan's wrong appliance is tried first (and costs steps);
//! a plan without the heat/cool/clean step is followed literally, and the
//! follower repairs the episode afterwards (more steps).

use serde::{Deserialize, Serialize};

use super::catalog::{ObjType, RecepType};
use super::expert::{search_order, verb, Run};
use super::game::Game;
use super::gen::appliance;
use super::{Split, TaskType, NOTHING_HAPPENS};

/// Result of one scripted episode.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpisodeSummary {
    /// 1.0 on success, else 0.0.
    pub reward: f64,
    pub steps: u32,
}

/// A place named by a plan: a type ("countertops") or an instance
/// ("cabinet 4").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    Type(RecepType),
    Instance(RecepType, u8),
}

/// What the follower reads from a plan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlanHints {
    /// Where to look for the task object, in the plan's order.
    pub search: Vec<Place>,
    /// Where to look for the desklamp.
    pub lamp: Vec<Place>,
    /// The appliance named by a heat/cool/clean step.
    pub appliance: Option<Place>,
    /// Whether any heat/cool/clean step is present.
    pub has_transform: bool,
    /// A concrete target instance named by a put step.
    pub target: Option<Place>,
}

fn mentions(words: &[&str]) -> Vec<Place> {
    let mut v = Vec::new();
    for (i, w) in words.iter().enumerate() {
        if let Some(t) = RecepType::from_word(w) {
            match words.get(i + 1).and_then(|n| n.parse::<u8>().ok()) {
                Some(n) if RecepType::from_name(w).is_some() => v.push(Place::Instance(t, n)),
                _ => v.push(Place::Type(t)),
            }
        }
    }
    v
}

/// Parses a meta plan (`Step k: …` lines, any case).
pub fn parse_plan(plan: &str) -> PlanHints {
    let mut h = PlanHints::default();
    let mut took = false;
    for line in plan.lines() {
        let lower = line.to_ascii_lowercase();
        let body = match lower.split_once(':') {
            Some((head, rest)) if head.trim_start().starts_with("step") => rest,
            _ => lower.as_str(),
        };
        let words: Vec<&str> = body
            .split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect();
        let has = |k: &str| words.contains(&k);
        let m = mentions(&words);
        if has("heat") || has("cool") || has("clean") {
            h.has_transform = true;
            if h.appliance.is_none() {
                h.appliance = m.first().copied();
            }
        } else if has("desklamp") || has("lamp") {
            h.lamp.extend(m);
        } else if has("put") || has("place") {
            if let Some(p @ Place::Instance(..)) = m.first().copied() {
                h.target = Some(p);
            }
        } else if has("take") || has("pick") {
            took = true;
        } else if !took || has("second") || has("where") {
            for p in m {
                if !h.search.contains(&p) {
                    h.search.push(p);
                }
            }
        }
    }
    h
}

fn resolve(g: &Game, places: &[Place]) -> Vec<u8> {
    let mut v: Vec<u8> = Vec::new();
    for p in places {
        let mut ids: Vec<u8> = (0..g.recs.len() as u8)
            .filter(|&i| {
                let r = &g.recs[i as usize];
                match *p {
                    Place::Type(t) => r.ty == t,
                    Place::Instance(t, n) => r.ty == t && r.num == n,
                }
            })
            .collect();
        ids.sort_by_key(|&i| g.recs[i as usize].num);
        for i in ids {
            if !v.contains(&i) {
                v.push(i);
            }
        }
    }
    v
}

/// Hinted places first, then every receptacle: in initial-observation
/// order (blind), or `informed` in the expert's order for `obj` (the
/// world's location priors, minus the task's `target` type).
fn order(g: &Game, places: &[Place], informed: Option<(ObjType, Option<RecepType>)>) -> Vec<u8> {
    let mut v = resolve(g, places);
    let rest: Vec<u8> = match informed {
        Some((obj, target)) => search_order(&g.recs, obj, target),
        None => (0..g.recs.len() as u8).collect(),
    };
    for i in rest {
        if !v.contains(&i) {
            v.push(i);
        }
    }
    v
}

/// Runs the scripted follower on task `index` of `split`.
pub fn follow_plan(
    split: Split,
    index: usize,
    plan: Option<&str>,
    max_steps: u32,
) -> EpisodeSummary {
    follow_plan_on(&Game::new(split, index), plan, max_steps)
}

/// Runs the scripted follower on (a fresh copy of) `game`.
pub fn follow_plan_on(game: &Game, plan: Option<&str>, max_steps: u32) -> EpisodeSummary {
    let hints = plan.map(parse_plan);
    let mut run = Run::new(game.clone().with_max_steps(max_steps));
    follow(&mut run, hints.as_ref(), false);
    EpisodeSummary {
        reward: if run.g.won() { 1.0 } else { 0.0 },
        steps: run.g.steps_taken(),
    }
}

/// The follower's whole episode on (a fresh copy of) `game`, as a
/// trajectory (actions and observations; no thoughts): demonstrations of
/// an agent that reads and follows meta plans.
pub fn follower_trajectory(game: &Game, plan: Option<&str>, max_steps: u32) -> super::Trajectory {
    let hints = plan.map(parse_plan);
    let initial_observation = game.initial_observation();
    let mut run = Run::new(game.clone().with_max_steps(max_steps));
    follow(&mut run, hints.as_ref(), false);
    run.into_trajectory(initial_observation)
}

/// The informed follower's episode: it goes first where the plan says
/// (places, appliance, steps as written, flaws included), and where the
/// plan says nothing it searches like the expert, by the world's location
/// priors. Without a plan it plays like the expert. Demonstrations of an
/// agent that knows the world and still does what its plan says.
pub fn informed_follower_trajectory(game: &Game, plan: Option<&str>, max_steps: u32) -> super::Trajectory {
    let hints = plan.map(parse_plan);
    let initial_observation = game.initial_observation();
    let mut run = Run::new(game.clone().with_max_steps(max_steps));
    follow(&mut run, hints.as_ref(), true);
    run.into_trajectory(initial_observation)
}

fn rec_of_type(g: &Game, t: RecepType) -> Option<u8> {
    let mut best: Option<u8> = None;
    for (i, r) in g.recs.iter().enumerate() {
        if r.ty == t && best.is_none_or(|b| g.recs[b as usize].num > r.num) {
            best = Some(i as u8);
        }
    }
    best
}

/// Heats/cools/cleans the held object `obj`, trying the hinted appliance
/// first. `None` once the episode is over.
fn transform(run: &mut Run, tt: TaskType, obj: u8, hint: Option<Place>) -> Option<()> {
    let default = appliance(tt).and_then(|t| rec_of_type(&run.g, t));
    let hinted = hint.and_then(|p| resolve(&run.g, &[p]).first().copied());
    for r in [hinted, default].into_iter().flatten() {
        if run.g.at != Some(r) && !run.go(None, r) {
            return None;
        }
        let a = format!(
            "{} {} with {}",
            verb(tt),
            run.g.obj_name(obj),
            run.g.rec_name(r)
        );
        let ok = run.act(None, a);
        let failed = run
            .turns
            .last()
            .is_some_and(|t| t.observation == NOTHING_HAPPENS);
        if !ok {
            return None;
        }
        if !failed {
            return Some(());
        }
    }
    Some(())
}

/// Goes to the target instance, opens it if needed, puts `obj` there.
fn place(run: &mut Run, obj: u8, tr: u8) -> Option<()> {
    if run.g.at != Some(tr) && !run.go(None, tr) {
        return None;
    }
    if !run.g.recs[tr as usize].accessible() {
        let a = format!("open {}", run.g.rec_name(tr));
        if !run.act(None, a) {
            return None;
        }
    }
    let a = format!("put {} in/on {}", run.g.obj_name(obj), run.g.rec_name(tr));
    run.act(None, a).then_some(())
}

fn follow(run: &mut Run, hints: Option<&PlanHints>, informed: bool) -> Option<()> {
    let spec = run.g.spec.clone();
    let (tt, ot) = (spec.task_type, spec.obj);
    let empty = PlanHints::default();
    let h = hints.unwrap_or(&empty);
    let search = order(&run.g, &h.search, informed.then_some((ot, spec.target)));
    let target_rec = match h.target {
        Some(Place::Instance(t, n)) if Some(t) == spec.target => run
            .g
            .recs
            .iter()
            .position(|r| r.ty == t && r.num == n)
            .map(|i| i as u8),
        _ => None,
    }
    .or_else(|| spec.target.and_then(|t| rec_of_type(&run.g, t)));
    let skip_transform = hints.is_some() && !h.has_transform;
    let rounds = if tt == TaskType::PickTwoObj { 2 } else { 1 };
    let mut last_obj = None;
    for k in 0..rounds {
        let exclude = if k == 1 { target_rec } else { None };
        let (obj, rec) = run.find(ot, &search, exclude, None)?;
        let a = format!("take {} from {}", run.g.obj_name(obj), run.g.rec_name(rec));
        if !run.act(None, a) {
            return None;
        }
        last_obj = Some(obj);
        match tt {
            TaskType::LookAtObjInLight => {
                let lorder = order(&run.g, &h.lamp, informed.then_some((ObjType::Desklamp, None)));
                let (lamp, _) = run.find(ObjType::Desklamp, &lorder, None, None)?;
                let a = format!("use {}", run.g.obj_name(lamp));
                run.act(None, a);
                return Some(());
            }
            TaskType::PickAndPlace | TaskType::PickTwoObj => {}
            _ if skip_transform => {}
            _ => transform(run, tt, obj, h.appliance)?,
        }
        place(run, obj, target_rec?)?;
    }
    if skip_transform && appliance(tt).is_some() && !run.g.won() {
        // The plan had no heat/cool/clean step: repair afterwards.
        let (obj, tr) = (last_obj?, target_rec?);
        let a = format!("take {} from {}", run.g.obj_name(obj), run.g.rec_name(tr));
        if !run.act(None, a) {
            return None;
        }
        transform(run, tt, obj, None)?;
        place(run, obj, tr)?;
    }
    Some(())
}
