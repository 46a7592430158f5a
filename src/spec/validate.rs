//! Value checks and cross-references of a deserialised spec. No side effects.
//!
//! Every message has the shape `` `key` = value in SOURCE: what is allowed ``
//! so that a user can find and fix it without reading code.

use super::load::{clip, did_you_mean, SpecError};
use super::{EnvSpec, ModelSpec, Spec};

/// Checks `spec`. `source` names where a key's value came from.
pub fn validate(spec: &Spec, source: &dyn Fn(&str) -> String) -> Result<(), SpecError> {
    let mut e = Errors { messages: vec![], hint: None, source };
    check(spec, &mut e);
    super::limits::check(spec, &mut e);
    check_secrets(spec, &mut e);
    if e.messages.is_empty() {
        Ok(())
    } else {
        Err(SpecError { messages: e.messages, hint: e.hint })
    }
}

pub(super) struct Errors<'a> {
    messages: Vec<String>,
    hint: Option<String>,
    source: &'a dyn Fn(&str) -> String,
}

impl Errors<'_> {
    /// `` `key` = value in SOURCE: rule ``, the value clipped to
    /// [`super::load::CLIP_CHARS`] characters.
    pub(super) fn bad(&mut self, key: &str, value: String, rule: &str) {
        let m = format!("`{}` = {} in {}: {rule}", clip(key), clip(&value), (self.source)(key));
        self.messages.push(m);
    }
    fn push(&mut self, m: String) {
        self.messages.push(m);
    }
    /// `` `key` in SOURCE: what `` for a message of a lower layer (a model's
    /// or env's own checks), which may quote a value: clipped.
    fn nested(&mut self, key: &str, err: &str) {
        let m = format!("`{}` in {}: {}", clip(key), (self.source)(key), clip_long(err));
        self.messages.push(m);
    }
    pub(super) fn count(&self) -> usize {
        self.messages.len()
    }
    fn unknown(&mut self, key: &str, given: &str, names: &[&str], what: &str) {
        let allowed = if names.is_empty() {
            format!("no {what} is declared")
        } else {
            format!("declared {what}s: {}", names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", "))
        };
        let m = format!(
            "`{}` names {what} \"{}\" in {}, which is not declared; {}",
            clip(key),
            clip(given),
            (self.source)(key),
            clip_long(&allowed)
        );
        self.messages.push(m);
        if let Some(best) = did_you_mean(given, names) {
            self.hint = Some(format!("did you mean `{best}`?"));
        }
    }
}

