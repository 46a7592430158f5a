//! Many processes on one results dir (#22): concurrent runs share the
//! work through node locks, a `--shard` job array runs side by side, a run
//! never removes another live process's temp files, and `--force` keeps
//! what it recomputes.

#[path = "support/fake_openai.rs"]
mod fake_openai;
#[path = "support/scripted.rs"]
mod scripted;
mod common;

use std::process::{Child, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::{journal_lines, run_bin, sorted_rows, TestContext};
use fake_openai::{FakeOptions, FakeServer};
use mpo_run::store::table::{read_rows, EpisodeRow};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// `mpo-run ARGS` started in the background, items slowed so that
/// concurrent runs overlap.
fn spawn(ctx: &TestContext, args: &[&str]) -> Child {
    ctx.command(args)
        .env("MPORUN_TEST_ITEM_DELAY_MS", "20")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mpo-run")
}

fn assert_same_tables(a: &TestContext, b: &TestContext) {
    for table in ["episodes", "plans"] {
        let path = format!("results/small/{table}.parquet");
        assert_eq!(sorted_rows(&a.path(&path)), sorted_rows(&b.path(&path)), "{table} rows differ");
    }
}

#[test]
fn two_concurrent_runs_share_the_work_and_match_a_single_run() {
    let reference = TestContext::new();
    let out = reference.run(&["small.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));

    let ctx = TestContext::new();
    let (a, b) = (spawn(&ctx, &["small.toml"]), spawn(&ctx, &["small.toml"]));
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success(), "first run: {}", stderr(&a));
    assert!(b.status.success(), "second run: {}", stderr(&b));
    assert_same_tables(&reference, &ctx);
    // Each node ran in one process; the other found it committed.
    let ran = [&a, &b].iter().map(|o| stderr(o).matches(": ran in").count()).sum::<usize>();
    assert_eq!(ran, 2, "each of the 2 nodes ran once:\n{}\n{}", stderr(&a), stderr(&b));
    // No item was computed twice: the journals hold one line per item.
    for namespace in ["expert", "seed_plans"] {
        assert_eq!(journal_lines(&ctx, namespace), journal_lines(&reference, namespace), "{namespace} items journaled once");
    }
    assert!(
        std::fs::read_dir(ctx.path("results/tmp")).unwrap().next().is_none(),
        "both processes removed their temp dirs"
    );
}

#[test]
fn a_shard_job_array_on_one_dir_then_a_plain_run_equals_a_plain_run() {
    let reference = TestContext::new();
    assert!(reference.run(&["small.toml"]).status.success());

    let ctx = TestContext::new();
    let shards = [spawn(&ctx, &["small.toml", "--shard", "0/2"]), spawn(&ctx, &["small.toml", "--shard", "1/2"])];
    for (i, s) in shards.into_iter().enumerate() {
        let out = s.wait_with_output().unwrap();
        assert!(out.status.success(), "shard {i}: {}", stderr(&out));
        assert!(stderr(&out).contains("shard done"), "shard {i}: {}", stderr(&out));
    }
    assert_eq!(journal_lines(&ctx, "expert"), 40, "the shards are disjoint and complete");
    let all = ctx.run(&["small.toml"]);
    let e = stderr(&all);
    assert!(all.status.success(), "{e}");
    assert!(e.contains("`expert[household/train]`: ran") && e.contains("0 items computed, 40 reused"), "{e}");
    assert_same_tables(&reference, &ctx);
    assert_eq!(journal_lines(&ctx, "expert"), 40);
}

#[test]
fn a_run_removes_only_temp_dirs_no_live_process_owns() {
    use fs2::FileExt;
    let ctx = TestContext::new();
    let tmp = ctx.path("results/tmp");
    // A live process's dir (this test holds its lock) and a dead one's.
    let live = tmp.join("proc-1-live-0");
    let dead = tmp.join("proc-2-dead-0");
    for d in [&live, &dead] {
        std::fs::create_dir_all(d.join("expert-partial")).unwrap();
        std::fs::write(d.join("lock"), "").unwrap();
    }
    let lock = std::fs::File::open(live.join("lock")).unwrap();
    lock.try_lock_exclusive().unwrap();
    let out = ctx.run(&["small.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(live.join("expert-partial").exists(), "a live process's temp files are kept");
    assert!(!dead.exists(), "a dead process's temp dir is removed");
    drop(lock);
}

#[test]
fn a_second_run_waits_for_the_lock_and_reports_cached() {
    let ctx = TestContext::new();
    let first = ctx
        .command(&["small.toml"])
        .env("MPORUN_TEST_ITEM_DELAY_MS", "150")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Start the second once the first is inside `expert` (holding its lock).
    let start = std::time::Instant::now();
    while journal_lines(&ctx, "expert") < 2 {
        assert!(start.elapsed() < std::time::Duration::from_secs(60), "the first run never got going");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let second = ctx.command(&["-v", "small.toml"]).output().unwrap();
    let first = first.wait_with_output().unwrap();
    assert!(first.status.success(), "{}", stderr(&first));
    let e = stderr(&second);
    assert!(second.status.success(), "{e}");
    assert!(e.contains("`expert[household/train]` waits: process "), "{e}");
    assert!(e.contains("is computing it (lock `"), "{e}");
    assert!(e.contains("0 stages ran, 2 cached"), "{e}");
    assert_eq!(journal_lines(&ctx, "expert"), 40);
}

fn eval_spec(base_url: &str) -> String {
    format!(
        r#"
[experiment]
name = "forcetest"
seed = 1

[models.agent]
kind = "openai"
base_url = "{base_url}"
model = "agent"

[envs.household]
kind = "builtin"
tasks = {{ train = 20 }}

[eval]
agents = ["agent"]
envs = ["household"]
splits = ["seen"]
tasks = 4
planners = ["none"]
concurrency = 4
"#
    )
}

fn eval_rewards(ctx: &TestContext) -> Vec<(String, f64)> {
    let rows: Vec<EpisodeRow> = read_rows(&ctx.path("results/forcetest/episodes.parquet")).unwrap();
    let mut out: Vec<(String, f64)> = rows.into_iter().filter(|r| r.stage == "eval").map(|r| (r.task_id, r.reward)).collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_eval_keeps_the_new_replies_and_the_journal_agrees() {
    // The server's replies change between runs: first a lazy agent, then
    // an expert one.
    let expert = Arc::new(AtomicBool::new(false));
    let switch = expert.clone();
    let server = FakeServer::start(FakeOptions::default().responder(move |m| {
        if switch.load(Ordering::SeqCst) {
            scripted::expert_agent(m)
        } else {
            scripted::lazy_agent(m)
        }
    }))
    .await;
    let ctx = TestContext::new();
    ctx.write("eval.toml", &eval_spec(&server.base_url()));
    let out = run_bin(&ctx, &["eval.toml"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let old = eval_rewards(&ctx);
    assert_eq!(old.len(), 4);
    assert!(old.iter().all(|(_, r)| *r == 0.0), "{old:?}");

    expert.store(true, Ordering::SeqCst);
    let cached = run_bin(&ctx, &["eval.toml"]).await;
    assert!(stderr(&cached).contains("nothing to do"), "{}", stderr(&cached));
    assert_eq!(eval_rewards(&ctx), old, "a cached run keeps the old replies");

    let forced = run_bin(&ctx, &["eval.toml", "--force", "eval"]).await;
    let e = stderr(&forced);
    assert!(forced.status.success(), "{e}");
    assert!(e.contains("4 items computed, 0 reused"), "{e}");
    let new = eval_rewards(&ctx);
    assert_eq!(new.len(), 4);
    assert!(new.iter().all(|(_, r)| *r == 1.0), "the forced run's episodes are kept: {new:?}");
    assert!(
        std::fs::read_dir(ctx.path("results/artifacts/eval")).unwrap().flatten().all(|e| !e.file_name().to_string_lossy().starts_with('.')),
        "no backup is left behind"
    );

    // The journal agrees with the artifact: rebuilt from the journal alone
    // (server switched back), the artifact holds the same new episodes.
    expert.store(false, Ordering::SeqCst);
    std::fs::remove_dir_all(ctx.path("results/artifacts/eval")).unwrap();
    let rebuilt = run_bin(&ctx, &["eval.toml"]).await;
    let e = stderr(&rebuilt);
    assert!(rebuilt.status.success(), "{e}");
    assert!(e.contains("0 items computed, 4 reused"), "{e}");
    assert_eq!(eval_rewards(&ctx), new);
}
