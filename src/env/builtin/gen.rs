//! Task generation: a pure function of (split, index, GENERATOR_VERSION).
//!
//! A task is drawn as: task type (ALFWorld-like mix) → (object, target)
//! combination → room kind → layout template → instance counts → object
//! placement by per-object location priors. `unseen` uses only held-out
//! layout templates, and about half of its tasks use held-out
//! (type, object, target) combinations that never occur in train/seen.
//! Placements the prior-following expert cannot finish within the default
//! step limit are redrawn, so every task is solvable by knowledge.

use std::sync::OnceLock;

use super::catalog::{
    info, ObjType, RecepType, RoomKind, Template, B, CLEAN, COOL, HEAT, K, L, LOOK, PICK, PLACE, T,
    TEMPLATES,
};
use super::game::{Game, Obj, Rec, DEFAULT_MAX_STEPS};
use super::rng::{fnv1a, mix, Rng};
use super::{Split, TaskType, GENERATOR_VERSION};

/// The drawn task, before the world is instantiated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Spec {
    pub split: Split,
    pub index: usize,
    pub task_type: TaskType,
    pub obj: ObjType,
    pub target: Option<RecepType>,
    pub kind: RoomKind,
    pub template: usize,
    pub heldout_combo: bool,
}

/// A (task type, object, target) combination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Combo {
    pub tt: TaskType,
    pub obj: ObjType,
    pub target: Option<RecepType>,
    /// Room kinds (bit set) where it can be staged.
    pub kinds: u8,
    pub heldout: bool,
}

/// Percentage of combinations held out for `unseen`.
const HELDOUT_PERCENT: u64 = 15;

/// The appliance a task type needs, if any.
pub(crate) fn appliance(tt: TaskType) -> Option<RecepType> {
    match tt {
        TaskType::PickHeatThenPlace => Some(RecepType::Microwave),
        TaskType::PickCoolThenPlace => Some(RecepType::Fridge),
        TaskType::PickCleanThenPlace => Some(RecepType::Sinkbasin),
        _ => None,
    }
}

fn kind_has(kind: RoomKind, r: RecepType) -> bool {
    TEMPLATES
        .iter()
        .any(|t| t.kind == kind && t.recs.iter().any(|&(ty, _, hi)| ty == r && hi > 0))
}

/// Whether a combination is held out (a frozen hash of its names).
pub(crate) fn is_heldout(tt: TaskType, obj: ObjType, target: Option<RecepType>) -> bool {
    let key = format!(
        "{}|{}|{}",
        tt.name(),
        obj.name(),
        target.map_or("desklamp", |t| t.name())
    );
    fnv1a(&key) % 100 < HELDOUT_PERCENT
}

/// All valid combinations, in a fixed order.
pub(crate) fn combos() -> &'static [Combo] {
    static C: OnceLock<Vec<Combo>> = OnceLock::new();
    C.get_or_init(|| {
        let mut v = Vec::new();
        for &tt in TaskType::ALL {
            let (flag, allowed) = match tt {
                TaskType::PickAndPlace | TaskType::PickTwoObj => (PLACE, K | L | B | T),
                TaskType::PickCleanThenPlace => (CLEAN, K | T),
                TaskType::PickHeatThenPlace => (HEAT, K),
                TaskType::PickCoolThenPlace => (COOL, K),
                TaskType::LookAtObjInLight => (LOOK, L | B),
            };
            for &o in ObjType::ALL {
                let inf = info(o);
                if !inf.has(flag) || !inf.has(PICK) || inf.kinds & allowed == 0 {
                    continue;
                }
                let targets: Vec<Option<RecepType>> = if tt == TaskType::LookAtObjInLight {
                    vec![None]
                } else {
                    inf.targets
                        .iter()
                        .copied()
                        .filter(|&t| Some(t) != appliance(tt))
                        .map(Some)
                        .collect()
                };
                for target in targets {
                    let mut kinds = 0u8;
                    for k in RoomKind::ALL {
                        if inf.kinds & allowed & k.bit() == 0 {
                            continue;
                        }
                        let ok_target = target.is_none_or(|t| kind_has(k, t));
                        let ok_app = appliance(tt).is_none_or(|a| kind_has(k, a));
                        if ok_target && ok_app {
                            kinds |= k.bit();
                        }
                    }
                    if kinds != 0 {
                        v.push(Combo {
                            tt,
                            obj: o,
                            target,
                            kinds,
                            heldout: is_heldout(tt, o, target),
                        });
                    }
                }
            }
        }
        v
    })
}

