//! Specs: error messages users read, sweep expansion, and layer precedence.

mod common;

use common::TestContext;
use mpo_run::spec::{self, LoadOptions};

fn bad(name: &str) -> String {
    let ctx = TestContext::new();
    let out = ctx.run(&["--dry-run", &format!("bad/{name}.toml")]);
    assert_eq!(out.status.code(), Some(2), "a bad spec is a user error (exit 2)");
    ctx.snapshot_text(&out)
}

#[test]
fn error_unknown_key() {
    insta::assert_snapshot!(bad("unknown_key"));
}

#[test]
fn error_wrong_type() {
    insta::assert_snapshot!(bad("wrong_type"));
}

#[test]
fn error_out_of_range_m_n_beta() {
    insta::assert_snapshot!(bad("out_of_range"));
}

#[test]
fn error_missing_extends_file() {
    insta::assert_snapshot!(bad("missing_extends"));
}

#[test]
fn error_unknown_model_and_env_in_eval() {
    insta::assert_snapshot!(bad("unknown_refs"));
}

#[test]
fn error_invalid_toml() {
    insta::assert_snapshot!(bad("bad_toml"));
}

/// `thoughts = "tracking"` reads the built-in game's state: another env is
/// refused at plan time; an unknown style lists the allowed values.
#[test]
fn error_tracking_thoughts_outside_the_builtin_world() {
    insta::assert_snapshot!(bad("thoughts"));
    insta::assert_snapshot!(bad("thoughts_value"));
}

/// Rule plans, plan variety in the demonstrations and the rule judge are
/// refused where they mean nothing, each naming its key and value.
#[test]
fn error_premise_keys_out_of_place() {
    insta::assert_snapshot!(bad("plan_premise"));
}

#[test]
fn error_unknown_env_kind() {
    insta::assert_snapshot!(bad("unknown_kind"));
}

#[test]
fn error_bad_set_flag_names_its_source() {
    let ctx = TestContext::new();
    let out = ctx.run(&["--dry-run", "small.toml", "--set", "mpo.beta=0"]);
    assert_eq!(out.status.code(), Some(2));
    insta::assert_snapshot!(ctx.snapshot_text(&out));
}

