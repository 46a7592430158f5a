//! Routing an agent's episodes over four replicas with prefix caches:
//! every request to the least-loaded replica (no session) vs every turn of
//! an episode to its own replica (session affinity, as the agent loop
//! sends). The replicas are in-process fake servers that model vLLM's
//! automatic prefix caching (`PrefixCache` in tests/support/fake_openai.rs:
//! 16-token blocks, an LRU of 1,500 blocks = 24k tokens per replica — the
//! KV cache a GPU has left for 64 sequences in flight is a few of them
//! deep — 20 µs of prefill per uncached token, 5 ms per answer). Each
//! episode: a ~900-word shared 1-shot prompt, its own task, then 10 turns
//! that each add ~100 words (a reply and an observation), as a ReAct
//! episode grows; 64 episodes in flight. Figures: prefix-cache hit rate and
//! wall time per routing, and their ratios, in one run. The figures are
//! those of this model of a cache, not of a measured vLLM.
//!
//! `cargo bench --bench affinity` (quick mode: 8 episodes).

mod common;

#[path = "../tests/support/fake_openai.rs"]
mod fake_openai;

use std::sync::Arc;
use std::time::{Duration, Instant};

use fake_openai::{FakeOptions, FakeServer, PrefixCache};
use mpo_run::model::openai::{OpenAiClient, OpenAiConfig};
use mpo_run::model::{ChatModel, ChatRequest, Message};

const TURNS: usize = 10;
const REPLICAS: usize = 4;
const IN_FLIGHT: usize = 64;

fn icl() -> String {
    (0..900).map(|i| format!("w{}", i % 97)).collect::<Vec<_>>().join(" ")
}

async fn run(episodes: usize, affinity: bool) -> (f64, f64) {
    let cache = PrefixCache { block_tokens: 16, capacity_blocks: 1500, us_per_uncached_token: 20 };
    let mut servers = Vec::new();
    for _ in 0..REPLICAS {
        servers.push(FakeServer::start(FakeOptions::default().latency(Duration::from_millis(5)).prefix_cache(cache)).await);
    }
    let mut c = OpenAiConfig::with_pool(servers.iter().map(FakeServer::base_url).collect(), "fake-model");
    c.timeout_s = 30.0;
    let model = Arc::new(OpenAiClient::new("bench", c).unwrap());
    let sem = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let shared = Arc::new(icl());
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for ep in 0..episodes {
        let (model, sem, shared) = (model.clone(), sem.clone(), shared.clone());
        set.spawn(async move {
            let _p = sem.acquire().await.unwrap();
            let mut r = ChatRequest::new(vec![Message::user(format!("{shared}\nYour task is to: put mug {ep} in cabinet {ep}."))]);
            if affinity {
                r.session = Some((ep as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            }
            for turn in 0..TURNS {
                let out = model.chat(&r).await.unwrap();
                r.messages.push(Message::assistant(out.texts[0].clone()));
                let obs: String = (0..100).map(|i| format!("o{ep}-{turn}-{i}")).collect::<Vec<_>>().join(" ");
                r.messages.push(Message::user(format!("Observation: {obs}")));
            }
        });
    }
    while let Some(j) = set.join_next().await {
        j.unwrap();
    }
    let secs = t.elapsed().as_secs_f64();
    let (seen, hit) = servers.iter().map(FakeServer::prefix_cache_tokens).fold((0, 0), |acc, x| (acc.0 + x.0, acc.1 + x.1));
    (hit as f64 / seen as f64, secs)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut figures = common::Figures::start("affinity", None);
    let episodes = if figures.quick() { 8 } else { 512 };
    let detail = format!("{episodes} episodes × {TURNS} turns, {IN_FLIGHT} in flight, {REPLICAS} replicas (modelled prefix caches)");
    println!("{detail}");
    let (hit_lo, secs_lo) = run(episodes, false).await;
    let (hit_aff, secs_aff) = run(episodes, true).await;
    println!("least outstanding: prefix-cache hits {:.1}%, {secs_lo:.2} s", hit_lo * 100.0);
    println!("episode affinity:  prefix-cache hits {:.1}%, {secs_aff:.2} s", hit_aff * 100.0);
    println!("affinity ÷ least outstanding: {:.2}× the hit rate, {:.2}× the speed", hit_aff / hit_lo, secs_lo / secs_aff);
    figures.record("least outstanding hit rate", hit_lo * 100.0, "%", &detail);
    figures.record("least outstanding wall", secs_lo, "s", &detail);
    figures.record("affinity hit rate", hit_aff * 100.0, "%", &detail);
    figures.record("affinity wall", secs_aff, "s", &detail);
    figures.record("affinity/least-outstanding speed", secs_lo / secs_aff, "ratio", &detail);
}