/// ALFWorld-like task-type mix (train counts: 790/650/459/533/308/813).
const TYPE_WEIGHTS: [u32; 6] = [22, 18, 13, 15, 9, 23];

/// The seed of a task.
fn seed(split: Split, index: usize) -> u64 {
    let tag = match split {
        Split::Train => 1,
        Split::Seen => 2,
        Split::Unseen => 3,
    };
    mix(&[GENERATOR_VERSION as u64, tag, index as u64])
}

pub(crate) fn template_id(t: usize) -> &'static str {
    TEMPLATES[t].id
}

/// Draws the task `index` of `split`.
pub(crate) fn generate(split: Split, index: usize) -> Game {
    let mut rng = Rng::new(seed(split, index));
    let tt = TaskType::ALL[rng.weighted(&TYPE_WEIGHTS).unwrap_or(0)];
    let unseen = split == Split::Unseen;
    let want_heldout = unseen && rng.chance(0.5);
    let all: Vec<&Combo> = combos().iter().filter(|c| c.tt == tt).collect();
    let mut pool: Vec<&Combo> = all
        .iter()
        .copied()
        .filter(|c| c.heldout == want_heldout)
        .collect();
    if pool.is_empty() {
        pool = all.iter().copied().filter(|c| !c.heldout).collect();
    }
    let combo = *pool[rng.below(pool.len())];
    let kinds: Vec<RoomKind> = RoomKind::ALL
        .into_iter()
        .filter(|k| combo.kinds & k.bit() != 0)
        .collect();
    let kind = kinds[rng.below(kinds.len())];
    let has = |t: &Template, r: RecepType| t.recs.iter().any(|&(ty, _, hi)| ty == r && hi > 0);
    let mut tpls: Vec<usize> = (0..TEMPLATES.len())
        .filter(|&i| TEMPLATES[i].kind == kind && TEMPLATES[i].heldout == unseen)
        .collect();
    if let Some(t) = combo.target {
        let with: Vec<usize> = tpls
            .iter()
            .copied()
            .filter(|&i| has(&TEMPLATES[i], t))
            .collect();
        if !with.is_empty() {
            tpls = with;
        }
    }
    let template = tpls[rng.below(tpls.len())];
    let spec = Spec {
        split,
        index,
        task_type: tt,
        obj: combo.obj,
        target: combo.target,
        kind,
        template,
        heldout_combo: combo.heldout,
    };
    let goal = goal_text(&mut rng, &spec);
    const ATTEMPTS: usize = 40;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let last = attempt == ATTEMPTS;
        let (recs, objs) = instantiate(&mut rng, &spec, last);
        let game = Game::from_parts(spec.clone(), recs, objs, goal.clone());
        // The forced placement (last attempt) is always solvable; the tests
        // check that the expert wins every task.
        if last || super::expert::solves_within(&game, DEFAULT_MAX_STEPS) {
            return game;
        }
    }
}

fn goal_text(rng: &mut Rng, s: &Spec) -> String {
    let o = s.obj.name();
    let r = s.target.map_or("", |t| t.name());
    let v = rng.below(2);
    match s.task_type {
        TaskType::PickAndPlace => {
            let surface = s.target.is_some_and(|t| {
                !t.openable()
                    && !matches!(
                        t,
                        RecepType::Garbagecan
                            | RecepType::Sinkbasin
                            | RecepType::Bathtubbasin
                            | RecepType::Laundryhamper
                    )
            });
            match (v, rng.below(2), surface) {
                (0, 0, true) => format!("put some {o} on {r}."),
                (0, _, _) => format!("put some {o} in {r}."),
                (_, 0, _) => format!("put a {o} in {r}."),
                _ => format!("find some {o} and put it in {r}."),
            }
        }
        TaskType::PickCleanThenPlace if v == 0 => format!("put a clean {o} in {r}."),
        TaskType::PickCleanThenPlace => format!("clean some {o} and put it in {r}."),
        TaskType::PickHeatThenPlace if v == 0 => format!("put a hot {o} in {r}."),
        TaskType::PickHeatThenPlace => format!("heat some {o} and put it in {r}."),
        TaskType::PickCoolThenPlace if v == 0 => format!("put a cool {o} in {r}."),
        TaskType::PickCoolThenPlace => format!("cool some {o} and put it in {r}."),
        TaskType::LookAtObjInLight if v == 0 => format!("look at {o} under the desklamp."),
        TaskType::LookAtObjInLight => format!("examine the {o} with the desklamp."),
        TaskType::PickTwoObj if v == 0 => format!("put two {o} in {r}."),
        TaskType::PickTwoObj => format!("find two {o} and put them in {r}."),
    }
}

