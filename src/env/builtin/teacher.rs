//! The rule-based teacher: turns an expert trajectory into an abstract meta
//! plan in the paper's format (one `Step k: …` per line), optionally with
//! one of the App. C failure modes. Also [`plan_for`], good or misleading
//! plans straight from the world's priors, for measurements.

use serde::{Deserialize, Serialize};

use super::catalog::{info, ObjType, RecepType};
use super::expert::Trajectory;
use super::game::Game;
use super::gen::appliance;
use super::rng::{mix, Rng};
use super::TaskType;

/// How a teacher plan is flawed (the paper's App. C failure modes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PlanFlaw {
    /// Names concrete instances of this layout ("go to cabinet 4").
    TooConcrete,
    /// Wrong appliance (heat with the stoveburner) or a misleading
    /// location hint (for tasks without an appliance).
    WrongAppliance,
    /// A needed step is missing (e.g. the heat step).
    MissingStep,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TeacherPlan {
    pub text: String,
    pub flaw: Option<PlanFlaw>,
}

/// Plan quality for [`plan_for`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PlanQuality {
    /// Prior-based: the likeliest places, the right appliance.
    Good,
    /// Unlikely places, the wrong appliance / lamp places.
    Misleading,
}

/// An abstract plan before rendering.
struct Abstract {
    tt: TaskType,
    obj: &'static str,
    target: Option<RecepType>,
    search: Vec<RecepType>,
    app: Option<RecepType>,
    lamp: Vec<RecepType>,
    /// MissingStep: which step group is dropped.
    drop: Option<Drop>,
}

#[derive(Clone, Copy, PartialEq)]
enum Drop {
    Search,
    Transform,
    Lamp,
    Second,
}

fn plural_name(t: RecepType) -> String {
    if t.usually_many() {
        t.plural()
    } else {
        t.name().to_string()
    }
}

fn such_as(types: &[RecepType]) -> String {
    let names: Vec<String> = types.iter().map(|&t| plural_name(t)).collect();
    match names.len() {
        0 => String::new(),
        1 => format!(", such as the {}", names[0]),
        2 => format!(", such as the {} or {}", names[0], names[1]),
        n => format!(
            ", such as the {}, or {}",
            names[..n - 1].join(", "),
            names[n - 1]
        ),
    }
}

fn verb_cap(tt: TaskType) -> &'static str {
    match tt {
        TaskType::PickHeatThenPlace => "Heat",
        TaskType::PickCoolThenPlace => "Cool",
        _ => "Clean",
    }
}

fn render(p: &Abstract) -> String {
    let o = p.obj;
    let t = p.target.map_or("", |t| t.name());
    let mut steps: Vec<String> = Vec::new();
    let two = p.tt == TaskType::PickTwoObj;
    let first = if two { "first " } else { "" };
    if p.drop != Some(Drop::Search) {
        steps.push(format!(
            "Go to where the {o} may be placed{}.",
            such_as(&p.search)
        ));
    }
    steps.push(format!("Take the {first}{o} from where you found it."));
    match p.tt {
        TaskType::LookAtObjInLight => {
            if p.drop != Some(Drop::Lamp) {
                steps.push(format!(
                    "Go to where the desklamp may be placed{}.",
                    such_as(&p.lamp)
                ));
            }
            steps.push(format!("Turn on the desklamp while holding the {o}."));
        }
        _ => {
            if let (Some(app), true) = (p.app, p.drop != Some(Drop::Transform)) {
                steps.push(format!("Go to the {}.", app.name()));
                steps.push(format!(
                    "{} the {o} with the {}.",
                    verb_cap(p.tt),
                    app.name()
                ));
            }
            steps.push(format!("Go to the {t}."));
            steps.push(format!("Put the {first}{o} in/on the {t}."));
            if two && p.drop != Some(Drop::Second) {
                steps.push(format!(
                    "Go to where the second {o} may be placed{}.",
                    such_as(&p.search)
                ));
                steps.push(format!("Take the second {o}."));
                steps.push(format!("Go to the {t}."));
                steps.push(format!("Put the second {o} in/on the {t}."));
            }
        }
    }
    number(&steps)
}

fn number(steps: &[String]) -> String {
    steps
        .iter()
        .enumerate()
        .map(|(i, s)| format!("Step {}: {s}", i + 1))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Receptacle types listed in an initial observation, in order of first
/// appearance.
fn room_types(initial_observation: &str) -> Vec<(RecepType, u8)> {
    let mut out: Vec<(RecepType, u8)> = Vec::new();
    let line = initial_observation.lines().next().unwrap_or("");
    let toks: Vec<&str> = line
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|t| !t.is_empty())
        .collect();
    for w in toks.windows(2) {
        if let (Some(t), Ok(n)) = (RecepType::from_name(w[0]), w[1].parse::<u8>()) {
            out.push((t, n));
        }
    }
    out
}

