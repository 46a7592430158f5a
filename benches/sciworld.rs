//! ScienceWorld bridge benchmark (harness = false; needs
//! `pip install scienceworld==1.2.3` and Java 17, else it says so and exits).
//!
//! 1. Episodes per minute replaying gold action sequences on the first
//!    `MPO_BENCH_TASKS` (default 8) tasks of the seen list, with 1 and 2
//!    workers (workers warmed up first; load + steps + close per episode).
//! 2. The bridge's overhead per step: mean step latency through the bridge
//!    (1 worker) against the same simulator calls made directly in a loop by
//!    a small Python script (same tasks, same actions, one process); the
//!    official `env.step()` (which also enumerates valid actions) for scale.
//!
//! Quick mode (`MPO_BENCH_QUICK=1`, or `cargo test --release --bench
//! sciworld`): 2 tasks.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use mpo_run::env::sciworld::{self, gold_trajectory, tasks, SciworldEnv, SciworldEnvSpec};
use mpo_run::env::{Environment, TaskInfo};

const DIRECT_PY: &str = r#"
import json, sys, time
from scienceworld import ScienceWorldEnv
jobs = json.load(sys.stdin)
env = ScienceWorldEnv("", envStepLimit=200)
lean, official, loads, nlean, noff = 0.0, 0.0, 0.0, 0, 0
for name, var, actions in jobs:
    t0 = time.perf_counter()
    env.load(name, var, simplificationStr="easy", generateGoldPath=False)
    env.reset()
    env.taskdescription()
    loads += time.perf_counter() - t0
    for a in actions:  # the bridge's calls
        t0 = time.perf_counter()
        obs = env.server.step(a); env.server.getScore(); env.server.getCompleted(); env.get_num_moves()
        json.dumps({"observation": obs})
        lean += time.perf_counter() - t0
        nlean += 1
    env.load(name, var, simplificationStr="easy", generateGoldPath=False)
    env.reset()
    for a in actions:  # the official step()
        t0 = time.perf_counter()
        env.step(a)
        official += time.perf_counter() - t0
        noff += 1
print(json.dumps({"lean_ms": 1000 * lean / max(nlean, 1), "official_ms": 1000 * official / max(noff, 1),
                  "load_ms": 1000 * loads / max(len(jobs), 1), "steps": nlean}))
env.close()
"#;

struct RunStats {
    episodes: usize,
    wall: Duration,
    steps: usize,
    step_time: Duration,
    load_time: Duration,
}