fn describe(variants: &[spec::Variant]) -> String {
    variants
        .iter()
        .map(|v| {
            let s = &v.loaded.spec;
            format!(
                "{:<28} m={} n={} flaw_rate={} overrides={:?}",
                v.name,
                s.mpo.m,
                s.mpo.n,
                s.planner.as_ref().map_or(f64::NAN, |p| p.flaw_rate),
                v.overrides.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn sweep_one_at_a_time_expansion() {
    let ctx = TestContext::new();
    let variants = spec::expand(&ctx.path("sweep.toml"), &LoadOptions { env: Some(vec![]), ..Default::default() }).unwrap();
    // Base M = 3, N = 2 (from small.toml): M=3 is the base and not repeated.
    assert_eq!(variants.len(), 1 + 4 + 3);
    insta::assert_snapshot!(describe(&variants));
}

#[test]
fn sweep_grid_expansion() {
    let ctx = TestContext::new();
    let variants = spec::expand(&ctx.path("grid.toml"), &LoadOptions { env: Some(vec![]), ..Default::default() }).unwrap();
    assert_eq!(variants.len(), 4);
    insta::assert_snapshot!(describe(&variants));
}

#[test]
fn precedence_defaults_file_env_set() {
    let ctx = TestContext::new();
    let path = ctx.path("small.toml");
    let load = |env: Vec<(&str, &str)>, sets: Vec<&str>| {
        spec::load(
            &path,
            &LoadOptions {
                sets: sets.into_iter().map(String::from).collect(),
                env: Some(env.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
                ..Default::default()
            },
        )
        .unwrap()
        .spec
    };
    // Default < file: the file sets m = 3; n's default would be 5, the file says 2.
    let s = load(vec![], vec![]);
    assert_eq!((s.mpo.m, s.mpo.n, s.mpo.sample_temperature), (3, 2, 0.7));
    // File < MPO_ environment.
    let s = load(vec![("MPO_MPO__M", "4"), ("MPO_MPO__SAMPLE_TEMPERATURE", "0.9")], vec![]);
    assert_eq!((s.mpo.m, s.mpo.sample_temperature), (4, 0.9));
    // Environment < --set; later --set wins over an earlier one.
    let s = load(vec![("MPO_MPO__M", "4")], vec!["mpo.m=5", "mpo.n=1", "mpo.n=3"]);
    assert_eq!((s.mpo.m, s.mpo.n), (5, 3));
    // Variables without a section separator are not spec keys.
    let s = load(vec![("MPO_API_KEY", "secret")], vec![]);
    assert_eq!(s.mpo.m, 3);
}

#[test]
fn precedence_through_the_binary() {
    let ctx = TestContext::new();
    // The environment changes the seed-plan flaw rate; --set overrides it again.
    let env_only = ctx
        .command(&["--dry-run", "small.toml"])
        .env("MPO_PLANNER__FLAW_RATE", "0.5")
        .output()
        .unwrap();
    let both = ctx
        .command(&["--dry-run", "small.toml", "--set", "planner.flaw_rate=0.3"])
        .env("MPO_PLANNER__FLAW_RATE", "0.5")
        .output()
        .unwrap();
    let plain = ctx.run(&["--dry-run", "small.toml"]);
    let (e, b, p) = (
        String::from_utf8_lossy(&env_only.stdout).to_string(),
        String::from_utf8_lossy(&both.stdout).to_string(),
        String::from_utf8_lossy(&plain.stdout).to_string(),
    );
    assert_ne!(e, p, "the MPO_ variable changes the seed_plans key");
    assert_eq!(b, p, "--set wins over the MPO_ variable");
}

// #22: inputs that once panicked, hung or escaped get exit 2 and a short
// message naming the key and the file.

#[test]
fn error_zip_sweep_with_nothing_to_vary() {
    insta::assert_snapshot!(bad("zip_empty"));
}

#[test]
fn error_huge_m_from_a_set_flag() {
    let ctx = TestContext::new();
    let out = ctx.run(&["--dry-run", "small.toml", "--set", "mpo.m=4294967295"]);
    assert_eq!(out.status.code(), Some(2));
    insta::assert_snapshot!(ctx.snapshot_text(&out));
}

#[test]
fn error_huge_m_in_the_file() {
    let ctx = TestContext::new();
    ctx.write("huge_m.toml", "extends = \"small.toml\"\n[mpo]\nm = 4294967295\n");
    let out = ctx.run(&["--dry-run", "huge_m.toml"]);
    assert_eq!(out.status.code(), Some(2));
    insta::assert_snapshot!(ctx.snapshot_text(&out));
}

#[test]
fn error_table_name_that_is_a_path() {
    insta::assert_snapshot!(bad("path_name"));
}

#[test]
fn error_secret_in_extra_body() {
    let text = bad("secret");
    assert!(!text.contains("sk-not-a-real-key"), "the secret is never echoed:\n{text}");
    insta::assert_snapshot!(text);
}

#[test]
fn error_init_model_past_the_limits() {
    insta::assert_snapshot!(bad("huge_init"));
}

/// `--results` is not a `--set` flag: a key missing from the file is
/// blamed on the file (45 fuzzed errors once said "in --set flags").
#[test]
fn error_missing_key_blames_the_file_not_the_results_flag() {
    let ctx = TestContext::new();
    ctx.write("no_name.toml", "[experiment]\nseed = 1\n");
    let out = ctx.run(&["--dry-run", "no_name.toml", "--results", "elsewhere"]);
    assert_eq!(out.status.code(), Some(2));
    let text = ctx.snapshot_text(&out);
    assert!(!text.contains("--set"), "{text}");
    insta::assert_snapshot!(text);
}

/// A 100 kB value is quoted clipped, not whole.
#[test]
fn error_long_values_are_clipped() {
    let ctx = TestContext::new();
    let long = "x".repeat(100_000);
    ctx.write("long.toml", &format!("[experiment]\nname = \"{long}\"\n[envs.{long}]\nkind = \"builtin\"\n"));
    let out = ctx.run(&["--dry-run", "long.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let text = ctx.snapshot_text(&out);
    assert!(text.len() < 2_000, "{} bytes", text.len());
    assert!(text.contains("… (100002 characters)"), "{text}");
}

/// `experiment.icl_format` (ETO's multi-turn example format) names the
/// prompt set the agent stages resolve; the default leaves it as it was.
#[test]
fn icl_format_selects_the_conversation_format() {
    use mpo_run::agent::prompt::IclFormat;
    let ctx = TestContext::new();
    let path = ctx.path("small.toml");
    let load = |sets: Vec<&str>| spec::load(&path, &LoadOptions { sets: sets.into_iter().map(String::from).collect(), env: Some(vec![]), ..Default::default() });
    let s = load(vec![]).unwrap().spec;
    assert_eq!(s.experiment.icl_format, IclFormat::First);
    assert_eq!(s.experiment.prompt_set_name(), s.experiment.prompts);
    let s = load(vec!["experiment.icl_format=conversation"]).unwrap().spec;
    assert_eq!(s.experiment.icl_format, IclFormat::Conversation);
    assert_eq!(s.experiment.prompt_set_name(), format!("{}#conversation", s.experiment.prompts));
    assert!(load(vec!["experiment.icl_format=multi"]).is_err());
}
