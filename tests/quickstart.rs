//! The quickstart spec (experiments/quickstart.toml) end to end, reduced
//! with `--set` to a few tasks and one epoch per training so that it runs
//! in CI: every stage runs from an empty results dir, artifacts have the
//! row counts the spec implies, the report is written; and a run killed
//! (SIGKILL) in three different stages (agent SFT after a checkpoint,
//! Monte Carlo rollouts, evaluation) and rerun ends with the same results as
//! an uninterrupted run.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::TestContext;
use serde_json::Value;

/// The reduced run: scale knobs only, never the method.
const REDUCED: &[&str] = &[
    "--set", "envs.household.tasks.train=24",
    "--set", "envs.household.tasks.seen=3",
    "--set", "envs.household.tasks.unseen=3",
    "--set", "planner.train_tasks=6",
    "--set", "mpo.m=2",
    "--set", "mpo.n=2",
    "--set", "train.agent_sft.epochs=1",
    "--set", "train.sft.epochs=1",
    "--set", "train.dpo.epochs=1",
    "--set", "train.rft.epochs=1",
    "--set", "train.agent_sft.save_every=1",
    "--set", "train.agent_sft.batch_size=4",
    "--set", "eval.random_baseline=2",
    "--set", "eval.insertion=[\"instruction\", \"observation\"]",
    "--set", "models.agent.max_tokens=48",
];

fn setup() -> TestContext {
    let ctx = TestContext::new();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/quickstart.toml");
    std::fs::copy(src, ctx.path("quickstart.toml")).unwrap();
    ctx
}

