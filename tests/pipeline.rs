//! The runner end to end on the built-in world: the DAG, the cache, and
//! crash safety, through the real binary.

mod common;

use std::time::{Duration, Instant};

use common::{journal_lines, sorted_rows, TestContext};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn dry_run_prints_the_dag() {
    let ctx = TestContext::new();
    let out = ctx.run(&["--dry-run", "small.toml"]);
    assert!(out.status.success());
    insta::assert_snapshot!(ctx.snapshot_text(&out));
    assert!(!ctx.path("results").exists(), "a dry run runs nothing and creates nothing");
}

#[test]
fn dry_run_of_a_sweep_shares_the_prefix() {
    let ctx = TestContext::new();
    let out = ctx.run(&["--dry-run", "grid.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    insta::assert_snapshot!(ctx.snapshot_text(&out));
}

#[test]
fn cache_reruns_exactly_what_changed() {
    let ctx = TestContext::new();
    let first = ctx.run(&["small.toml"]);
    assert!(first.status.success(), "{}", stderr(&first));
    let e = stderr(&first);
    assert!(e.contains("2 stages ran, 0 cached"), "{e}");
    let episodes = ctx.path("results/small/episodes.parquet");
    let plans = ctx.path("results/small/plans.parquet");
    assert_eq!(sorted_rows(&episodes).len(), 40);
    assert_eq!(sorted_rows(&plans).len(), 40);

    // Rerun: all cached, nothing executes, and it says so.
    let again = ctx.run(&["small.toml"]);
    assert!(again.status.success());
    let e = stderr(&again);
    assert!(e.contains("0 stages ran, 2 cached"), "{e}");
    assert!(e.contains("nothing to do: every stage is cached"), "{e}");

    // A value only `seed_plans` reads: it reruns, `expert` does not; the
    // dry run says why.
    let dry = ctx.run(&["--dry-run", "small.toml", "--set", "planner.flaw_rate=0.5"]);
    let d = String::from_utf8_lossy(&dry.stdout).to_string();
    assert!(d.contains("to run (`flaw_rate` changed 0.3 → 0.5)"), "{d}");
    let changed = ctx.run(&["small.toml", "--set", "planner.flaw_rate=0.5"]);
    let e = stderr(&changed);
    assert!(e.contains("1 stages ran, 1 cached"), "{e}");
    assert!(e.contains("`expert[household/train]`: cached"), "{e}");
    assert!(e.contains("`seed_plans[household/rule]`: ran"), "{e}");

    // A value no stage reads (`mpo.beta`, until DPO exists): nothing reruns.
    let unrelated = ctx.run(&["small.toml", "--set", "mpo.beta=0.2", "--set", "planner.flaw_rate=0.5"]);
    let e = stderr(&unrelated);
    assert!(e.contains("0 stages ran, 2 cached"), "{e}");

    // A value `expert` reads: it reruns and so does its dependent.
    let upstream = ctx.run(&["small.toml", "--set", "envs.household.max_steps=25"]);
    let e = stderr(&upstream);
    assert!(e.contains("2 stages ran, 0 cached"), "{e}");
}

#[test]
fn force_and_only_select_stages() {
    let ctx = TestContext::new();
    let only = ctx.run(&["small.toml", "--only", "expert"]);
    let e = stderr(&only);
    assert!(e.contains("1 stages ran, 0 cached"), "{e}");
    assert!(e.contains("not selected (--only)"), "{e}");
    let forced = ctx.run(&["small.toml", "--force", "expert"]);
    let e = stderr(&forced);
    assert!(e.contains("`expert[household/train]`: ran"), "{e}");
    assert!(e.contains("40 items computed, 0 reused"), "{e}");
    let bad = ctx.run(&["small.toml", "--only", "dpo"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("stage `dpo` is not in the plan"), "{}", stderr(&bad));
}

#[test]
fn sigkill_mid_stage_then_rerun_gives_the_same_rows() {
    // Reference: an uninterrupted run.
    let reference = TestContext::new();
    let out = reference.run(&["small.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));

    let ctx = TestContext::new();
    let mut child = ctx
        .command(&["small.toml"])
        .env("MPORUN_TEST_ITEM_DELAY_MS", "25")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it in the middle of `expert`: some items journaled, not all.
    let start = Instant::now();
    while journal_lines(&ctx, "expert") < 10 {
        assert!(start.elapsed() < Duration::from_secs(60), "the run never got going");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let done_before = journal_lines(&ctx, "expert");
    assert!(done_before < 40, "killed mid-stage ({done_before} of 40 done)");
    assert!(!ctx.path("results/small/episodes.parquet").exists());

    let rerun = ctx.run(&["small.toml"]);
    let e = stderr(&rerun);
    assert!(rerun.status.success(), "{e}");
    // Finished items were reused, not redone.
    assert!(e.contains(&format!("{} items computed, {} reused", 40 - done_before, done_before)), "{e}");
    for table in ["episodes", "plans"] {
        let a = sorted_rows(&reference.path(&format!("results/small/{table}.parquet")));
        let b = sorted_rows(&ctx.path(&format!("results/small/{table}.parquet")));
        assert_eq!(a, b, "{table} rows differ after a crash and rerun");
        let mut dedup = b.clone();
        dedup.dedup();
        assert_eq!(dedup.len(), b.len(), "duplicate {table} rows");
    }
    assert_eq!(journal_lines(&ctx, "expert"), 40, "every item journaled exactly once");
}

#[test]
fn status_report_and_clean() {
    let ctx = TestContext::new();
    assert!(ctx.run(&["small.toml"]).status.success());
    let status = ctx.run(&["status", "small.toml"]);
    assert!(String::from_utf8_lossy(&status.stdout).contains("2 stages (2 cached, 0 to run)"));
    let report = ctx.run(&["report", "small.toml"]);
    assert!(report.status.success());
    let index = std::fs::read_to_string(ctx.path("reports/small/index.md")).unwrap();
    assert!(index.contains("| base | expert | household | train | expert | none | none | 40 | 1.000"), "{index}");
    // An artifact of another config is unreferenced by small.toml.
    assert!(ctx.run(&["small.toml", "--set", "planner.flaw_rate=0.0"]).status.success());
    let refused = ctx.command(&["clean", "small.toml"]).stdin(std::process::Stdio::null()).output().unwrap();
    assert_eq!(refused.status.code(), Some(2), "no confirmation, no deletion");
    let clean = ctx.run(&["clean", "small.toml", "--yes"]);
    assert!(String::from_utf8_lossy(&clean.stderr).contains("removed 1 entries"), "{}", stderr(&clean));
    let again = ctx.run(&["small.toml"]);
    assert!(stderr(&again).contains("0 stages ran, 2 cached"));
}

#[test]
fn clean_removes_training_leftovers_that_no_spec_plans() {
    let ctx = TestContext::new();
    assert!(ctx.run(&["small.toml"]).status.success());
    let dry = ctx.run(&["--dry-run", "small.toml"]);
    let text = String::from_utf8_lossy(&dry.stdout).to_string();
    let key = text.split('[').nth(2).and_then(|s| s.split(']').next()).expect("a key").to_string();
    // A killed training's checkpoints and reference scores: one of a node
    // the spec plans (kept: it resumes from them), two of nodes it does not.
    let kept = ctx.path(&format!("results/train/expert/{key}"));
    let stale = ctx.path("results/train/sft/00000000000000000000");
    std::fs::create_dir_all(&kept).unwrap();
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("latest.json"), "{}").unwrap();
    let scores = ctx.path("results/train/dpo/11111111111111111111.reference.jsonl");
    std::fs::create_dir_all(scores.parent().unwrap()).unwrap();
    std::fs::write(&scores, "[0.0,0.0]\n").unwrap();
    let clean = ctx.run(&["clean", "small.toml", "--yes"]);
    assert!(clean.status.success(), "{}", stderr(&clean));
    assert!(stderr(&clean).contains("removed 2 entries"), "{}", stderr(&clean));
    assert!(kept.exists(), "a planned node's checkpoints are kept");
    assert!(!stale.exists() && !scores.exists(), "leftovers of unplanned nodes are removed");
}

#[test]
fn shards_compute_disjoint_items_and_a_plain_run_assembles_them() {
    let reference = TestContext::new();
    assert!(reference.run(&["small.toml"]).status.success());

    let ctx = TestContext::new();
    let a = ctx.run(&["small.toml", "--shard", "0/2"]);
    assert!(a.status.success(), "{}", stderr(&a));
    assert!(stderr(&a).contains("shard done"), "{}", stderr(&a));
    assert!(stderr(&a).contains("waits for its inputs to be assembled"), "{}", stderr(&a));
    let first = journal_lines(&ctx, "expert");
    assert!(first > 0 && first < 40, "shard 0 did part of the items ({first})");
    let b = ctx.run(&["small.toml", "--shard", "1/2"]);
    assert!(b.status.success());
    assert_eq!(journal_lines(&ctx, "expert"), 40, "the shards are disjoint and complete");
    let all = ctx.run(&["small.toml"]);
    let e = stderr(&all);
    assert!(e.contains("`expert[household/train]`: ran") && e.contains("0 items computed, 40 reused"), "{e}");
    for table in ["episodes", "plans"] {
        assert_eq!(
            sorted_rows(&reference.path(&format!("results/small/{table}.parquet"))),
            sorted_rows(&ctx.path(&format!("results/small/{table}.parquet")))
        );
    }
    let bad = ctx.run(&["small.toml", "--shard", "2/2"]);
    assert_eq!(bad.status.code(), Some(2));
}

/// Two shards of a job array that reach a training at the same time: a
/// training has no items to split, so one shard trains and the other waits
/// for it and finds it cached — never two trainings into one checkpoint dir.
#[test]
fn shards_do_not_train_one_node_twice() {
    let ctx = TestContext::new();
    let spec = std::fs::read_to_string(ctx.path("small.toml")).unwrap()
        + "\n[models.planner]\nkind = \"local\"\ninit = { layers = 2, hidden = 64, heads = 2, kv_heads = 1, ff = 128, vocab_size = 400, tokenizer = \"word_level\" }\n\n[train.sft]\nepochs = 30\nbatch_size = 8\nmicro_batch = 8\nlr = 1e-3\n";
    ctx.write("train.toml", &spec.replace("teacher = \"rule\"", "teacher = \"rule\"\nmodel = \"planner\"").replace("[mpo]\n", "[mpo]\nexplorer = \"planner\"\n"));
    assert!(ctx.run(&["train.toml", "--only", "seed_plans"]).status.success());
    assert!(ctx.run(&["train.toml", "--only", "init_model"]).status.success());
    let children: Vec<_> = (0..2).map(|i| ctx.command(&["train.toml", "--only", "sft", "--shard", &format!("{i}/2"), "-v"]).stderr(std::process::Stdio::piped()).spawn().unwrap()).collect();
    let outs: Vec<_> = children.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
    for o in &outs {
        assert!(o.status.success(), "{}", stderr(o));
    }
    let started = outs.iter().filter(|o| stderr(o).contains("`sft[planner]` starts")).count();
    assert_eq!(started, 1, "one shard trains:\n{}\n---\n{}", stderr(&outs[0]), stderr(&outs[1]));
    assert!(outs.iter().any(|o| stderr(o).contains("waits:")), "the other waits for it:\n{}\n---\n{}", stderr(&outs[0]), stderr(&outs[1]));
}

/// The paper's Figure 5 sweep (M and N from 1 to 5): the seed set and the
/// SFT planner are shared by all variants, sampled plans by the N variants,
/// and every variant's plans are items of the M = 5 run.
#[test]
fn dry_run_of_figure5_shows_the_shared_prefix_and_per_variant_nodes() {
    let ctx = TestContext::new();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments");
    for f in ["paper.toml", "figure5.toml"] {
        std::fs::copy(root.join(f), ctx.path(f)).unwrap();
    }
    let out = ctx.run(&["--dry-run", "figure5.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = ctx.snapshot_text(&out);
    assert!(text.contains("(3321 of them also in an earlier stage: computed once)"));
    insta::assert_snapshot!(text);
}

/// Every spec in experiments/ loads, validates and plans.
#[test]
fn every_committed_experiment_plans() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments");
    let ctx = TestContext::new();
    for e in std::fs::read_dir(&root).unwrap().flatten() {
        std::fs::copy(e.path(), ctx.path(&e.file_name().to_string_lossy())).unwrap();
    }
    for e in std::fs::read_dir(&root).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let out = ctx.run(&["--dry-run", &name]);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
    }
}

/// #22: a flipped byte in a committed artifact and an edited (still valid)
/// journal line are each reported with their path and recomputed — the
/// artifact is moved aside to `corrupt/`, its node reruns from the journal,
/// and only the edited item is computed again; nothing is deleted by hand.
#[test]
fn a_corrupt_artifact_and_an_edited_journal_line_are_recomputed() {
    let ctx = TestContext::new();
    let out = ctx.run(&["small.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let reference = sorted_rows(&ctx.path("results/small/episodes.parquet"));

    let expert = ctx.path("results/artifacts/expert");
    let key = std::fs::read_dir(&expert).unwrap().next().unwrap().unwrap().path();
    let mut files: Vec<_> = std::fs::read_dir(&key)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && !p.ends_with("manifest.json"))
        .collect();
    files.sort();
    let victim = files[0].clone();
    let mut bytes = std::fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x04;
    std::fs::write(&victim, bytes).unwrap();

    let journal_dir = ctx.path("results/items/expert");
    // The journal's segment (beside it: `claims.lock`, the items' claims).
    let segment = std::fs::read_dir(&journal_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .expect("a journal segment");
    let text = std::fs::read_to_string(&segment).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let at = lines[0].find("\"value\"").unwrap();
    let digit = lines[0][at..].find(|c: char| c.is_ascii_digit()).unwrap() + at;
    let d = lines[0].as_bytes()[digit];
    let new = if d == b'9' { '8' } else { (d + 1) as char };
    lines[0].replace_range(digit..digit + 1, &new.to_string());
    std::fs::write(&segment, lines.join("\n") + "\n").unwrap();

    let rerun = ctx.run(&["small.toml"]);
    let e = stderr(&rerun);
    assert!(rerun.status.success(), "{e}");
    assert!(e.contains("is corrupt") && e.contains(&victim.file_name().unwrap().to_string_lossy().to_string()), "{e}");
    assert!(e.contains("checksum does not match") && e.contains("line 1"), "{e}");
    assert!(e.contains("1 items computed, 39 reused"), "{e}");
    assert!(key.join("manifest.json").exists(), "recommitted");
    assert_eq!(std::fs::read_dir(ctx.path("results/corrupt/expert")).unwrap().count(), 1);
    assert_eq!(sorted_rows(&ctx.path("results/small/episodes.parquet")), reference);
    // Repaired for good: the next run finds everything cached and intact.
    let again = ctx.run(&["small.toml"]);
    let e = stderr(&again);
    assert!(again.status.success() && !e.contains("corrupt"), "{e}");
}