async fn replay(env: Arc<SciworldEnv>, jobs: Arc<Vec<(TaskInfo, Vec<String>)>>, workers: usize) -> RunStats {
    // Warm-up: start every worker (JVM start-up is not per episode).
    let mut eps = Vec::new();
    for _ in 0..workers {
        eps.push(env.start(&jobs[0].0).await.unwrap());
    }
    for e in eps {
        e.close().await;
    }
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (env, jobs, next) = (env.clone(), jobs.clone(), next.clone());
        set.spawn(async move {
            let (mut steps, mut st, mut lt) = (0usize, Duration::ZERO, Duration::ZERO);
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((t, actions)) = jobs.get(i) else { break };
                let l0 = Instant::now();
                let mut ep = env.start(t).await.unwrap();
                lt += l0.elapsed();
                for a in actions {
                    let s0 = Instant::now();
                    let o = ep.step(a).await.unwrap();
                    st += s0.elapsed();
                    steps += 1;
                    if o.done {
                        break;
                    }
                }
                ep.close().await;
            }
            (steps, st, lt)
        });
    }
    let (mut steps, mut step_time, mut load_time) = (0, Duration::ZERO, Duration::ZERO);
    while let Some(r) = set.join_next().await {
        let (s, st, lt) = r.unwrap();
        steps += s;
        step_time += st;
        load_time += lt;
    }
    RunStats { episodes: jobs.len(), wall: t0.elapsed(), steps, step_time, load_time }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut figures = common::Figures::start("sciworld", None);
    rt.block_on(async {
        let f = &mut figures;
        let default_tasks = if f.quick() { 2 } else { 8 };
        let n: usize = std::env::var("MPO_BENCH_TASKS").ok().and_then(|s| s.parse().ok()).unwrap_or(default_tasks);
        let env2 = match sciworld::build(&SciworldEnvSpec { workers: 2, ..Default::default() }) {
            Ok(e) => e,
            Err(e) => {
                f.skipped(&e.to_string());
                return;
            }
        };
        let list = env2.tasks("seen", Some(n)).unwrap();
        let t0 = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for (i, t) in list.iter().cloned().enumerate() {
            let env = env2.clone();
            set.spawn(async move { (i, gold_trajectory(&env, &t).await.unwrap()) });
        }
        let mut golds = vec![None; list.len()];
        while let Some(r) = set.join_next().await {
            let (i, g) = r.unwrap();
            golds[i] = Some(g);
        }
        let golds: Vec<_> = golds.into_iter().map(Option::unwrap).collect();
        let solved = golds.iter().filter(|g| g.success).count();
        println!(
            "gold trajectories: {} tasks in {:.1?} (2 workers), {solved} reach the goal, {} steps",
            golds.len(),
            t0.elapsed(),
            golds.iter().map(|g| g.turns.len()).sum::<usize>()
        );
        let jobs: Arc<Vec<(TaskInfo, Vec<String>)>> = Arc::new(
            list.iter().cloned().zip(golds.iter().map(|g| g.turns.iter().map(|(a, _)| a.clone()).collect())).collect(),
        );
        drop(env2);

        let mut bridge_step_ms = 0.0;
        for workers in [1usize, 2] {
            let env = sciworld::build(&SciworldEnvSpec { workers, ..Default::default() }).unwrap();
            let s = replay(env, jobs.clone(), workers).await;
            let step_ms = s.step_time.as_secs_f64() * 1000.0 / s.steps.max(1) as f64;
            if workers == 1 {
                bridge_step_ms = step_ms;
            }
            println!(
                "workers={workers}: {} episodes ({} steps) in {:.1?} = {:.1} episodes/min; mean step {step_ms:.2} ms, mean load {:.0} ms",
                s.episodes,
                s.steps,
                s.wall,
                s.episodes as f64 * 60.0 / s.wall.as_secs_f64(),
                s.load_time.as_secs_f64() * 1000.0 / s.episodes as f64,
            );
            let detail = format!("{} episodes ({} steps) replaying gold actions, seen split, workers = {workers}", s.episodes, s.steps);
            f.record(&format!("episodes/min, workers = {workers}"), s.episodes as f64 * 60.0 / s.wall.as_secs_f64(), "episodes/min", &detail);
            f.record(&format!("mean step through the bridge, workers = {workers}"), step_ms, "ms", &detail);
        }

        let script = std::env::temp_dir().join("mpo-run-sciworld-direct-bench.py");
        std::fs::write(&script, DIRECT_PY).unwrap();
        let input: Vec<(String, u32, Vec<String>)> = jobs
            .iter()
            .map(|(t, a)| {
                let st = tasks::parse_task_id(&t.task_id).unwrap();
                (st.release_name, st.variation, a.clone())
            })
            .collect();
        let mut child = std::process::Command::new("python3")
            .arg(&script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(serde_json::to_string(&input).unwrap().as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let line = String::from_utf8_lossy(&out.stdout);
        let Some(v) = line.lines().rev().find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()) else {
            println!("direct python timing failed: {line}");
            f.skipped(&format!("direct python timing failed: {line}"));
            return;
        };
        let lean = v["lean_ms"].as_f64().unwrap_or(f64::NAN);
        println!(
            "direct python (one process): step {lean:.2} ms with the bridge's calls, {:.2} ms with env.step(); load {:.0} ms",
            v["official_ms"].as_f64().unwrap_or(f64::NAN),
            v["load_ms"].as_f64().unwrap_or(f64::NAN)
        );
        println!(
            "bridge overhead per step: {:.2} ms ({bridge_step_ms:.2} ms through the bridge vs {lean:.2} ms direct)",
            bridge_step_ms - lean
        );
        let detail = format!("{} tasks, same actions, one Python process", jobs.len());
        f.record("direct python step (the bridge's calls)", lean, "ms", &detail);
        f.record("bridge overhead per step", bridge_step_ms - lean, "ms", &detail);
    });
}
