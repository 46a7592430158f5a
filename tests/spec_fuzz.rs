//! Spec fuzzing (#22): mutations of `tests/fixtures/specs/small.toml` —
//! a key set to a huge number, a wrong type, a long string or an odd name,
//! an unknown key, a sweep, a report table — go through the library's load,
//! validation, plan and `--dry-run` rendering in-process (a handful through
//! the binary). Every one either plans or is a user error whose message is
//! short and names the mutated key; none panics, hangs or grows memory.

mod common;

use std::path::Path;

use mpo_run::plan::{self, Plan};
use mpo_run::spec::{self, LoadOptions};
use mpo_run::store::Store;
use proptest::prelude::*;

/// Cases per run: 300 in CI; `SPEC_FUZZ_CASES=N` for a longer hunt.
fn fuzz_cases() -> u32 {
    std::env::var("SPEC_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(300)
}

/// Longest message a user error may print.
const MAX_MESSAGE: usize = 2_000;

/// Keys of the small spec (and a few it leaves at their defaults).
const KEYS: &[&str] = &[
    "experiment.name",
    "experiment.seed",
    "experiment.description",
    "experiment.env_retries",
    "envs.household.kind",
    "envs.household.max_steps",
    "envs.household.tasks.train",
    "envs.household.tasks",
    "envs.household",
    "planner.teacher",
    "planner.flaw_rate",
    "planner.seed_tasks",
    "planner.teacher_attempts",
    "planner.max_tokens",
    "planner.train_tasks",
    "planner",
    "mpo.m",
    "mpo.n",
    "mpo.beta",
    "mpo.sample_temperature",
    "mpo.explorer_temperature",
    "mpo.insertion",
    "mpo",
    "train.sft.epochs",
    "train.sft.batch_size",
    "train.sft.max_len",
    "train.dpo.lr",
    "extends",
];

/// Tables an unknown key is added to.
const TABLES: &[&str] = &["", "experiment", "envs.household", "planner", "mpo", "train.sft"];

#[derive(Clone, Debug)]
enum Mutation {
    /// Set `key` to a value.
    Set(&'static str, toml::Value),
    /// Add an unknown key to a table.
    Unknown(&'static str, String),
    /// A `[sweep]` with this mode and these `mpo.m` values (maybe none).
    Sweep(&'static str, Vec<i64>),
    /// A `[[report.table]]` or `[[report.figure]]` with this name.
    ReportName(bool, String),
    /// A model with this name, or one with a credential in its body.
    Model(String, bool),
}

impl Mutation {
    /// The key the error must name.
    fn key(&self) -> String {
        match self {
            Mutation::Set(k, _) => k.to_string(),
            Mutation::Unknown(t, k) if t.is_empty() => k.clone(),
            Mutation::Unknown(t, k) => format!("{t}.{k}"),
            Mutation::Sweep(..) => "sweep".into(),
            Mutation::ReportName(true, _) => "report.table".into(),
            Mutation::ReportName(false, _) => "report.figure".into(),
            Mutation::Model(name, _) => format!("models.{name}"),
        }
    }
}

fn value() -> impl Strategy<Value = toml::Value> {
    prop_oneof![
        prop_oneof![
            Just(0i64),
            Just(-1),
            Just(4_294_967_295),
            Just(i64::MAX),
            Just(1_001),
            any::<i64>(),
            0i64..10
        ]
        .prop_map(toml::Value::Integer),
        prop_oneof![Just(f64::NAN), Just(f64::INFINITY), Just(-0.5), Just(1e300), any::<f64>()].prop_map(toml::Value::Float),
        any::<bool>().prop_map(toml::Value::Boolean),
        odd_name().prop_map(toml::Value::String),
        (1_000usize..200_000).prop_map(|n| toml::Value::String("y".repeat(n))),
        prop::collection::vec(any::<i64>(), 0..4).prop_map(|v| toml::Value::Array(v.into_iter().map(toml::Value::Integer).collect())),
        Just(toml::Value::Table(toml::Table::from_iter([("zz".to_string(), toml::Value::Integer(1))]))),
    ]
}

/// Names users write, and names that are paths or not names at all.
fn odd_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("../x".to_string()),
        Just("../../etc/passwd".to_string()),
        Just("/abs/path".to_string()),
        Just(".hidden".to_string()),
        Just("..".to_string()),
        Just(String::new()),
        Just("a b".to_string()),
        Just("naïve".to_string()),
        Just("rule".to_string()),
        "[a-z][a-z0-9_.-]{0,12}",
        "\\PC{0,20}",
        (200usize..5_000).prop_map(|n| "n".repeat(n)),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        6 => (prop::sample::select(KEYS), value()).prop_map(|(k, v)| Mutation::Set(k, v)),
        1 => (prop::sample::select(TABLES), "zz[a-z]{1,8}").prop_map(|(t, k)| Mutation::Unknown(t, k)),
        1 => (prop::sample::select(&["zip", "grid", "one-at-a-time"][..]), prop::collection::vec(prop_oneof![1i64..6, Just(0), Just(4_294_967_295)], 0..4))
            .prop_map(|(m, v)| Mutation::Sweep(m, v)),
        1 => (any::<bool>(), odd_name()).prop_map(|(t, n)| Mutation::ReportName(t, n)),
        1 => (prop_oneof![odd_name(), Just("agent".to_string())], any::<bool>()).prop_map(|(n, s)| Mutation::Model(n, s)),
    ]
}

/// Puts `value` at the dotted `path` of `table`, making tables on the way.
fn set_path(table: &mut toml::Table, path: &str, value: toml::Value) {
    let mut parts: Vec<&str> = path.split('.').collect();
    let last = parts.pop().unwrap();
    let mut cur = table;
    for p in parts {
        let entry = cur.entry(p.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        cur = entry.as_table_mut().unwrap();
    }
    cur.insert(last.to_string(), value);
}

fn mutated(m: &Mutation) -> String {
    let base = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/specs/small.toml")).unwrap();
    let mut t: toml::Table = toml::from_str(&base).unwrap();
    match m {
        Mutation::Set(k, v) => set_path(&mut t, k, v.clone()),
        Mutation::Unknown(tab, k) => {
            let path = if tab.is_empty() { k.clone() } else { format!("{tab}.{k}") };
            set_path(&mut t, &path, toml::Value::Integer(1));
        }
        Mutation::Sweep(mode, values) => {
            set_path(&mut t, "sweep.mode", toml::Value::String(mode.to_string()));
            let mut vary = toml::Table::new();
            if !values.is_empty() {
                vary.insert("mpo.m".into(), toml::Value::Array(values.iter().map(|&v| toml::Value::Integer(v)).collect()));
            }
            set_path(&mut t, "sweep.vary", toml::Value::Table(vary));
        }
        Mutation::ReportName(table, name) => {
            let mut item = toml::Table::new();
            item.insert("name".into(), toml::Value::String(name.clone()));
            if *table {
                item.insert("metric".into(), "avg_reward".into());
                item.insert("rows".into(), toml::Value::Array(vec!["agent".into()]));
            } else {
                item.insert("kind".into(), "bars".into());
            }
            let key = if *table { "table" } else { "figure" };
            set_path(&mut t, &format!("report.{key}"), toml::Value::Array(vec![toml::Value::Table(item)]));
        }
        Mutation::Model(name, secret) => {
            let mut model = toml::Table::new();
            model.insert("kind".into(), "openai".into());
            model.insert("base_url".into(), "http://127.0.0.1:8000/v1".into());
            model.insert("model".into(), "m".into());
            if *secret {
                let mut body = toml::Table::new();
                body.insert("Authorization".into(), "Bearer sk-123".into());
                model.insert("extra_body".into(), toml::Value::Table(body));
            }
            let mut models = toml::Table::new();
            models.insert(name.clone(), toml::Value::Table(model));
            t.insert("models".into(), toml::Value::Table(models));
        }
    }
    toml::to_string(&t).unwrap()
}

/// Load, validate, plan and render as `--dry-run` does: `Ok(dry run)` or
/// `Err(user error message)`.
fn dry_run(dir: &Path, text: &str) -> Result<String, String> {
    let path = dir.join("fuzz.toml");
    std::fs::write(&path, text).unwrap();
    let opts = LoadOptions { env: Some(vec![]), ..Default::default() };
    let variants = spec::expand(&path, &opts).map_err(|e| e.to_string())?;
    let plan = Plan::build(&variants, &mpo_run::mpo::drafts).map_err(|e| format!("{e:#}"))?;
    let store = Store::open_read_only(dir.join("results"));
    plan::render(&plan, &store, &[]).map_err(|e| format!("{e:#}"))
}

fn names_key(message: &str, key: &str) -> bool {
    let parent = key.rsplit_once('.').map(|(p, _)| p);
    message.contains(&format!("`{key}")) || parent.is_some_and(|p| message.contains(&format!("`{p}")))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: fuzz_cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_specs_plan_or_fail_with_a_short_message_naming_the_key(m in mutation()) {
        let dir = tempfile::tempdir().unwrap();
        let text = mutated(&m);
        match dry_run(dir.path(), &text) {
            Ok(_) => {}
            Err(message) => {
                prop_assert!(message.len() < MAX_MESSAGE, "{} bytes: {}", message.len(), &message[..500.min(message.len())]);
                prop_assert!(names_key(&message, &m.key()), "{m:?}\ndoes not name `{}`:\n{message}", m.key());
                prop_assert!(!message.contains("sk-123"), "a secret is echoed: {message}");
            }
        }
    }
}

/// A handful through the binary: exit 0 or 2, a short stderr that names the
/// key.
#[test]
fn mutated_specs_through_the_binary() {
    let cases = [
        Mutation::Set("mpo.m", toml::Value::Integer(4_294_967_295)),
        Mutation::Set("envs.household.tasks.train", toml::Value::Integer(i64::MAX)),
        Mutation::Set("experiment.name", toml::Value::String("z".repeat(100_000))),
        Mutation::Sweep("zip", vec![]),
        Mutation::ReportName(true, "../x".into()),
        Mutation::Set("mpo.beta", toml::Value::Float(0.2)),
    ];
    let ctx = common::TestContext::new();
    for m in &cases {
        ctx.write("fuzz.toml", &mutated(m));
        let out = ctx.run(&["--dry-run", "fuzz.toml", "--results", "r"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        match out.status.code() {
            Some(0) => assert!(matches!(m, Mutation::Set("mpo.beta", _)), "{m:?} planned"),
            Some(2) => {
                assert!(stderr.len() < MAX_MESSAGE, "{m:?}: {} bytes", stderr.len());
                assert!(names_key(&stderr, &m.key()), "{m:?}:\n{stderr}");
                assert!(!stderr.contains("--set"), "no --set was given:\n{stderr}");
            }
            other => panic!("{m:?}: exit {other:?}\n{stderr}"),
        }
    }
}
