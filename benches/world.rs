//! Built-in world throughput: env steps per second on one core with a
//! random-admissible-action policy (`cargo bench --bench world`).
//!
//! `step_text` is the agent-facing path: the admissible list (typed), one
//! random pick rendered to its command text, then `Game::step(&str)` (parse,
//! apply, observation text). `step_typed` skips the text round trip.
//! `admissible_strings` uses the slower, string-returning debugging surface.
//!
//! After divan's table, the same loops are timed once more for
//! `BENCHMARKS.md` (median of 31 runs; 3 in quick mode: `MPO_BENCH_QUICK=1`,
//! or `cargo test --release --bench world`, where divan runs each once).

mod common;

use std::time::Instant;

use divan::counter::ItemsCount;
use divan::Bencher;
use mpo_run::env::builtin::{Action, Game, Split};

fn main() {
    // Under `cargo test` divan's CLI would reject libtest's options
    // (`--test-threads`): there it runs each bench once, without parsing.
    let bench_mode = std::env::args().any(|a| a == "--bench");
    if bench_mode {
        divan::main();
    }
    let mut figures = common::Figures::start("world", None);
    if !bench_mode {
        divan::Divan::default().test_benches();
    }
    let runs = if figures.quick() { 3 } else { 31 };
    let pool = games();
    let loops: [(&str, usize, fn(&[Game], u64) -> usize); 3] = [
        ("steps/s, text actions (step_text)", STEPS, run_text),
        ("steps/s, typed actions (step_typed)", STEPS, run_typed),
        ("steps/s, string admissible list (admissible_strings)", 1000, run_strings),
    ];
    for (figure, steps, run) in loops {
        let mut secs: Vec<f64> = (0..runs)
            .map(|r| {
                let t = Instant::now();
                divan::black_box(run(&pool, r as u64 + 1));
                t.elapsed().as_secs_f64()
            })
            .collect();
        secs.sort_by(f64::total_cmp);
        let rate = steps as f64 / secs[runs / 2];
        println!("{figure:<56} {rate:>12.0} steps/s (median of {runs} runs of {steps} steps)");
        figures.record(figure, rate, "steps/s", &format!("one core, random admissible actions, median of {runs} runs of {steps} steps"));
    }
}

const STEPS: usize = 10_000;

fn games() -> Vec<Game> {
    (0..64)
        .map(|i| Game::new(Split::Train, i * 37).with_max_steps(50))
        .collect()
}

/// SplitMix64, to pick actions without pulling in a rand crate.
fn next(s: &mut u64) -> u64 {
    *s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *s;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn run_text(pool: &[Game], seed: u64) -> usize {
    let mut rng = seed;
    let mut k = 0;
    let mut g = pool[0].clone();
    let mut acts: Vec<Action> = Vec::with_capacity(64);
    let mut text = String::with_capacity(64);
    let mut total = 0usize;
    for _ in 0..STEPS {
        if g.done() {
            k = (k + 1) % pool.len();
            g = pool[k].clone();
        }
        g.admissible_into(&mut acts);
        let a = acts[(next(&mut rng) % acts.len() as u64) as usize];
        g.write_action(a, &mut text);
        total += g.step(&text).observation.len();
    }
    total
}

fn run_typed(pool: &[Game], seed: u64) -> usize {
    let mut rng = seed;
    let mut k = 0;
    let mut g = pool[0].clone();
    let mut acts: Vec<Action> = Vec::with_capacity(64);
    let mut total = 0usize;
    for _ in 0..STEPS {
        if g.done() {
            k = (k + 1) % pool.len();
            g = pool[k].clone();
        }
        g.admissible_into(&mut acts);
        let a = acts[(next(&mut rng) % acts.len() as u64) as usize];
        total += g.apply(a).observation.len();
    }
    total
}

fn run_strings(pool: &[Game], seed: u64) -> usize {
    let mut rng = seed;
    let mut k = 0;
    let mut g = pool[0].clone();
    let mut total = 0usize;
    for _ in 0..1000 {
        if g.done() {
            k = (k + 1) % pool.len();
            g = pool[k].clone();
        }
        let adm = g.admissible_actions();
        let a = &adm[(next(&mut rng) % adm.len() as u64) as usize];
        total += g.step(a).observation.len();
    }
    total
}

#[divan::bench]
fn step_text(bencher: Bencher) {
    let pool = games();
    bencher.counter(ItemsCount::new(STEPS)).bench_local(|| divan::black_box(run_text(&pool, 1)));
}

#[divan::bench]
fn step_typed(bencher: Bencher) {
    let pool = games();
    bencher.counter(ItemsCount::new(STEPS)).bench_local(|| divan::black_box(run_typed(&pool, 2)));
}

#[divan::bench]
fn admissible_strings(bencher: Bencher) {
    let pool = games();
    bencher.counter(ItemsCount::new(1000usize)).bench_local(|| divan::black_box(run_strings(&pool, 3)));
}

#[divan::bench(sample_count = 20)]
fn generate_task(bencher: Bencher) {
    let mut i = 0;
    bencher.bench_local(|| {
        i = (i + 1) % Split::Train.size();
        divan::black_box(Game::new(Split::Train, i))
    });
}