/// Picks a receptacle for an object of type `o`: a type by prior weight
/// (over the types present, minus `exclude`), then a uniform instance.
fn place(rng: &mut Rng, recs: &[Rec], o: ObjType, exclude: Option<RecepType>) -> Option<u8> {
    let inf = info(o);
    let mut types: Vec<RecepType> = recs.iter().map(|r| r.ty).collect();
    types.dedup();
    types.retain(|&t| Some(t) != exclude);
    let weights: Vec<u32> = types.iter().map(|&t| inf.prior(t) as u32).collect();
    let ty = types[rng.weighted(&weights)?];
    let idx: Vec<usize> = (0..recs.len()).filter(|&i| recs[i].ty == ty).collect();
    Some(idx[rng.below(idx.len())] as u8)
}

/// Instantiates the room and places objects. With `force`, task objects go
/// to the expert's first search stop (a fallback that is always solvable).
fn instantiate(rng: &mut Rng, s: &Spec, force: bool) -> (Vec<Rec>, Vec<Obj>) {
    let tpl = &TEMPLATES[s.template];
    let mut counts: Vec<(RecepType, u8)> = Vec::new();
    for &(ty, lo, hi) in tpl.recs {
        let n = rng.range(lo as u32, hi as u32) as u8;
        counts.push((ty, n));
    }
    let inf = info(s.obj);
    let mut required: Vec<RecepType> = s.target.into_iter().chain(appliance(s.task_type)).collect();
    if s.task_type == TaskType::LookAtObjInLight
        && !counts
            .iter()
            .any(|&(t, n)| n > 0 && info(ObjType::Desklamp).prior(t) > 0)
    {
        required.push(RecepType::Sidetable);
    }
    let has_source = counts
        .iter()
        .any(|&(t, n)| n > 0 && Some(t) != s.target && inf.prior(t) > 0);
    if !has_source {
        if let Some(&(t, _)) = inf.priors.iter().find(|p| Some(p.0) != s.target) {
            required.push(t);
        }
    }
    for r in required {
        match counts.iter_mut().find(|c| c.0 == r) {
            Some(c) => c.1 = c.1.max(1),
            None => counts.push((r, 1)),
        }
    }
    counts.sort();
    let mut recs = Vec::new();
    for (ty, n) in counts {
        for k in (1..=n).rev() {
            recs.push(Rec {
                ty,
                num: k,
                open: false,
            });
        }
    }

    // Placement (numbers are assigned afterwards, per type, in draw order).
    let mut placed: Vec<(ObjType, u8)> = Vec::new();
    let n_task = match s.task_type {
        TaskType::PickTwoObj => 2 + rng.chance(0.35) as usize,
        _ => 1 + rng.chance(0.35) as usize,
    };
    let first_stop = super::expert::search_order(&recs, s.obj, s.target)
        .first()
        .copied();
    for _ in 0..n_task {
        let r = if force {
            first_stop
        } else {
            place(rng, &recs, s.obj, s.target)
        };
        if let Some(r) = r.or(first_stop) {
            placed.push((s.obj, r));
        }
    }
    let living = matches!(s.kind, RoomKind::Livingroom | RoomKind::Bedroom);
    if s.task_type == TaskType::LookAtObjInLight || (living && rng.chance(0.5)) {
        if let Some(r) = place(rng, &recs, ObjType::Desklamp, None) {
            placed.push((ObjType::Desklamp, r));
        }
    }
    let pool: Vec<ObjType> = ObjType::ALL
        .iter()
        .copied()
        .filter(|&o| {
            o != s.obj
                && o != ObjType::Desklamp
                && info(o).kinds & s.kind.bit() != 0
                && info(o)
                    .priors
                    .iter()
                    .any(|p| recs.iter().any(|r| r.ty == p.0))
        })
        .collect();
    let n_distract = rng.range(8, 16);
    for _ in 0..n_distract {
        let o = pool[rng.below(pool.len())];
        if let Some(r) = place(rng, &recs, o, None) {
            placed.push((o, r));
        }
    }
    // Shuffle before numbering so numbers do not reveal draw order.
    rng.shuffle(&mut placed);
    let mut next = [0u8; 64];
    let objs = placed
        .into_iter()
        .map(|(ty, loc)| {
            next[ty as usize] += 1;
            Obj {
                ty,
                num: next[ty as usize],
                loc,
                state: 0,
            }
        })
        .collect();
    (recs, objs)
}
