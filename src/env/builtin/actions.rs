//! The command grammar (parsing ALFWorld commands), the admissible-action
//! list, and rendering actions back to command text.

use super::catalog::{info, ObjType, RecepType, PICK};
use super::game::{Action, Game};

impl Game {
    /// Parses a command the way ALFWorld matches it (lowercased, surrounding
    /// whitespace and a trailing period ignored, single-token names).
    pub fn parse_action(&self, action: &str) -> Option<Action> {
        let lower;
        let s = if action.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = action.to_ascii_lowercase();
            lower.as_str()
        } else {
            action
        };
        let s = s.trim().trim_end_matches('.').trim_end();
        let mut t: [&str; 8] = [""; 8];
        let mut n = 0;
        for w in s.split_ascii_whitespace() {
            if n == 8 {
                return None;
            }
            t[n] = w;
            n += 1;
        }
        let t = &t[..n];
        match t {
            ["look"] => Some(Action::Look),
            ["inventory"] => Some(Action::Inventory),
            ["go", "to", r, k] => self.find_rec(r, k).map(Action::GoTo),
            ["open", r, k] => self.find_rec(r, k).map(Action::Open),
            ["close", r, k] => self.find_rec(r, k).map(Action::Close),
            ["take", o, ok, "from", r, rk] => Some(Action::Take {
                obj: self.find_obj(o, ok)?,
                rec: self.find_rec(r, rk)?,
            }),
            ["put", o, ok, "in/on" | "in" | "on", r, rk] => Some(Action::Put {
                obj: self.find_obj(o, ok)?,
                rec: self.find_rec(r, rk)?,
            }),
            [verb @ ("heat" | "cool" | "clean"), o, ok, "with", r, rk] => {
                let (obj, rec) = (self.find_obj(o, ok)?, self.find_rec(r, rk)?);
                Some(match *verb {
                    "heat" => Action::Heat { obj, rec },
                    "cool" => Action::Cool { obj, rec },
                    _ => Action::Clean { obj, rec },
                })
            }
            ["use", o, ok] | ["toggle", o, ok] => self.find_obj(o, ok).map(Action::Use),
            ["toggle", o, ok, r, rk] => {
                let (obj, rec) = (self.find_obj(o, ok)?, self.find_rec(r, rk)?);
                (self.objs[obj as usize].loc == rec).then_some(Action::Use(obj))
            }
            ["examine", x, k] => {
                if let Some(r) = self.find_rec(x, k) {
                    Some(Action::ExamineRec(r))
                } else {
                    self.find_obj(x, k).map(Action::ExamineObj)
                }
            }
            _ => None,
        }
    }

    fn find_rec(&self, name: &str, num: &str) -> Option<u8> {
        let ty = RecepType::from_name(name)?;
        let num: u8 = parse_num(num)?;
        self.recs
            .iter()
            .position(|r| r.ty == ty && r.num == num)
            .map(|i| i as u8)
    }

    fn find_obj(&self, name: &str, num: &str) -> Option<u8> {
        let ty = ObjType::from_name(name)?;
        let num: u8 = parse_num(num)?;
        self.objs
            .iter()
            .position(|o| o.ty == ty && o.num == num)
            .map(|i| i as u8)
    }

    /// Appends the currently admissible actions (typed; cheap, no strings).
    pub fn admissible_into(&self, out: &mut Vec<Action>) {
        out.clear();
        for r in 0..self.recs.len() as u8 {
            if self.at != Some(r) {
                out.push(Action::GoTo(r));
            }
        }
        out.push(Action::Inventory);
        out.push(Action::Look);
        if let Some(h) = self.holding {
            out.push(Action::ExamineObj(h));
        }
        let Some(at) = self.at else { return };
        out.push(Action::ExamineRec(at));
        for a in [Action::Open(at), Action::Close(at)] {
            if self.is_valid(a) {
                out.push(a);
            }
        }
        let accessible = self.recs[at as usize].accessible();
        for (i, o) in self.objs.iter().enumerate() {
            let i = i as u8;
            if o.loc != at {
                continue;
            }
            if o.ty == ObjType::Desklamp {
                out.push(Action::Use(i));
            }
            if accessible {
                out.push(Action::ExamineObj(i));
                if self.holding.is_none() && info(o.ty).has(PICK) {
                    out.push(Action::Take { obj: i, rec: at });
                }
            }
        }
        if let Some(h) = self.holding {
            for a in [
                Action::Put { obj: h, rec: at },
                Action::Heat { obj: h, rec: at },
                Action::Cool { obj: h, rec: at },
                Action::Clean { obj: h, rec: at },
            ] {
                if self.is_valid(a) {
                    out.push(a);
                }
            }
        }
    }

    /// Writes the ALFWorld command text of `a` into `out` (cleared first).
    pub fn write_action(&self, a: Action, out: &mut String) {
        out.clear();
        let two = |s: &mut String, verb: &str, o: u8, mid: &str, r: u8| {
            s.push_str(verb);
            self.write_obj(s, o);
            s.push_str(mid);
            self.write_rec(s, r);
        };
        match a {
            Action::Look => out.push_str("look"),
            Action::Inventory => out.push_str("inventory"),
            Action::GoTo(r) => {
                out.push_str("go to ");
                self.write_rec(out, r);
            }
            Action::Open(r) => {
                out.push_str("open ");
                self.write_rec(out, r);
            }
            Action::Close(r) => {
                out.push_str("close ");
                self.write_rec(out, r);
            }
            Action::Take { obj, rec } => two(out, "take ", obj, " from ", rec),
            Action::Put { obj, rec } => two(out, "put ", obj, " in/on ", rec),
            Action::Heat { obj, rec } => two(out, "heat ", obj, " with ", rec),
            Action::Cool { obj, rec } => two(out, "cool ", obj, " with ", rec),
            Action::Clean { obj, rec } => two(out, "clean ", obj, " with ", rec),
            Action::Use(o) => {
                out.push_str("use ");
                self.write_obj(out, o);
            }
            Action::ExamineRec(r) => {
                out.push_str("examine ");
                self.write_rec(out, r);
            }
            Action::ExamineObj(o) => {
                out.push_str("examine ");
                self.write_obj(out, o);
            }
        }
    }

    /// The command text of `a`.
    pub fn action_text(&self, a: Action) -> String {
        let mut s = String::new();
        self.write_action(a, &mut s);
        s
    }

    /// ALFWorld-style admissible commands (sorted), for debugging and the
    /// AgentGym-compatible surface. Each one, played, does something.
    pub fn admissible_actions(&self) -> Vec<String> {
        let mut acts = Vec::new();
        self.admissible_into(&mut acts);
        let mut v: Vec<String> = acts.into_iter().map(|a| self.action_text(a)).collect();
        v.sort();
        v.dedup();
        v
    }
}

fn parse_num(s: &str) -> Option<u8> {
    if s.is_empty() || s.len() > 3 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}
