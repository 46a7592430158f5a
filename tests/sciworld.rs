//! ScienceWorld through the bridge: task lists and spec (no simulator), then
//! the real simulator (needs `pip install scienceworld==1.2.3` and Java 17):
//! gold replays of every task type on the dev list, the consecutive-invalid
//! rule, a worker killed, hung or answering garbage mid-episode, a retried
//! episode counted once, no process left behind, and the `expert` stage
//! through `mpo-run` (a worker killed by pid mid-run, Ctrl-C and SIGKILL of
//! the runner, resumed runs that lose and duplicate nothing).

mod common;
#[path = "support/fake_openai.rs"]
mod fake_openai;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::live_processes;
use mpo_run::env::sciworld::{self, gold_trajectory, tasks, SciworldEnv, SciworldEnvSpec};
use mpo_run::env::{Environment, TaskInfo};

fn spec(workers: usize) -> SciworldEnvSpec {
    SciworldEnvSpec { workers, ..Default::default() }
}

fn env(workers: usize) -> Arc<SciworldEnv> {
    sciworld::build(&spec(workers)).unwrap_or_else(|e| panic!("ScienceWorld is not installed: {e}"))
}

/// Processes whose process group is `pgid`.
fn group_members(pgid: i32) -> Vec<i32> {
    live_processes().into_iter().filter(|p| p.pgrp == pgid).map(|p| p.pid).collect()
}