/// Top-`k` prior types of `obj` present in `room` (minus `target`).
fn top_types(
    obj: ObjType,
    room: &[(RecepType, u8)],
    target: Option<RecepType>,
    k: usize,
) -> Vec<RecepType> {
    let inf = info(obj);
    let mut v: Vec<(RecepType, u16)> = inf
        .priors
        .iter()
        .copied()
        .filter(|&(t, w)| w > 0 && Some(t) != target && room.iter().any(|r| r.0 == t))
        .collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.into_iter().take(k).map(|x| x.0).collect()
}

/// Zero-prior types of `obj` present in `room` (the worst first: openable,
/// then many instances), minus `target`.
fn bad_types(
    obj: ObjType,
    room: &[(RecepType, u8)],
    target: Option<RecepType>,
    k: usize,
) -> Vec<RecepType> {
    let inf = info(obj);
    let mut v: Vec<(RecepType, usize)> = Vec::new();
    for &(t, _) in room {
        if inf.prior(t) == 0 && Some(t) != target && !v.iter().any(|x| x.0 == t) {
            v.push((t, room.iter().filter(|r| r.0 == t).count()));
        }
    }
    v.sort_by(|a, b| {
        (b.0.openable(), b.1)
            .cmp(&(a.0.openable(), a.1))
            .then(a.0.cmp(&b.0))
    });
    v.into_iter().take(k).map(|x| x.0).collect()
}

fn wrong_appliance(tt: TaskType, room: &[(RecepType, u8)], pick: usize) -> Option<RecepType> {
    let has = |t: RecepType| room.iter().any(|r| r.0 == t);
    let cands: &[RecepType] = match tt {
        TaskType::PickHeatThenPlace => &[
            RecepType::Stoveburner,
            RecepType::Toaster,
            RecepType::Coffeemachine,
        ],
        TaskType::PickCoolThenPlace => &[RecepType::Sinkbasin, RecepType::Garbagecan],
        TaskType::PickCleanThenPlace => &[
            RecepType::Bathtubbasin,
            RecepType::Countertop,
            RecepType::Garbagecan,
        ],
        _ => return None,
    };
    let present: Vec<RecepType> = cands.iter().copied().filter(|&t| has(t)).collect();
    if present.is_empty() {
        return cands.first().copied();
    }
    Some(present[pick % present.len()])
}

/// A prior-based plan for `game`'s task: `Good` names the likeliest places
/// and the right appliance; `Misleading` names places where the object never
/// is, the wrong appliance, and wrong places for the desklamp.
pub fn plan_for(game: &Game, quality: PlanQuality) -> String {
    let spec = &game.spec;
    let room: Vec<(RecepType, u8)> = game.recs.iter().map(|r| (r.ty, r.num)).collect();
    let good = quality == PlanQuality::Good;
    let p = Abstract {
        tt: spec.task_type,
        obj: spec.obj.name(),
        target: spec.target,
        search: if good {
            top_types(spec.obj, &room, spec.target, 2)
        } else {
            bad_types(spec.obj, &room, spec.target, 2)
        },
        app: if good {
            appliance(spec.task_type)
        } else {
            wrong_appliance(spec.task_type, &room, 0)
        },
        lamp: if good {
            top_types(ObjType::Desklamp, &room, None, 2)
        } else {
            bad_types(ObjType::Desklamp, &room, None, 2)
        },
        drop: None,
    };
    render(&p)
}

/// What the teacher reads off an expert trajectory.
#[derive(Default)]
struct Observed {
    found: Vec<(RecepType, u8)>,
    obj_inst: Vec<String>,
    app: Option<(RecepType, u8)>,
    lamp_at: Option<(RecepType, u8)>,
    put_at: Option<(RecepType, u8)>,
}

fn rec_of(words: &[&str]) -> Option<(RecepType, u8)> {
    let n = words.len();
    if n < 2 {
        return None;
    }
    Some((
        RecepType::from_name(words[n - 2])?,
        words[n - 1].parse().ok()?,
    ))
}

fn observe(traj: &Trajectory) -> Observed {
    let mut ob = Observed::default();
    let mut at: Option<(RecepType, u8)> = None;
    for t in &traj.turns {
        if t.observation == super::NOTHING_HAPPENS {
            continue;
        }
        let w: Vec<&str> = t.action.split_whitespace().collect();
        match w.first().copied() {
            Some("go") => at = rec_of(&w),
            Some("take") if w.len() == 6 => {
                ob.found.extend(rec_of(&w));
                ob.obj_inst.push(format!("{} {}", w[1], w[2]));
            }
            Some("heat" | "cool" | "clean") => ob.app = rec_of(&w),
            Some("use" | "toggle") => ob.lamp_at = at,
            Some("put") => ob.put_at = rec_of(&w),
            _ => {}
        }
    }
    ob
}

