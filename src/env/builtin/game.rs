//! The game state, the ALFWorld action grammar and its observation texts.

use std::fmt::Write as _;

use super::catalog::{info, ObjType, RecepType, CLEAN, COOL, HEAT, PICK};
use super::gen::{self, Spec};
use super::{Split, StepOutcome, TaskIndexError, TaskType};

/// What every impossible or unparsable action answers, as in ALFWorld.
pub const NOTHING_HAPPENS: &str = "Nothing happens.";

/// `Obj::loc` of the object in the agent's hand.
pub(crate) const HELD: u8 = u8::MAX;
pub(crate) const S_CLEAN: u8 = 1;
pub(crate) const S_HOT: u8 = 2;
pub(crate) const S_COOL: u8 = 4;
pub(crate) const S_ON: u8 = 8;

/// One receptacle instance, e.g. `cabinet 4`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Rec {
    pub ty: RecepType,
    pub num: u8,
    pub open: bool,
}

impl Rec {
    /// Contents are visible (and reachable): not openable, or open.
    pub fn accessible(&self) -> bool {
        self.open || !self.ty.openable()
    }
}

/// One object instance, e.g. `egg 2`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Obj {
    pub ty: ObjType,
    pub num: u8,
    /// Receptacle index, or [`HELD`].
    pub loc: u8,
    /// S_CLEAN | S_HOT | S_COOL | S_ON.
    pub state: u8,
}

/// A parsed action. The indices point into the tables of the [`Game`] that
/// produced it and mean nothing for another game.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Look,
    Inventory,
    GoTo(u8),
    Open(u8),
    Close(u8),
    Take {
        obj: u8,
        rec: u8,
    },
    Put {
        obj: u8,
        rec: u8,
    },
    Heat {
        obj: u8,
        rec: u8,
    },
    Cool {
        obj: u8,
        rec: u8,
    },
    Clean {
        obj: u8,
        rec: u8,
    },
    /// `use desklamp 1` / `toggle desklamp 1 [R]`.
    Use(u8),
    ExamineRec(u8),
    ExamineObj(u8),
}

/// One household task in play. Cheap to clone; a pure function of
/// (split, index, GENERATOR_VERSION) when created.
#[derive(Clone, Debug)]
pub struct Game {
    pub(crate) spec: Spec,
    pub(crate) recs: Vec<Rec>,
    pub(crate) objs: Vec<Obj>,
    goal: String,
    max_steps: u32,
    steps: u32,
    pub(crate) at: Option<u8>,
    pub(crate) holding: Option<u8>,
    won: bool,
}

impl PartialEq for Game {
    fn eq(&self, o: &Game) -> bool {
        self.spec == o.spec
            && self.recs == o.recs
            && self.objs == o.objs
            && self.goal == o.goal
            && self.max_steps == o.max_steps
            && self.steps == o.steps
            && self.at == o.at
            && self.holding == o.holding
            && self.won == o.won
    }
}

/// Default step limit (as in the MPO/AgentGym ALFWorld setting).
pub const DEFAULT_MAX_STEPS: u32 = 30;

impl Game {
    /// The task `index` of `split`. Panics only if `index >= split.size()`.
    pub fn new(split: Split, index: usize) -> Game {
        match Game::try_new(split, index) {
            Ok(g) => g,
            Err(e) => panic!("{e}"),
        }
    }

    /// Fallible [`Game::new`].
    pub fn try_new(split: Split, index: usize) -> Result<Game, TaskIndexError> {
        if index >= split.size() {
            return Err(TaskIndexError {
                split,
                index,
                size: split.size(),
            });
        }
        Ok(gen::generate(split, index))
    }

    /// The game of a task id such as `"seen/0007"`.
    pub fn from_task_id(id: &str) -> Option<Game> {
        let (s, i) = id.split_once('/')?;
        let split = Split::parse(s)?;
        let index: usize = i.parse().ok()?;
        Game::try_new(split, index).ok()
    }

    pub(crate) fn from_parts(spec: Spec, recs: Vec<Rec>, objs: Vec<Obj>, goal: String) -> Game {
        Game {
            spec,
            recs,
            objs,
            goal,
            max_steps: DEFAULT_MAX_STEPS,
            steps: 0,
            at: None,
            holding: None,
            won: false,
        }
    }

    /// Sets the step limit (default 30).
    pub fn with_max_steps(mut self, n: u32) -> Game {
        self.max_steps = n;
        self
    }

