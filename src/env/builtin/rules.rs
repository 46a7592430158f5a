//! A plan checked against the world's ground truth: what the rule judge
//! (Figure 6 on the built-in world) scores. Each check is a fact of the
//! task — its object, its target receptacle, the appliance its verb needs,
//! where objects of its kind can be — or of the plan's form.

use super::catalog::{info, ObjType, RecepType};
use super::follower::{parse_plan, Place};
use super::game::Game;
use super::gen::appliance;
use super::TaskType;

/// One named check and whether the plan passes it.
pub type Check = (&'static str, bool);

fn words(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_ascii_lowercase).collect()
}

fn place_type(p: &Place) -> RecepType {
    match *p {
        Place::Type(t) | Place::Instance(t, _) => t,
    }
}

/// Correctness against the task: the object is named; the target
/// receptacle is named in a put step; the heat/cool/clean step names the
/// appliance the verb needs (and tasks without one have no such step);
/// every place the plan sends the agent to search can hold the object (a
/// nonzero location prior), and likewise for the desklamp.
pub fn correctness(game: &Game, plan: &str) -> Vec<Check> {
    let spec = &game.spec;
    let obj = spec.obj.name();
    let all = words(plan);
    let hints = parse_plan(plan);
    let mut v: Vec<Check> = vec![("object", all.iter().any(|w| w == obj || *w == format!("{obj}s")))];
    if let Some(t) = spec.target {
        let put = plan.lines().any(|l| {
            let w = words(l);
            (w.iter().any(|x| x == "put" || x == "place")) && w.iter().any(|x| RecepType::from_word(x) == Some(t))
        });
        v.push(("target", put));
    }
    match appliance(spec.task_type) {
        Some(a) => v.push(("appliance", hints.has_transform && hints.appliance.map(|p| place_type(&p)) == Some(a))),
        None => v.push(("no needless step", !hints.has_transform)),
    }
    let prior_ok = |o: ObjType, places: &[Place]| !places.is_empty() && places.iter().all(|p| info(o).prior(place_type(p)) > 0);
    v.push(("search places", prior_ok(spec.obj, &hints.search)));
    if spec.task_type == TaskType::LookAtObjInLight {
        v.push(("lamp places", prior_ok(ObjType::Desklamp, &hints.lamp)));
    }
    v
}

/// Standardization: numbered `Step k:` lines from 1, and abstract —
/// receptacle types, not this room's instances ("cabinet 4").
pub fn standardization(plan: &str) -> Vec<Check> {
    let lines: Vec<&str> = plan.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let numbered = !lines.is_empty() && lines.iter().enumerate().all(|(i, l)| l.starts_with(&format!("Step {}:", i + 1)));
    let abstract_ = lines.iter().all(|l| {
        let body = l.split_once(':').map_or(*l, |(_, b)| b);
        let w = words(body);
        !w.windows(2).any(|p| RecepType::from_name(&p[0]).is_some() && p[1].parse::<u32>().is_ok())
    });
    vec![("numbered steps", numbered), ("abstract", abstract_)]
}
