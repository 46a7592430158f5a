//! Cache keys do not depend on the code's structure or on the machine: the
//! quickstart's stage keys as they were before the stage seam landed, and a
//! ScienceWorld spec planned, inspected and reported on a machine without
//! the simulator (a `python` that is not there) with the same keys as where
//! it is installed.

mod common;

use common::TestContext;

/// `N `label` [key]` lines of a dry run, in order.
fn node_keys(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let (num, rest) = l.split_once(' ')?;
            num.parse::<usize>().ok()?;
            let (label, key) = rest.rsplit_once(" [")?;
            Some(format!("{label} [{}", key))
        })
        .collect()
}

#[test]
fn quickstart_stage_keys_are_unchanged() {
    let ctx = TestContext::new();
    // The quickstart spec before issue 25 changed its recipe (a frozen
    // copy): the keys pin the code, not the spec.
    let spec = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/quickstart-before-25.toml");
    let out = ctx.run(&["--dry-run", spec.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let keys = node_keys(&String::from_utf8_lossy(&out.stdout));
    assert!(keys.len() > 40, "{keys:?}");
    // Taken with the code before the stage seam (fa0d8cf); users' cached
    // results depend on these keys. Issue 21 (the release's loop rules:
    // the thought prefill on every request, the plan after every answered
    // observation) changed the `thought` and `observation` eval cells, and
    // only those. Issue 25 added one node, the follower on the sampled
    // plans (`follower[sampled/…]`), and changed no key.
    insta::assert_snapshot!(keys.join("\n"));
}

const SCIWORLD_SPEC: &str = r#"
[experiment]
name = "sci-keys"

[models.teacher]
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
model = "teacher"

[models.planner]
kind = "local"
init = { layers = 1, hidden = 32, heads = 2, kv_heads = 1, ff = 64, vocab_size = 300, tokenizer = "bpe" }

[models.agent]
kind = "local"
init = { layers = 1, hidden = 32, heads = 2, kv_heads = 1, ff = 64, vocab_size = 300, tokenizer = "bpe" }

[envs.sci]
kind = "sciworld"
python = "PYTHON"
tasks = { train = 4, dev = 2 }

[planner]
env = "sci"
teacher = "teacher"
model = "planner"
train_tasks = 2

[agent_sft]
models = ["agent"]

[mpo]
m = 2
n = 1
explorer = "agent"

[eval]
agents = ["agent"]
envs = ["sci"]
splits = ["dev"]
planners = ["none", "sft", "mpo"]
"#;

fn sciworld_keys(ctx: &TestContext, python: &str, command: &[&str]) -> (bool, String) {
    ctx.write("sci.toml", &SCIWORLD_SPEC.replace("PYTHON", python));
    let mut args = command.to_vec();
    args.push("sci.toml");
    let out = ctx.run(&args);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn sciworld_keys_do_not_depend_on_the_simulator_being_installed() {
    let ctx = TestContext::new();
    let missing = ctx.path("no-such-python").display().to_string();
    let (ok, without) = sciworld_keys(&ctx, &missing, &["--dry-run"]);
    assert!(ok, "dry run without the simulator failed:\n{without}");
    let keys_without = node_keys(&without);
    assert!(keys_without.iter().any(|k| k.starts_with("`expert[sci/train]`")), "{without}");
    assert!(keys_without.iter().any(|k| k.starts_with("`eval[agent/sci/dev/mpo/instruction]`")), "{without}");

    let (ok, status) = sciworld_keys(&ctx, &missing, &["status"]);
    assert!(ok, "status without the simulator failed:\n{status}");
    assert_eq!(node_keys(&status), keys_without);
    let (ok, report) = sciworld_keys(&ctx, &missing, &["report"]);
    assert!(ok, "report without the simulator failed:\n{report}");

    // Where the simulator is installed the keys are the same (its absence
    // used to put `"env": null` into six stages' keys). The python path is
    // not part of an environment's identity, so any python computes them.
    let (ok, with) = sciworld_keys(&ctx, "python3", &["--dry-run"]);
    assert!(ok, "{with}");
    assert_eq!(node_keys(&with), keys_without);
}