    pub fn max_steps(&self) -> u32 {
        self.max_steps
    }
    pub fn split(&self) -> Split {
        self.spec.split
    }
    pub fn index(&self) -> usize {
        self.spec.index
    }
    /// Stable id, e.g. `"seen/0007"`.
    pub fn task_id(&self) -> String {
        format!("{}/{:04}", self.spec.split.name(), self.spec.index)
    }
    pub fn task_type(&self) -> TaskType {
        self.spec.task_type
    }
    /// The ALFWorld task sentence, e.g. `"heat some egg and put it in diningtable."`.
    pub fn goal_text(&self) -> &str {
        &self.goal
    }
    /// The object type of the task, e.g. `"egg"`.
    pub fn goal_object(&self) -> &'static str {
        self.spec.obj.name()
    }
    /// The target receptacle type (`None` for look_at_obj_in_light).
    pub fn goal_target(&self) -> Option<&'static str> {
        self.spec.target.map(|t| t.name())
    }
    /// The layout template name (e.g. `"kitchen-galley"`).
    pub fn layout(&self) -> &'static str {
        gen::template_id(self.spec.template)
    }
    /// Whether this task's (type, object, target) combination is held out of
    /// train/seen (only `unseen` tasks have one).
    pub fn heldout_combo(&self) -> bool {
        self.spec.heldout_combo
    }
    pub fn steps_taken(&self) -> u32 {
        self.steps
    }
    pub fn won(&self) -> bool {
        self.won
    }
    /// Won, or out of steps.
    pub fn done(&self) -> bool {
        self.won || self.steps >= self.max_steps
    }
    /// Receptacles in the initial observation's order, e.g. `"cabinet 4"`.
    pub fn receptacles(&self) -> Vec<String> {
        self.recs
            .iter()
            .map(|r| format!("{} {}", r.ty.name(), r.num))
            .collect()
    }

    /// The opening text, incl. `"\nYour task is to: ..."`.
    pub fn initial_observation(&self) -> String {
        let mut s = String::with_capacity(64 + 16 * self.recs.len() + self.goal.len());
        self.write_room(&mut s);
        s.push_str("\nYour task is to: ");
        s.push_str(&self.goal);
        s
    }

    fn write_room(&self, s: &mut String) {
        s.push_str("You are in the middle of a room. Looking quickly around you, you see ");
        write_list(s, self.recs.iter().map(|r| (r.ty.name(), r.num)));
        s.push('.');
    }

    /// Plays one ALFWorld command. Anything unparsable or impossible answers
    /// `Nothing happens.` (and still costs a step). After the episode is
    /// over, nothing changes and no step is counted. `reward` is 1.0 once
    /// the goal is reached, else 0.0.
    pub fn step(&mut self, action: &str) -> StepOutcome {
        match self.parse_action(action) {
            Some(a) => self.apply(a),
            None => self.apply_invalid(),
        }
    }

    fn outcome(&self, observation: String) -> StepOutcome {
        StepOutcome {
            observation,
            reward: if self.won { 1.0 } else { 0.0 },
            done: self.done(),
            won: self.won,
        }
    }

    fn apply_invalid(&mut self) -> StepOutcome {
        if !self.done() {
            self.steps += 1;
        }
        self.outcome(NOTHING_HAPPENS.to_string())
    }

    /// Whether `a` would do something (what `admissible_actions` lists).
    pub fn is_valid(&self, a: Action) -> bool {
        let at = self.at;
        let here = |r: u8| at == Some(r);
        let held = |o: u8| self.holding == Some(o);
        match a {
            Action::Look | Action::Inventory => true,
            Action::GoTo(r) => !here(r),
            Action::Open(r) => {
                here(r) && self.recs[r as usize].ty.openable() && !self.recs[r as usize].open
            }
            Action::Close(r) => {
                here(r) && self.recs[r as usize].ty.openable() && self.recs[r as usize].open
            }
            Action::Take { obj, rec } => {
                let o = &self.objs[obj as usize];
                here(rec)
                    && self.holding.is_none()
                    && o.loc == rec
                    && info(o.ty).has(PICK)
                    && self.recs[rec as usize].accessible()
            }
            Action::Put { obj, rec } => {
                held(obj) && here(rec) && self.recs[rec as usize].accessible()
            }
            Action::Heat { obj, rec } => self.appliance_ok(obj, rec, RecepType::Microwave, HEAT),
            Action::Cool { obj, rec } => self.appliance_ok(obj, rec, RecepType::Fridge, COOL),
            Action::Clean { obj, rec } => self.appliance_ok(obj, rec, RecepType::Sinkbasin, CLEAN),
            Action::Use(obj) => {
                let o = &self.objs[obj as usize];
                o.ty == ObjType::Desklamp && at.is_some() && o.loc == at.unwrap_or(HELD)
            }
            Action::ExamineRec(r) => here(r),
            Action::ExamineObj(obj) => {
                let o = &self.objs[obj as usize];
                held(obj) || (at == Some(o.loc) && self.recs[o.loc as usize].accessible())
            }
        }
    }

    fn appliance_ok(&self, obj: u8, rec: u8, ty: RecepType, flag: u8) -> bool {
        self.holding == Some(obj)
            && self.at == Some(rec)
            && self.recs[rec as usize].ty == ty
            && info(self.objs[obj as usize].ty).has(flag)
    }

    /// Plays a parsed action (see [`Game::step`]).
    pub fn apply(&mut self, a: Action) -> StepOutcome {
        if self.done() || !self.is_valid(a) {
            return self.apply_invalid();
        }
        self.steps += 1;
        let mut s = String::with_capacity(96);
        match a {
            Action::Look => match self.at {
                Some(r) => {
                    s.push_str("You are facing the ");
                    self.write_rec(&mut s, r);
                    s.push_str(". Next to it, you see nothing.");
                }
                None => self.write_room(&mut s),
            },
            Action::Inventory => match self.holding {
                Some(o) => {
                    s.push_str("You are carrying: a ");
                    self.write_obj(&mut s, o);
                    s.push('.');
                }
                None => s.push_str("You are not carrying anything."),
            },
            Action::GoTo(r) => {
                self.at = Some(r);
                self.write_arrival(&mut s, r);
            }
            Action::ExamineRec(r) => self.write_arrival(&mut s, r),
            Action::Open(r) => {
                self.recs[r as usize].open = true;
                s.push_str("You open the ");
                self.write_rec(&mut s, r);
                s.push_str(". ");
                self.write_arrival(&mut s, r);
            }
            Action::Close(r) => {
                self.recs[r as usize].open = false;
                s.push_str("You close the ");
                self.write_rec(&mut s, r);
                s.push('.');
            }
            Action::Take { obj, rec } => {
                self.objs[obj as usize].loc = HELD;
                self.holding = Some(obj);
                s.push_str("You pick up the ");
                self.write_obj(&mut s, obj);
                s.push_str(" from the ");
                self.write_rec(&mut s, rec);
                s.push('.');
            }
            Action::Put { obj, rec } => {
                self.objs[obj as usize].loc = rec;
                self.holding = None;
                s.push_str("You put the ");
                self.write_obj(&mut s, obj);
                s.push_str(" in/on the ");
                self.write_rec(&mut s, rec);
                s.push('.');
            }
            Action::Heat { obj, rec } | Action::Cool { obj, rec } | Action::Clean { obj, rec } => {
                let (verb, flag) = match a {
                    Action::Heat { .. } => ("You heat the ", S_HOT),
                    Action::Cool { .. } => ("You cool the ", S_COOL),
                    _ => ("You clean the ", S_CLEAN),
                };
                let o = &mut self.objs[obj as usize];
                // Heating undoes cooling and vice versa, as in ALFWorld's PDDL.
                match flag {
                    S_HOT => o.state &= !S_COOL,
                    S_COOL => o.state &= !S_HOT,
                    _ => {}
                }
                o.state |= flag;
                s.push_str(verb);
                self.write_obj(&mut s, obj);
                s.push_str(" using the ");
                self.write_rec(&mut s, rec);
                s.push('.');
            }
            Action::Use(obj) => {
                self.objs[obj as usize].state |= S_ON;
                s.push_str("You turn on the ");
                self.write_obj(&mut s, obj);
                s.push('.');
            }
            Action::ExamineObj(obj) => {
                s.push_str("There's nothing special about ");
                self.write_obj(&mut s, obj);
                s.push('.');
            }
        }
        if self.goal_reached() {
            self.won = true;
        }
        self.outcome(s)
    }

    /// The observation on arriving at (or examining) receptacle `r`.
    fn write_arrival(&self, s: &mut String, r: u8) {
        let rec = &self.recs[r as usize];
        if rec.ty.openable() {
            s.push_str("The ");
            self.write_rec(s, r);
            if !rec.open {
                s.push_str(" is closed.");
                return;
            }
            s.push_str(" is open. In it, you see ");
        } else {
            s.push_str("On the ");
            self.write_rec(s, r);
            s.push_str(", you see ");
        }
        self.write_contents(s, r);
        s.push('.');
    }

    /// Objects in `r`, sorted as ALFWorld lists them: by name, then by
    /// descending number.
    pub(crate) fn contents(&self, r: u8) -> ([u8; 64], usize) {
        let mut ids = [0u8; 64];
        let mut n = 0;
        for (i, o) in self.objs.iter().enumerate() {
            if o.loc == r && n < 64 {
                ids[n] = i as u8;
                n += 1;
            }
        }
        ids[..n].sort_unstable_by(|&a, &b| {
            let (a, b) = (&self.objs[a as usize], &self.objs[b as usize]);
            a.ty.cmp(&b.ty).then(b.num.cmp(&a.num))
        });
        (ids, n)
    }

    fn write_contents(&self, s: &mut String, r: u8) {
        let (ids, n) = self.contents(r);
        write_list(
            s,
            ids[..n]
                .iter()
                .map(|&i| (self.objs[i as usize].ty.name(), self.objs[i as usize].num)),
        );
    }

    pub(crate) fn write_rec(&self, s: &mut String, r: u8) {
        let rec = &self.recs[r as usize];
        s.push_str(rec.ty.name());
        s.push(' ');
        push_num(s, rec.num);
    }

    pub(crate) fn write_obj(&self, s: &mut String, o: u8) {
        let obj = &self.objs[o as usize];
        s.push_str(obj.ty.name());
        s.push(' ');
        push_num(s, obj.num);
    }

    pub(crate) fn rec_name(&self, r: u8) -> String {
        let mut s = String::new();
        self.write_rec(&mut s, r);
        s
    }

    pub(crate) fn obj_name(&self, o: u8) -> String {
        let mut s = String::new();
        self.write_obj(&mut s, o);
        s
    }

    /// Whether the task's goal holds in the current state.
    fn goal_reached(&self) -> bool {
        let (ot, target) = (self.spec.obj, self.spec.target);
        let in_target =
            |o: &Obj| o.ty == ot && o.loc != HELD && Some(self.recs[o.loc as usize].ty) == target;
        match self.spec.task_type {
            TaskType::PickAndPlace => self.objs.iter().any(in_target),
            TaskType::PickCleanThenPlace => self
                .objs
                .iter()
                .any(|o| in_target(o) && o.state & S_CLEAN != 0),
            TaskType::PickHeatThenPlace => self
                .objs
                .iter()
                .any(|o| in_target(o) && o.state & S_HOT != 0),
            TaskType::PickCoolThenPlace => self
                .objs
                .iter()
                .any(|o| in_target(o) && o.state & S_COOL != 0),
            TaskType::PickTwoObj => self.objs.iter().filter(|o| in_target(o)).any(|a| {
                self.objs
                    .iter()
                    .filter(|b| in_target(b) && b.loc == a.loc)
                    .count()
                    >= 2
            }),
            TaskType::LookAtObjInLight => {
                let (Some(h), Some(at)) = (self.holding, self.at) else {
                    return false;
                };
                self.objs[h as usize].ty == ot
                    && self
                        .objs
                        .iter()
                        .any(|o| o.ty == ObjType::Desklamp && o.loc == at && o.state & S_ON != 0)
            }
        }
    }
}

pub(crate) fn push_num(s: &mut String, n: u8) {
    let _ = write!(s, "{n}");
}

/// ALFWorld's list: `nothing`, `a x 1`, `a x 1, and a y 2`, `a x 1, a y 2, and a z 3`.
pub(crate) fn write_list<'a>(s: &mut String, items: impl ExactSizeIterator<Item = (&'a str, u8)>) {
    let n = items.len();
    if n == 0 {
        s.push_str("nothing");
        return;
    }
    for (i, (name, num)) in items.enumerate() {
        if i > 0 {
            s.push_str(if i + 1 == n { ", and " } else { ", " });
        }
        s.push_str("a ");
        s.push_str(name);
        s.push(' ');
        push_num(s, num);
    }
}