/// The object and target of a goal sentence ("heat some egg and put it in
/// diningtable.").
fn parse_goal(goal: &str) -> (Option<ObjType>, Option<RecepType>) {
    let toks: Vec<&str> = goal
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|t| !t.is_empty())
        .collect();
    let obj = toks
        .iter()
        .find_map(|t| ObjType::from_name(t).filter(|&o| o != ObjType::Desklamp));
    let target = toks.iter().rev().find_map(|t| RecepType::from_name(t));
    (obj, target)
}

fn inst(r: (RecepType, u8)) -> String {
    format!("{} {}", r.0.name(), r.1)
}

/// Turns an expert trajectory into a meta plan. With probability
/// `flaw_rate` (deterministic in `seed`) the plan has one flaw.
pub fn teacher_plan(traj: &Trajectory, flaw_rate: f64, seed: u64) -> TeacherPlan {
    let mut rng = Rng::new(mix(&[seed, super::rng::fnv1a(&traj.task_id)]));
    let tt = traj.task_type;
    let (obj, mut target) = parse_goal(&traj.goal);
    if tt == TaskType::LookAtObjInLight {
        target = None;
    }
    let obj = obj.unwrap_or(ObjType::Mug);
    let room = room_types(&traj.initial_observation);
    let ob = observe(traj);

    // Where to search: where the expert found it plus the likeliest type.
    let mut search: Vec<RecepType> = Vec::new();
    for t in top_types(obj, &room, target, 2) {
        if search.len() < 2 && !search.contains(&t) {
            search.push(t);
        }
    }
    if let Some(&(f, _)) = ob.found.first() {
        if !search.contains(&f) {
            search.truncate(1);
            search.push(f);
        }
    }
    let inf = info(obj);
    search.sort_by_key(|&t| std::cmp::Reverse(inf.prior(t)));
    let mut lamp: Vec<RecepType> = top_types(ObjType::Desklamp, &room, None, 2);
    if let Some((l, _)) = ob.lamp_at {
        if !lamp.contains(&l) {
            lamp.truncate(1);
            lamp.push(l);
        }
    }
    let mut p = Abstract {
        tt,
        obj: obj.name(),
        target,
        search,
        app: ob.app.map(|a| a.0).or(appliance(tt)),
        lamp,
        drop: None,
    };

    let flaw = if rng.f64() < flaw_rate {
        Some(
            [
                PlanFlaw::TooConcrete,
                PlanFlaw::WrongAppliance,
                PlanFlaw::MissingStep,
            ][rng.below(3)],
        )
    } else {
        None
    };
    let text = match flaw {
        None => render(&p),
        Some(PlanFlaw::TooConcrete) => concrete(traj, &ob, obj, tt),
        Some(PlanFlaw::WrongAppliance) => {
            match tt {
                TaskType::PickHeatThenPlace
                | TaskType::PickCoolThenPlace
                | TaskType::PickCleanThenPlace => {
                    p.app = wrong_appliance(tt, &room, rng.below(3));
                }
                TaskType::LookAtObjInLight => p.lamp = bad_types(ObjType::Desklamp, &room, None, 2),
                _ => p.search = bad_types(obj, &room, target, 2),
            }
            render(&p)
        }
        Some(PlanFlaw::MissingStep) => {
            p.drop = Some(match tt {
                TaskType::PickHeatThenPlace
                | TaskType::PickCoolThenPlace
                | TaskType::PickCleanThenPlace => Drop::Transform,
                TaskType::LookAtObjInLight => Drop::Lamp,
                TaskType::PickTwoObj => Drop::Second,
                TaskType::PickAndPlace => Drop::Search,
            });
            render(&p)
        }
    };
    TeacherPlan { text, flaw }
}

/// The TooConcrete flaw: the plan replays this layout's instances.
fn concrete(traj: &Trajectory, ob: &Observed, obj: ObjType, tt: TaskType) -> String {
    let o = obj.name();
    let mut steps = Vec::new();
    let found: Vec<String> = ob.found.iter().map(|&r| inst(r)).collect();
    let objs = &ob.obj_inst;
    let put = ob.put_at.map(inst).unwrap_or_else(|| traj.goal.clone());
    for (k, f) in found.iter().enumerate() {
        let oi = objs.get(k).cloned().unwrap_or_else(|| o.to_string());
        steps.push(format!("Go to {f} to find the {o}."));
        steps.push(format!("Take {oi} from {f}."));
        match tt {
            TaskType::LookAtObjInLight => {
                if let Some(l) = ob.lamp_at {
                    steps.push(format!("Go to {}.", inst(l)));
                }
                steps.push("Use desklamp 1.".to_string());
            }
            _ => {
                if let Some(a) = ob.app {
                    steps.push(format!("Go to {}.", inst(a)));
                    steps.push(format!("{} {oi} with {}.", verb_cap(tt), inst(a)));
                }
                steps.push(format!("Go to {put}."));
                steps.push(format!("Put {oi} in/on {put}."));
            }
        }
    }
    number(&steps)
}