fn args(extra: &[&'static str]) -> Vec<&'static str> {
    let mut v = vec!["quickstart.toml"];
    v.extend_from_slice(REDUCED);
    v.extend_from_slice(extra);
    v
}

fn manifests(ctx: &TestContext) -> Vec<Value> {
    let mut out = Vec::new();
    let Ok(stages) = std::fs::read_dir(ctx.path("results/artifacts")) else { return out };
    for stage in stages.flatten() {
        for art in std::fs::read_dir(stage.path()).unwrap().flatten() {
            if let Ok(text) = std::fs::read_to_string(art.path().join("manifest.json")) {
                out.push(serde_json::from_str(&text).unwrap());
            }
        }
    }
    out
}

/// Rows of a collated table without the columns that measure time (or
/// say when an episode finished).
fn rows_without_timing(path: &Path) -> Vec<String> {
    let df = mpo_run::store::table::read_parquet(path).expect("read parquet");
    let mut rows: Vec<String> = mpo_run::store::table::frame_to_json(&df)
        .unwrap()
        .into_iter()
        .map(|mut v| {
            if let Some(o) = v.as_object_mut() {
                o.remove("wall_ms");
                o.remove("finished_at");
                o.remove("tokens_per_s");
                // When a step finished: the two runs ran at different times.
                o.remove("finished_at");
            }
            v.to_string()
        })
        .collect();
    rows.sort();
    rows
}

#[test]
fn reduced_quickstart_runs_every_stage_with_the_implied_row_counts() {
    let ctx = setup();
    let out = ctx.run(&args(&[]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ms = manifests(&ctx);
    let count = |stage: &str| ms.iter().filter(|m| m["stage"] == stage).count();
    let rows = |stage: &str, file: &str| -> Vec<u64> {
        ms.iter().filter(|m| m["stage"] == stage).map(|m| m["rows"][file].as_u64().unwrap_or(u64::MAX)).collect()
    };
    for (stage, n) in [
        ("expert", 1),
        ("seed_plans", 1),
        ("init_model", 2),
        ("agent_sft", 1),
        ("sft", 1),
        ("sample_plans", 1),
        ("mc_rollouts", 1),
        ("pairs", 1),
        ("dpo", 1),
        ("rft", 1),
        ("baseline", 2),
        ("test_plans", 3 * 2),
        // The premise check's rule plans: good and misleading per split.
        ("rule_plans", 2 * 2),
        // Per split: none; sft/rft/mpo at two positions; good/misleading
        // at the instruction only.
        ("eval", 2 * (1 + 3 * 2 + 2)),
        // Per split: every planner variant and none; and the sampled train
        // plans once (the Monte Carlo signal check).
        ("follower", 2 * 6 + 1),
        ("judge", 2),
    ] {
        assert_eq!(count(stage), n, "`{stage}` artifacts");
    }
    assert_eq!(rows("expert", "trajectories.jsonl"), vec![24]);
    assert_eq!(rows("seed_plans", "seed_set.jsonl"), vec![24]);
    assert_eq!(rows("sample_plans", "plans.jsonl"), vec![6 * 2], "tasks × M");
    assert_eq!(rows("mc_rollouts", "episodes.parquet"), vec![6 * 2 * 2], "tasks × M × N");
    assert!(rows("pairs", "pairs.parquet")[0] <= 6);
    assert_eq!(rows("baseline", "episodes.parquet"), vec![3 * 2, 3 * 2]);
    assert!(rows("test_plans", "plans.parquet").iter().all(|&n| n == 3));
    assert!(rows("eval", "episodes.parquet").iter().all(|&n| n == 3));
    let mut follower = rows("follower", "episodes.parquet");
    follower.sort();
    assert_eq!(follower, [vec![3; 12], vec![6 * 2]].concat(), "one scripted episode per test task, and per sampled plan");
    assert!(rows("rule_plans", "plans.parquet").iter().all(|&n| n == 3));
    assert_eq!(rows("judge", "judge.parquet"), vec![3 * 4, 3 * 4], "the rule judge: tasks × dimensions");
    assert_eq!(rows("sft", "train_log.parquet"), vec![24u64.div_ceil(8)], "24 seed plans, batch 8, 1 epoch");
    // Whole episodes and single turns: more examples than episodes, so
    // more optimizer steps than 24 episodes in batches of 4 would take.
    assert!(rows("agent_sft", "train_log.parquet")[0] > 24u64.div_ceil(4));

    let index = std::fs::read_to_string(ctx.path("reports/quickstart/index.md")).unwrap();
    for name in [
        "table2", "table3", "table4", "table5", "table6", "plan_quality", "figure3", "figure6",
        // #26: a loss curve per training stage (`rft` and `dpo` train only
        // when the reduced run finds pairs), and Figure 3's error bars.
        "## Training", "training_agent_sft", "training_sft", "error bars: 95% intervals",
        // #25: the premise checks before any claim, the rule judge named
        // as such in Figure 6, and the link to Figure 5's spec.
        "## Premise checks", "### 1. Plan sensitivity", "### 2. Monte Carlo signal", "### 3. Planner drift under DPO",
        "judge `rule`: a rule judge, not a model", "figure5-quickstart",
    ] {
        assert!(index.contains(name), "the report links {name}:\n{index}");
    }
    assert!(index.contains("**follower on household/seen**"), "the findings compare the plans by the scripted follower:\n{index}");
    for f in ["table2.md", "table2.tex", "table2.csv", "plan_quality.md", "figure3.svg", "figure3.png", "training_agent_sft.svg", "training_sft.png"] {
        assert!(ctx.path(&format!("reports/quickstart/{f}")).exists(), "{f}");
    }

    // A second run does nothing.
    let again = ctx.run(&args(&[]));
    let e = String::from_utf8_lossy(&again.stderr).to_string();
    assert!(again.status.success() && e.contains("0 stages ran"), "{e}");
}

/// Kills the run (SIGKILL) once `ready` holds, then reruns it to the end.
fn kill_when(ctx: &TestContext, what: &str, ready: impl Fn(&TestContext) -> bool) {
    let mut child = ctx
        .command(&args(&[]))
        .env("MPORUN_TEST_ITEM_DELAY_MS", "5")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !ready(ctx) {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the run ended ({status}) before it reached {what}");
        }
        assert!(start.elapsed() < Duration::from_secs(600), "never reached {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// A training of `stage` has saved a checkpoint.
fn checkpointed(ctx: &TestContext, stage: &str) -> bool {
    let Ok(dirs) = std::fs::read_dir(ctx.path(&format!("results/train/{stage}"))) else { return false };
    dirs.flatten().any(|d| d.path().join("latest").exists())
}

fn committed(ctx: &TestContext, stage: &str) -> bool {
    manifests(ctx).iter().any(|m| m["stage"] == stage)
}

#[test]
fn sigkill_in_three_stages_then_rerun_gives_the_same_results() {
    let reference = setup();
    let out = reference.run(&args(&[]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let ctx = setup();
    let evals = |c: &TestContext| manifests(c).iter().filter(|m| m["stage"] == "eval").count();
    // 1. Mid-training: the agent's SFT has saved a checkpoint.
    kill_when(&ctx, "agent_sft", |c| checkpointed(c, "agent_sft"));
    // 2. Mid-rollouts: some episodes journaled, `mc_rollouts` not committed.
    kill_when(&ctx, "mc_rollouts", |c| {
        committed(c, "agent_sft") && common::journal_lines(c, "episodes") >= 3 && !committed(c, "mc_rollouts")
    });
    // 3. Mid-evaluation: some evaluation cells committed, not all.
    kill_when(&ctx, "eval", |c| committed(c, "mc_rollouts") && (1..2 * (1 + 3 * 2)).contains(&evals(c)));
    let out = ctx.run(&args(&[]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    for table in ["episodes", "plans", "pairs", "train_log"] {
        let a = rows_without_timing(&reference.path(&format!("results/quickstart/{table}.parquet")));
        let b = rows_without_timing(&ctx.path(&format!("results/quickstart/{table}.parquet")));
        assert_eq!(a.len(), b.len(), "{table}: row counts differ after kills and a rerun");
        assert!(a == b, "{table}: rows differ after kills and a rerun");
    }
}

/// Lines of every item journal, per namespace.
fn journals(ctx: &TestContext) -> Vec<(String, usize)> {
    let mut out: Vec<(String, usize)> = std::fs::read_dir(ctx.path("results/items"))
        .unwrap()
        .flatten()
        .map(|e| {
            let ns = e.file_name().to_string_lossy().into_owned();
            let n = common::journal_lines(ctx, &ns);
            (ns, n)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn two_concurrent_runs_on_one_dir_share_the_work_and_match_a_single_run() {
    let reference = setup();
    let single = reference.run(&args(&[]));
    let single_log = String::from_utf8_lossy(&single.stderr).to_string();
    assert!(single.status.success(), "{single_log}");

    let ctx = setup();
    let spawn = || ctx.command(&args(&[])).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let (la, lb) = (String::from_utf8_lossy(&a.stderr).to_string(), String::from_utf8_lossy(&b.stderr).to_string());
    assert!(a.status.success(), "first run: {la}");
    assert!(b.status.success(), "second run: {lb}");

    for table in ["episodes", "plans", "pairs", "train_log"] {
        let x = rows_without_timing(&reference.path(&format!("results/quickstart/{table}.parquet")));
        let y = rows_without_timing(&ctx.path(&format!("results/quickstart/{table}.parquet")));
        assert_eq!(x.len(), y.len(), "{table}: row counts differ from a single run");
        assert!(x == y, "{table}: rows differ from a single run");
    }
    // Each node ran in one of the two processes (the other waited for it
    // and found it committed) ...
    let ran = |log: &str| log.matches(": ran in").count();
    assert_eq!(ran(&la) + ran(&lb), ran(&single_log), "nodes run:\n--- first\n{la}\n--- second\n{lb}");
    assert!(ran(&la) > 0 && ran(&lb) > 0, "both processes did some of the work:\n{la}\n{lb}");
    // ... and no item was computed twice, even where two different nodes
    // share items (evaluation cells whose planners wrote the same plans).
    assert_eq!(journals(&ctx), journals(&reference), "journal lines per namespace");
    assert!(std::fs::read_dir(ctx.path("results/tmp")).unwrap().next().is_none(), "both removed their temp dirs");
}