fn check(spec: &Spec, e: &mut Errors<'_>) {
    let source = e.source;

    // `experiment.name` and other names that become file names, and the
    // limits of counts and sizes: `super::limits`.

    let mpo = &spec.mpo;
    if mpo.m < 1 {
        e.bad("mpo.m", mpo.m.to_string(), "must be >= 1");
    }
    if mpo.n < 1 {
        e.bad("mpo.n", mpo.n.to_string(), "must be >= 1");
    }
    if !(mpo.beta > 0.0 && mpo.beta.is_finite()) {
        e.bad("mpo.beta", mpo.beta.to_string(), "must be a finite number > 0");
    }
    for (key, t) in [
        ("mpo.sample_temperature", mpo.sample_temperature),
        ("mpo.explorer_temperature", mpo.explorer_temperature),
    ] {
        if !(0.0..=2.0).contains(&t) {
            e.bad(key, t.to_string(), "must be between 0 and 2");
        }
    }

    for (mname, model) in &spec.models {
        match model {
            ModelSpec::Openai(cfg) => {
                if let Err(err) = cfg.validate() {
                    e.nested(&format!("models.{mname}"), &err);
                }
            }
            ModelSpec::Local(cfg) => {
                if let Err(err) = cfg.validate() {
                    e.nested(&format!("models.{mname}"), &err);
                }
            }
        }
    }

    for (ename, env) in &spec.envs {
        match env {
            EnvSpec::Sciworld(s) => {
                if let Err(err) = s.validate() {
                    e.nested(&format!("envs.{ename}"), &err);
                }
            }
            EnvSpec::Agentgym(a) => {
                if let Err(err) = a.validate() {
                    e.nested(&format!("envs.{ename}"), &err);
                }
            }
            EnvSpec::Builtin(b) => {
                if b.max_steps < 1 {
                    e.bad(&format!("envs.{ename}.max_steps"), b.max_steps.to_string(), "must be >= 1");
                }
                for (split, &k) in &b.tasks {
                    let key = format!("envs.{ename}.tasks.{split}");
                    match crate::env::builtin::Split::parse(split) {
                        None => e.bad(&key, k.to_string(), "unknown split; allowed: `train`, `seen`, `unseen`"),
                        Some(_) if k == 0 => e.bad(&key, "0".into(), "must be >= 1"),
                        Some(_) => {}
                    }
                }
            }
        }
    }

    let model_names: Vec<&str> = spec.models.keys().map(String::as_str).collect();
    let env_names: Vec<&str> = spec.envs.keys().map(String::as_str).collect();
    if let Some(planner) = &spec.planner {
        if let Some(env) = &planner.env {
            if !spec.envs.contains_key(env) {
                e.unknown("planner.env", env, &env_names, "env");
            }
        } else if spec.envs.len() != 1 {
            e.push(format!(
                "`planner.env` is not set in {} and the spec declares {} envs: name the one the planner learns from",
                source("planner"),
                spec.envs.len()
            ));
        }
        if planner.teacher != "rule" && !spec.models.contains_key(&planner.teacher) {
            let mut names = vec!["rule"];
            names.extend(model_names.iter());
            e.unknown("planner.teacher", &planner.teacher, &names, "model");
        }
        if !(0.0..=1.0).contains(&planner.flaw_rate) {
            e.push(format!(
                "`planner.flaw_rate` = {} in {}: must be between 0 and 1",
                planner.flaw_rate,
                source("planner.flaw_rate")
            ));
        }
        if planner.seed_tasks == Some(0) {
            e.push(format!("`planner.seed_tasks` = 0 in {}: must be >= 1", source("planner.seed_tasks")));
        }
        for (key, m) in [("planner.model", &planner.model), ("planner.prompted", &planner.prompted)] {
            if let Some(m) = m {
                if !spec.models.contains_key(m) {
                    e.unknown(key, m, &model_names, "model");
                }
            }
        }
        if planner.train_tasks == Some(0) {
            e.bad("planner.train_tasks", "0".into(), "must be >= 1");
        }
        if planner.teacher_attempts == 0 {
            e.push(format!(
                "`planner.teacher_attempts` = 0 in {}: must be >= 1",
                source("planner.teacher_attempts")
            ));
        }
    }
    if let Some(j) = &spec.judge {
        match (j.kind, &j.model) {
            (crate::spec::JudgeKind::Model, None) => e.push(format!(
                "`[judge]` in {} needs `model` (a model name), or `kind = \"rule\"` on the built-in world",
                source("judge")
            )),
            (crate::spec::JudgeKind::Model, Some(m)) if !spec.models.contains_key(m) => e.unknown("judge.model", m, &model_names, "model"),
            (crate::spec::JudgeKind::Rule, Some(m)) => {
                e.bad("judge.model", format!("\"{m}\""), "not with `kind = \"rule\"` (the rule judge is no model): remove one")
            }
            _ => {}
        }
        if j.kind == crate::spec::JudgeKind::Rule {
            let envs = spec.eval.as_ref().map(|ev| ev.envs.clone()).unwrap_or_default();
            if let Some(env) = envs.iter().find(|n| spec.envs.get(*n).is_some_and(|s| !s.has_scripted_players())) {
                e.bad("judge.kind", "\"rule\"".into(), &format!("needs the built-in world, but eval env `{}` is not `kind = \"builtin\"`; judge it with a model", clip(env)));
            }
        }
        if j.attempts == 0 {
            e.bad("judge.attempts", "0".into(), "must be >= 1");
        }
        if j.tasks == Some(0) {
            e.bad("judge.tasks", "0".into(), "must be >= 1");
        }
        let both = spec.eval.as_ref().is_some_and(|ev| {
            ev.planners.contains(&crate::spec::PlannerVariant::Mpo) && ev.planners.contains(&crate::spec::PlannerVariant::Sft)
        });
        if !both {
            e.push(format!(
                "`[judge]` in {} compares MPO and SFT plans: `eval.planners` must list both \"sft\" and \"mpo\"",
                source("judge")
            ));
        }
    }
    if let Some(a) = &spec.agent_sft {
        if a.models.is_empty() {
            e.bad("agent_sft.models", "[]".into(), "name at least one `kind = \"local\"` model");
        }
        for (i, m) in a.models.iter().enumerate() {
            match spec.models.get(m) {
                None => e.unknown(&format!("agent_sft.models[{i}]"), m, &model_names, "model"),
                Some(ModelSpec::Openai(_)) => e.bad(
                    &format!("agent_sft.models[{i}]"),
                    format!("\"{m}\""),
                    "is a served (`openai`) model; only `kind = \"local\"` models are trained in-process",
                ),
                Some(_) => {}
            }
        }
        if let Some(env) = &a.env {
            if !spec.envs.contains_key(env) {
                e.unknown("agent_sft.env", env, &env_names, "env");
            }
        }
        if !(0.0..=1.0).contains(&a.plan_share) {
            e.bad("agent_sft.plan_share", a.plan_share.to_string(), "must be between 0 and 1");
        }
        if a.plan_share > 0.0 && spec.planner.is_none() {
            e.bad("agent_sft.plan_share", a.plan_share.to_string(), "needs seed plans: add a `[planner]` table");
        }
        if a.tasks == Some(0) {
            e.bad("agent_sft.tasks", "0".into(), "must be >= 1");
        }
        if !matches!(a.demonstrations.as_str(), "expert" | "follower" | "informed_follower") {
            e.bad("agent_sft.demonstrations", format!("\"{}\"", a.demonstrations), "allowed: \"expert\", \"follower\", \"informed_follower\"");
        }
        if !(0.0..=1.0).contains(&a.misleading_share) {
            e.bad("agent_sft.misleading_share", a.misleading_share.to_string(), "must be between 0 and 1");
        }
        for (key, on) in [("flawed_plans", a.flawed_plans), ("misleading_share", a.misleading_share > 0.0)] {
            if on && a.demonstrations == "expert" {
                e.bad(&format!("agent_sft.{key}"), if key == "flawed_plans" { "true".into() } else { a.misleading_share.to_string() }, "needs `demonstrations = \"follower\"` or `\"informed_follower\"` (the expert ignores plans)");
            } else if on && a.plan_share == 0.0 {
                e.bad(&format!("agent_sft.{key}"), if key == "flawed_plans" { "true".into() } else { a.misleading_share.to_string() }, "needs `plan_share` > 0 (no demonstration shows a plan)");
            }
        }
        if a.thoughts == super::Thoughts::Tracking {
            let candidates: Vec<&String> = match &a.env {
                Some(env) => vec![env],
                None => spec.envs.keys().collect(),
            };
            if !candidates.iter().any(|n| spec.envs.get(*n).is_some_and(EnvSpec::has_scripted_players)) {
                e.bad("agent_sft.thoughts", "\"tracking\"".into(), "needs the built-in world (`kind = \"builtin\"`): its thoughts are read off the game's state");
            }
        }
    }
    for (name, cfg) in [("sft", &spec.train.sft), ("dpo", &spec.train.dpo), ("rft", &spec.train.rft), ("agent_sft", &spec.train.agent_sft)] {
        if let Err(err) = cfg.validate() {
            e.nested(&format!("train.{name}"), &err);
        }
    }
    if let Some(explorer) = &spec.mpo.explorer {
        if !spec.models.contains_key(explorer) {
            e.unknown("mpo.explorer", explorer, &model_names, "model");
        }
    }

    if let Some(eval) = &spec.eval {
        for (i, a) in eval.agents.iter().enumerate() {
            if !spec.models.contains_key(a) {
                e.unknown(&format!("eval.agents[{i}]"), a, &model_names, "model");
            }
        }
        for (i, ename) in eval.envs.iter().enumerate() {
            match spec.envs.get(ename) {
                None => e.unknown(&format!("eval.envs[{i}]"), ename, &env_names, "env"),
                Some(env) => {
                    for s in &eval.splits {
                        if env.task_count(s).is_none() {
                            e.push(format!(
                                "`eval.splits` names split \"{}\" in {}, which env `{}` (kind `{}`) does not have; allowed: {}",
                                clip(s),
                                source("eval.splits"),
                                clip(ename),
                                env.kind(),
                                env.splits().iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
                            ));
                        }
                    }
                }
            }
        }
        if eval.tasks == Some(0) {
            e.bad("eval.tasks", "0".into(), "must be >= 1");
        }
        if eval.ablation_tasks == Some(0) {
            e.bad("eval.ablation_tasks", "0".into(), "must be >= 1");
        }
        let rule: Vec<&str> = eval
            .planners
            .iter()
            .filter(|p| matches!(p, crate::spec::PlannerVariant::Good | crate::spec::PlannerVariant::Misleading))
            .map(|p| if *p == crate::spec::PlannerVariant::Good { "good" } else { "misleading" })
            .collect();
        if let (Some(p), Some(env)) = (rule.first(), eval.envs.iter().find(|n| spec.envs.get(*n).is_some_and(|s| !s.has_scripted_players()))) {
            e.bad("eval.planners", format!("\"{p}\""), &format!("rule plans need the built-in world, but eval env `{}` is not `kind = \"builtin\"`", clip(env)));
        }
        if eval.concurrency == 0 {
            e.bad("eval.concurrency", "0".into(), "must be >= 1");
        }
        if !(0.0..=2.0).contains(&eval.temperature) {
            e.push(format!(
                "`eval.temperature` = {} in {}: must be between 0 and 2",
                eval.temperature,
                source("eval.temperature")
            ));
        }
    }

    if let Some(sweep) = &spec.sweep {
        for (key, values) in &sweep.vary {
            if values.is_empty() {
                e.push(format!("`sweep.vary.\"{}\"` in {}: needs at least one value", clip(key), source("sweep")));
            }
            if key.starts_with("sweep") || key.starts_with("experiment.name") || key == "extends" {
                e.push(format!("`sweep.vary.\"{}\"` in {}: this key cannot be swept", clip(key), source("sweep")));
            }
        }
    }

}