async fn wait_gone(pgids: &[i32]) -> Vec<i32> {
    let t0 = Instant::now();
    loop {
        let left: Vec<i32> = pgids.iter().flat_map(|&g| group_members(g)).collect();
        if left.is_empty() || t0.elapsed() > Duration::from_secs(10) {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn task(split: &str, release_name: &str) -> TaskInfo {
    let t = tasks::split_tasks(split).unwrap().iter().find(|t| t.release_name == release_name).unwrap();
    TaskInfo {
        task_id: t.task_id(),
        split: split.into(),
        task_type: t.name.clone(),
        icl_key: "default".into(),
        max_steps: t.max_steps,
    }
}

#[test]
fn task_lists_match_the_release() {
    let sizes: Vec<usize> = tasks::SPLITS.iter().map(|s| tasks::split_tasks(s).unwrap().len()).collect();
    assert_eq!(sizes, vec![1483, 194, 211]);
    assert_eq!(tasks::split_tasks("dev").unwrap().len(), 194);
    assert_eq!(tasks::split_tasks("test").unwrap().len(), 211);
    for s in tasks::SPLITS {
        let list = tasks::split_tasks(s).unwrap();
        let mut ids: Vec<String> = list.iter().map(|t| t.task_id()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), list.len(), "{s}: duplicate ids");
        for t in list {
            assert_eq!(tasks::parse_task_id(&t.task_id()).as_ref(), Some(t));
        }
    }
    let boil = &tasks::split_tasks("unseen").unwrap()[0];
    assert_eq!((boil.task_id().as_str(), boil.max_steps), ("boil/0_21", 100));
    // Ids are text: `0_21` is not `0_2`, `02_1` or `boil/021`.
    assert!(tasks::parse_task_id("boil/0_2").is_some());
    assert!(tasks::parse_task_id("boil/00_21").is_none());
    assert!(tasks::parse_task_id("boil/021").is_none());
    assert!(tasks::parse_task_id("melt/0_21").is_none());
    let m = tasks::split_tasks("seen").unwrap().iter().find(|t| t.release_name.starts_with("task-10-measure")).unwrap();
    assert_eq!((m.name.as_str(), m.max_steps), ("measure-melting-point-known-substance", 120));
}

/// What the release's lists hold, precisely: ScienceWorld has 30 tasks in
/// 10 topics (its `tasks.json` ids `1-1` … `10-2`), but every list holds
/// the same 24 tasks under 9 release prefixes (`task-1`, `-2`, `-2a`, `-3`
/// … `-7`, `-10`), which are 8 of the simulator's topics: no task of topic
/// 9 (inclined planes: the release's `task-8-*`) or topic 10 (Mendelian
/// genetics: `task-9-*`), and not `measure-melting-point-unknown-substance`
/// (2-3, absent from `taskname2id.json` too).
#[test]
fn task_lists_hold_24_tasks_of_8_simulator_topics() {
    for s in tasks::SPLITS {
        let list = tasks::split_tasks(s).unwrap();
        let names: BTreeSet<&str> = list.iter().map(|t| t.name.as_str()).collect();
        let prefixes: BTreeSet<String> = list.iter().map(|t| t.topic()).collect();
        let topics: BTreeSet<u32> = list.iter().map(|t| t.package_topic()).collect();
        assert_eq!(names.len(), 24, "{s}: {names:?}");
        assert_eq!(
            prefixes.iter().map(String::as_str).collect::<Vec<_>>(),
            ["task-1", "task-10", "task-2", "task-2a", "task-3", "task-4", "task-5", "task-6", "task-7"],
            "{s}"
        );
        assert_eq!(topics.into_iter().collect::<Vec<_>>(), (1..=8).collect::<Vec<_>>(), "{s}");
        let absent: Vec<&str> =
            tasks::PACKAGE_TASK_IDS.iter().map(|(n, _)| *n).filter(|n| !names.contains(n)).collect();
        assert_eq!(
            absent,
            [
                "measure-melting-point-unknown-substance",
                "inclined-plane-determine-angle",
                "inclined-plane-friction-named-surfaces",
                "inclined-plane-friction-unnamed-surfaces",
                "mendelian-genetics-known-plant",
                "mendelian-genetics-unknown-plant",
            ],
            "{s}"
        );
    }
}

/// The embedded table of the simulator's task ids is the installed
/// package's `tasks.json`.
#[test]
fn package_task_ids_match_the_installed_simulator() {
    let out = std::process::Command::new("python3")
        .args(["-c", "import json, scienceworld.constants as c; print(json.dumps([[t['task_name'], t['task_id']] for t in c.TASKS]))"])
        .output()
        .expect("python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got: Vec<(String, String)> = serde_json::from_slice(&out.stdout).unwrap();
    let want: Vec<(String, String)> = tasks::PACKAGE_TASK_IDS.iter().map(|(n, i)| (n.to_string(), i.to_string())).collect();
    assert_eq!(got, want);
}

#[test]
fn spec_parses_and_validates() {
    let s: SciworldEnvSpec = toml::from_str("workers = 2\npython = \"python3\"\ntasks = { train = 10, dev = 5 }").unwrap();
    assert_eq!(s.workers, 2);
    assert!(s.validate().is_ok());
    assert_eq!(s.task_count("train"), Some(10));
    assert_eq!(s.task_count("seen"), Some(5));
    assert_eq!(s.task_count("unseen"), Some(211));
    assert!(toml::from_str::<SciworldEnvSpec>("kind = \"sciworld\"").is_err(), "unknown fields are refused");
    let bad = SciworldEnvSpec { workers: 0, simplification: "easy,warp".into(), ..Default::default() };
    let err = bad.validate().unwrap_err();
    assert!(err.contains("workers") && err.contains("warp"), "{err}");
    assert_eq!(SciworldEnvSpec::default().identity()["simplification"], "easy");
}

#[test]
fn missing_python_names_the_install() {
    let s = SciworldEnvSpec { python: "/nonexistent/python3".into(), ..Default::default() };
    let err = sciworld::build(&s).err().expect("build must fail");
    assert!(err.contains("pip install scienceworld==1.2.3"), "{err}");
}

/// The acceptance check, on everything the dev list has: each of its 24
/// task types (so each of its 9 release prefixes and 8 simulator topics)
/// scores 1.0 on a gold replay of one of its first 3 variations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gold_replay_scores_one_on_every_dev_task_type() {
    let env = env(2);
    assert_eq!(env.tasks("dev", None).unwrap().len(), 194);
    let mut by_name: BTreeMap<String, Vec<(tasks::SciTask, TaskInfo)>> = BTreeMap::new();
    for (t, info) in tasks::split_tasks("seen").unwrap().iter().zip(env.tasks("seen", None).unwrap()) {
        by_name.entry(t.name.clone()).or_default().push((t.clone(), info));
    }
    assert_eq!(by_name.len(), 24);
    let mut set = tokio::task::JoinSet::new();
    for (name, list) in by_name {
        let env = env.clone();
        set.spawn(async move {
            let mut tried = Vec::new();
            for (t, info) in list.iter().take(3) {
                let g = gold_trajectory(&env, info).await.unwrap_or_else(|e| panic!("{}: {e}", info.task_id));
                assert!(g.goal.starts_with("Your task is to"), "{}", g.goal);
                assert!(!g.goal.contains("Task Description"));
                tried.push((info.task_id.clone(), g.reward, g.turns.len()));
                if g.reward == 1.0 {
                    assert!(g.success && g.done);
                    return (name, Some(t.clone()), tried);
                }
            }
            (name, None, tried)
        });
    }
    let (mut prefixes, mut topics, mut missing) = (BTreeSet::new(), BTreeSet::new(), Vec::new());
    while let Some(r) = set.join_next().await {
        let (name, ok, tried) = r.unwrap();
        eprintln!("{name}: {:?} {tried:?}", ok.as_ref().map(|t| t.task_id()));
        match ok {
            Some(t) => {
                prefixes.insert(t.topic());
                topics.insert(t.package_topic());
            }
            None => missing.push(name),
        }
    }
    assert!(missing.is_empty(), "no gold replay scored 1.0 for {missing:?}");
    assert_eq!(prefixes.len(), 9, "{prefixes:?}");
    assert_eq!(topics.into_iter().collect::<Vec<_>>(), (1..=8).collect::<Vec<_>>());
    assert_eq!(env.pool_stats().failed, 0);
    assert!(env.pool_stats().started <= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consecutive_invalid_actions_end_the_episode() {
    let env = env(1);
    let t = task("seen", "task-10-use-thermometer");
    assert!(t.max_steps >= 21, "room for the test's 21 steps");
    let mut ep = env.start(&t).await.unwrap();
    assert!(ep.task_text().starts_with("Your task is to"), "{}", ep.task_text());
    for _ in 0..9 {
        let o = ep.step("fly to the moon").await.unwrap();
        assert!(o.invalid && !o.done, "{o:?}");
    }
    let o = ep.step("look around").await.unwrap();
    assert!(!o.invalid && !o.done);
    for i in 1..=10 {
        let o = ep.step("fly to the moon").await.unwrap();
        assert!(o.invalid);
        assert_eq!(o.done, i == 10, "step {i}");
        assert!(!o.success && o.reward < 1.0);
    }
    assert!(ep.step("look around").await.is_err(), "no step after the end");
    ep.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_worker_fails_the_step_and_is_replaced() {
    let env = env(1);
    let t = task("seen", "task-3-find-non-living-thing");
    let gold = gold_trajectory(&env, &t).await.unwrap();
    assert_eq!(gold.reward, 1.0);
    let mut ep = env.start(&t).await.unwrap();
    ep.step(&gold.turns[0].0).await.unwrap();
    let pids = env.worker_pids();
    assert_eq!(pids.len(), 1);
    let pid = pids[0];
    assert!(group_members(pid).len() >= 2, "python and its JVM share the group");
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let err = ep.step(&gold.turns[1].0).await.expect_err("the worker is dead");
    eprintln!("{err}");
    assert!(ep.step("look around").await.is_err(), "the episode stays failed");
    ep.close().await;
    assert_eq!(wait_gone(&[pid]).await, Vec::<i32>::new(), "the JVM went with its worker");
    // The retry gets a fresh worker and completes.
    let mut ep = env.start(&t).await.unwrap();
    let mut last = None;
    for (a, _) in &gold.turns {
        last = Some(ep.step(a).await.unwrap());
    }
    let last = last.unwrap();
    assert!(last.success && last.reward == 1.0 && last.done);
    ep.close().await;
    let st = env.pool_stats();
    assert_eq!((st.started, st.failed, st.alive), (2, 1, 1));
    assert_ne!(env.worker_pids(), vec![pid]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_or_garbage_worker_is_killed() {
    let s = SciworldEnvSpec { request_timeout_s: 10.0, ..spec(1) };
    let env = sciworld::build_with_debug_hooks(&s).unwrap();
    let t = task("seen", "task-6-lifespan-(shortest-lived)");
    for (action, max_s) in [("__debug_hang__", 30.0), ("__debug_garbage__", 5.0), ("__debug_exit__", 5.0)] {
        let mut ep = env.start(&t).await.unwrap();
        let pid = env.worker_pids()[0];
        let t0 = Instant::now();
        let err = ep.step(action).await.expect_err(action);
        assert!(t0.elapsed().as_secs_f64() < max_s, "{action}: {:?}", t0.elapsed());
        eprintln!("{action}: {err}");
        ep.close().await;
        assert_eq!(wait_gone(&[pid]).await, Vec::<i32>::new(), "{action}");
    }
    let mut ep = env.start(&t).await.unwrap();
    assert!(!ep.step("look around").await.unwrap().invalid);
    ep.close().await;
    assert_eq!(env.pool_stats().failed, 3);
}

/// A stand-in for the eval stage at the pool level: each task's episode is
/// retried from the start on an environment failure; results keyed by task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_episode_yields_one_result() {
    let env = env(1);
    let names = ["task-6-lifespan-(longest-lived)", "task-3-find-non-living-thing", "task-6-lifespan-(shortest-lived)"];
    let mut plans = Vec::new();
    for n in names {
        let t = task("seen", n);
        let g = gold_trajectory(&env, &t).await.unwrap();
        plans.push((t, g.turns.into_iter().map(|(a, _)| a).collect::<Vec<_>>()));
    }
    let victim = plans[1].0.task_id.clone();
    let mut set = tokio::task::JoinSet::new();
    for (t, actions) in plans {
        let env = env.clone();
        let kill = t.task_id == victim;
        set.spawn(async move {
            let mut attempts = 0;
            loop {
                attempts += 1;
                let mut ep = match env.start(&t).await {
                    Ok(ep) => ep,
                    Err(_) if attempts < 3 => continue,
                    Err(e) => panic!("{e}"),
                };
                let mut result = Ok(0.0);
                for (i, a) in actions.iter().enumerate() {
                    if kill && attempts == 1 && i == 1 {
                        // one worker: the one this episode holds
                        unsafe { libc::kill(env.worker_pids()[0], libc::SIGKILL) };
                    }
                    match ep.step(a).await {
                        Ok(o) => result = Ok(o.reward),
                        Err(e) => {
                            result = Err(e);
                            break;
                        }
                    }
                }
                ep.close().await;
                match result {
                    Ok(r) => return (t.task_id.clone(), r, attempts),
                    Err(_) if attempts < 3 => continue,
                    Err(e) => panic!("{e}"),
                }
            }
        });
    }
    let mut results: HashMap<String, (f64, u32)> = HashMap::new();
    while let Some(r) = set.join_next().await {
        let (id, reward, attempts) = r.unwrap();
        assert!(results.insert(id, (reward, attempts)).is_none(), "one result per task");
    }
    assert_eq!(results.len(), 3);
    for (id, (reward, attempts)) in &results {
        assert_eq!(*reward, 1.0, "{id}");
        assert_eq!(*attempts, if *id == victim { 2 } else { 1 }, "{id}");
    }
    assert_eq!(env.pool_stats().failed, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_worker_outlives_the_environment() {
    let env = env(2);
    let t1 = task("seen", "task-6-lifespan-(longest-lived)");
    let t2 = task("seen", "task-3-find-non-living-thing");
    let (a, b) = tokio::join!(env.start(&t1), env.start(&t2));
    let (mut a, b) = (a.unwrap(), b.unwrap());
    a.step("look around").await.unwrap();
    a.close().await; // back to the pool, idle
    let pids = env.worker_pids();
    assert_eq!(pids.len(), 2);
    assert!(pids.iter().all(|&p| group_members(p).len() >= 2));
    drop(b); // dropped mid-episode without close
    drop(env);
    assert_eq!(wait_gone(&pids).await, Vec::<i32>::new());
}

// ---- the `expert` stage through `mpo-run` ----

/// A spec whose only stage is ScienceWorld's `expert` on the first
/// `tasks` train tasks.
fn expert_spec(name: &str, tasks: usize) -> String {
    format!(
        "[experiment]\nname = \"{name}\"\n\n[envs.sci]\nkind = \"sciworld\"\nworkers = 2\ntasks = {{ train = {tasks} }}\n"
    )
}

/// The bridge workers (Python, each the leader of its process group) that
/// the runner `parent` started.
fn bridge_children(parent: i32) -> Vec<i32> {
    live_processes()
        .into_iter()
        .filter(|p| {
            if p.ppid != parent {
                return false;
            }
            let cmdline = p.cmdline();
            // (not the short-lived `--check` of the installation)
            cmdline.contains("sciworld_bridge") && !cmdline.contains("--check")
        })
        .map(|p| p.pid)
        .collect()
}

/// Polls `f` every 100 ms for up to `secs`.
fn poll<T>(secs: u64, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(secs) {
        if let Some(v) = f() {
            return Some(v);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

fn gone_within(pgids: &[i32], secs: u64) -> Vec<i32> {
    let left = || pgids.iter().flat_map(|&g| group_members(g)).collect::<Vec<i32>>();
    poll(secs, || left().is_empty().then_some(())).map_or_else(left, |_| Vec::new())
}

fn spawn(ctx: &common::TestContext, args: &[&str]) -> std::process::Child {
    ctx.command(args).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().expect("run mpo-run")
}

fn expert_artifact(ctx: &common::TestContext) -> std::path::PathBuf {
    let dir = ctx.path("results/artifacts/expert");
    let mut dirs: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.path()).collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs.pop().unwrap()
}

/// Rows of the `expert` artifact: one per task, each a gold replay that
/// scored 1.0, in the agent's ReAct message format.
fn check_expert_rows(ctx: &common::TestContext, n: usize) {
    let art = expert_artifact(ctx);
    let rows: Vec<mpo_run::store::table::EpisodeRow> = mpo_run::store::table::read_rows(&art.join("episodes.parquet")).unwrap();
    let want: Vec<String> = tasks::split_tasks("train").unwrap()[..n].iter().map(|t| t.task_id()).collect();
    assert_eq!(rows.iter().map(|r| r.task_id.clone()).collect::<Vec<_>>(), want, "one row per task, in task order");
    let trajectories = std::fs::read_to_string(art.join("trajectories.jsonl")).unwrap();
    assert_eq!(trajectories.lines().count(), n);
    for (r, line) in rows.iter().zip(trajectories.lines()) {
        assert_eq!((r.stage.as_str(), r.agent.as_str(), r.split.as_str()), ("expert", "expert", "train"));
        assert_eq!((r.reward, r.success, r.finish_reason.as_str()), (1.0, true, "success"), "{}", r.task_id);
        let t: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(t["task_id"], r.task_id.as_str());
        assert_eq!(t["turns"].as_array().unwrap().len() as u64, r.steps);
        let m: Vec<mpo_run::model::Message> = serde_json::from_str(&r.messages).unwrap();
        assert_eq!(m.len() as u64, 1 + 2 * r.steps);
        assert!(m[0].content.starts_with("Your task is to"), "{}", m[0].content);
        assert!(m[1].content.starts_with("Action: ") && m[2].content.starts_with("Observation: "), "{m:?}");
    }
}

/// `mpo-run` on a ScienceWorld env: the `expert` stage replays gold
/// sequences; a worker killed by pid mid-run costs a replay, not a row.
#[test]
fn expert_stage_replays_gold_and_survives_a_killed_worker() {
    let ctx = common::TestContext::new();
    ctx.write("sci.toml", &expert_spec("sci-expert", 4));
    let dry = ctx.run(&["--dry-run", "sci.toml"]);
    assert!(dry.status.success(), "{}", String::from_utf8_lossy(&dry.stderr));
    assert!(String::from_utf8_lossy(&dry.stdout).contains("`expert[sci/train]`"));
    assert!(String::from_utf8_lossy(&dry.stdout).contains("4 items: 0 cached, 4 to run"));

    let child = spawn(&ctx, &["sci.toml"]);
    let runner = child.id() as i32;
    // A worker that has had time to start its JVM and load a task.
    let first = poll(60, || bridge_children(runner).first().copied()).expect("a bridge worker starts");
    std::thread::sleep(Duration::from_secs(4));
    assert!(bridge_children(runner).contains(&first), "the run ended too early for the test");
    unsafe { libc::kill(first, libc::SIGKILL) };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("again from the start"), "the kill hit a replay: {stderr}");
    check_expert_rows(&ctx, 4);
    assert_eq!(common::journal_lines(&ctx, "expert"), 4, "each task journaled once");
    assert_eq!(gone_within(&[first], 10), Vec::<i32>::new());

    let again = ctx.run(&["sci.toml"]);
    assert!(again.status.success());
    let summary = String::from_utf8_lossy(&again.stderr);
    assert!(summary.contains("0 stages ran, 1 cached"), "{summary}");
    assert_eq!(common::journal_lines(&ctx, "expert"), 4);
}

/// Ctrl-C and SIGKILL of the runner mid-stage leave no worker behind, and
/// the next run resumes from the journal: every task once, none lost.
#[test]
fn interrupted_expert_runs_leave_no_worker_and_resume() {
    let ctx = common::TestContext::new();
    ctx.write("sci.toml", &expert_spec("sci-resume", 6));
    let mut journaled = 0;
    for signal in [libc::SIGINT, libc::SIGKILL] {
        let mut child = spawn(&ctx, &["sci.toml"]);
        let runner = child.id() as i32;
        let before = journaled;
        poll(120, || (common::journal_lines(&ctx, "expert") > before).then_some(())).expect("an item finishes");
        let workers = bridge_children(runner);
        assert!(!workers.is_empty(), "workers are running");
        unsafe { libc::kill(runner, signal) };
        let status = child.wait().unwrap();
        if signal == libc::SIGINT {
            assert_eq!(status.code(), Some(130), "Ctrl-C exits with 130");
        }
        assert_eq!(gone_within(&workers, 10), Vec::<i32>::new(), "signal {signal}: workers outlived the runner");
        journaled = common::journal_lines(&ctx, "expert");
        assert!(journaled < 6, "the run was interrupted mid-stage ({journaled} items)");
    }
    let out = ctx.run(&["sci.toml"]);
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{summary}");
    assert!(summary.contains(&format!("({} items computed, {journaled} reused)", 6 - journaled)), "{summary}");
    check_expert_rows(&ctx, 6);
    assert_eq!(common::journal_lines(&ctx, "expert"), 6, "nothing lost, nothing duplicated");
}

/// Plans with a ScienceWorld planner env: the rule teacher is refused with
/// the key, its value and its file; a teacher model plans the expert's
/// gold replays and the seed plans; an env without an expert is named.
#[test]
fn seed_plan_sources_on_sciworld_plan_or_error_clearly() {
    let ctx = common::TestContext::new();
    let base = "[experiment]\nname = \"sci-seeds\"\n\n[models.teacher]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\nmodel = \"t\"\n\n[envs.sci]\nkind = \"sciworld\"\ntasks = { train = 3 }\n\n[envs.gym]\nkind = \"agentgym\"\nenv = \"alfworld\"\nurl = \"http://127.0.0.1:9\"\n";
    ctx.write("rule.toml", &format!("{base}\n[planner]\nenv = \"sci\"\n"));
    insta::assert_snapshot!("sciworld_rule_teacher_refused", ctx.snapshot_text(&ctx.run(&["--dry-run", "rule.toml"])));
    ctx.write("llm.toml", &format!("{base}\n[planner]\nenv = \"sci\"\nteacher = \"teacher\"\n"));
    insta::assert_snapshot!("sciworld_llm_teacher_plans", ctx.snapshot_text(&ctx.run(&["--dry-run", "llm.toml"])));
    ctx.write("gym.toml", &format!("{base}\n[planner]\nenv = \"gym\"\nteacher = \"teacher\"\n"));
    insta::assert_snapshot!("agentgym_has_no_expert", ctx.snapshot_text(&ctx.run(&["--dry-run", "gym.toml"])));
}

/// Seed plans on ScienceWorld: an LLM teacher is given the ScienceWorld
/// App. E.1 prompt with each gold replay as the conversation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_teacher_writes_seed_plans_from_gold_replays() {
    let teacher = fake_openai::FakeServer::start(fake_openai::FakeOptions::default().responder(|_: &[mpo_run::model::Message]| {
        "<meta_plan>\nStep 1: Go to the room where the object may be.\nStep 2: Focus on it.\n</meta_plan>".to_string()
    }))
    .await;
    let ctx = common::TestContext::new();
    let spec = format!(
        "{}\n[models.gpt]\nkind = \"openai\"\nbase_url = \"{}\"\nmodel = \"teacher\"\n\n[planner]\nenv = \"sci\"\nteacher = \"gpt\"\n",
        expert_spec("sci-teacher", 3),
        teacher.base_url()
    );
    ctx.write("seeds.toml", &spec);
    let out = common::run_bin(&ctx, &["seeds.toml"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    check_expert_rows(&ctx, 3);
    let plans: Vec<mpo_run::store::table::PlanRow> =
        mpo_run::store::table::read_rows(&ctx.path("results/sci-teacher/plans.parquet")).unwrap();
    let want: Vec<String> = tasks::split_tasks("train").unwrap()[..3].iter().map(|t| t.task_id()).collect();
    assert_eq!(plans.iter().map(|p| p.task_id.clone()).collect::<Vec<_>>(), want);
    assert!(plans.iter().all(|p| p.planner == "teacher:gpt" && p.text.starts_with("Step 1: Go to the room")));
    let prompts: Vec<String> = teacher.requests().iter().filter_map(|r| r.last_message().map(str::to_string)).collect();
    assert_eq!(prompts.len(), 3);
    for p in &prompts {
        assert!(p.contains("meta plan for a scientific task") && p.contains("Your task is to"), "{p}");
        assert!(p.contains("\nAction: ") && p.contains("Observation: "), "the gold replay is the conversation: {p}");
    }
}