/// A message of a lower layer, at most a few lines long.
fn clip_long(text: &str) -> String {
    let max = 3 * super::load::CLIP_CHARS;
    match text.char_indices().nth(max) {
        None => text.to_string(),
        Some((cut, _)) => format!("{}…", &text[..cut]),
    }
}

/// Whether a request-body key names a credential (`api_key`, `Authorization`,
/// `access_token`, `client_secret`, `password`, …).
pub fn looks_like_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase().replace('-', "_");
    let k = k.as_str();
    ["api_key", "apikey", "secret", "password", "passwd", "authorization", "credential", "bearer"]
        .iter()
        .any(|w| k.contains(w))
        || k == "token"
        || k == "auth"
        || ["access_token", "auth_token", "api_token", "refresh_token", "session_token", "id_token"]
            .iter()
            .any(|w| k.ends_with(w))
}

/// Refuses credentials in a served model's `extra_body` (#22): the body is
/// part of the model's settings, which are written to `manifest.json` and
/// `index.json`; a key belongs in an environment variable named by
/// `api_key_env`.
fn check_secrets(spec: &Spec, e: &mut Errors<'_>) {
    fn walk(prefix: &str, map: &serde_json::Map<String, serde_json::Value>, depth: usize, found: &mut Vec<String>) {
        for (k, v) in map {
            let key = format!("{prefix}.{k}");
            if looks_like_secret(k) {
                found.push(key);
            } else if let (serde_json::Value::Object(inner), true) = (v, depth < 8) {
                walk(&key, inner, depth + 1, found);
            }
        }
    }
    for (mname, model) in &spec.models {
        let ModelSpec::Openai(cfg) = model else { continue };
        let mut found = Vec::new();
        walk(&format!("models.{mname}.extra_body"), &cfg.extra_body, 0, &mut found);
        for key in found {
            // Never echo the value: it is the secret.
            let m = format!(
                "`{}` in {}: looks like a credential; a spec must not hold secrets (its settings are \
                 written to `manifest.json` and `index.json`)",
                clip(&key),
                (e.source)(&key)
            );
            e.push(m);
            e.hint = Some(format!(
                "put the key in an environment variable and name that variable in `models.{}.api_key_env` \
                 (sent as `Authorization: Bearer …`)",
                clip(mname)
            ));
        }
    }
}
