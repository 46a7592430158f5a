//! Client overhead per call against an in-process fake server that answers
//! at once, at concurrency 1, 64 and 256: calls/s and p50/p99 latency of
//! `OpenAiClient::chat`, next to a bare `reqwest` POST of the same body
//! (the difference is what the client adds: body building, pool choice,
//! semaphore, parsing). Client and server share this process's cores.
//!
//! `cargo bench --bench openai_client` (env `MPO_BENCH_CALLS` = calls per
//! concurrency level, default 4000; 200 in quick mode: `MPO_BENCH_QUICK=1`
//! or `cargo test --release --bench openai_client`).

mod common;

#[path = "../tests/support/fake_openai.rs"]
mod fake_openai;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fake_openai::{FakeOptions, FakeServer};
use mpo_run::model::openai::{OpenAiClient, OpenAiConfig};
use mpo_run::model::{ChatModel, ChatRequest, Message};

struct Run {
    calls_per_s: f64,
    p50: Duration,
    p99: Duration,
}

fn request(i: usize) -> ChatRequest {
    let mut r = ChatRequest::new(vec![
        Message::system("You are a household agent. Think, then act."),
        Message::user(format!("Task {i}: put a clean mug in the coffee machine.")),
    ]);
    r.params.seed = Some(i as u64);
    r
}

async fn drive<F, Fut>(calls: usize, concurrency: usize, call: F) -> Run
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let call = Arc::new(call);
    let next = Arc::new(AtomicUsize::new(0));
    let lat = Arc::new(Mutex::new(Vec::with_capacity(calls)));
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (call, next, lat) = (call.clone(), next.clone(), lat.clone());
        set.spawn(async move {
            let mut mine = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= calls {
                    break;
                }
                let s = Instant::now();
                call(i).await;
                mine.push(s.elapsed());
            }
            lat.lock().unwrap().extend(mine);
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
    let wall = t.elapsed();
    let mut lat = Arc::try_unwrap(lat).unwrap().into_inner().unwrap();
    lat.sort();
    let q = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize];
    Run { calls_per_s: calls as f64 / wall.as_secs_f64(), p50: q(0.50), p99: q(0.99) }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    let mut figures = common::Figures::start("openai_client", None);
    let default_calls = if figures.quick() { 200 } else { 4000 };
    let calls: usize = std::env::var("MPO_BENCH_CALLS").ok().and_then(|v| v.parse().ok()).unwrap_or(default_calls);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let fake = FakeServer::start(FakeOptions::default()).await;
        let mut cfg = OpenAiConfig::new(fake.base_url(), "fake-model");
        cfg.max_concurrency = 256;
        let model = Arc::new(OpenAiClient::new("bench", cfg).unwrap());
        let bare = reqwest::Client::builder().http1_only().pool_max_idle_per_host(256).build().unwrap();
        let url = format!("{}/chat/completions", fake.base_url());
        let body = serde_json::json!({
            "model": "fake-model",
            "messages": request(0).messages,
            "max_tokens": 512, "temperature": 0.0, "top_p": 1.0,
            "stop": ["\nObservation:", "\nTask:", "\n---"], "seed": 0,
        })
        .to_string();

        println!("openai_client bench: {calls} calls per level, fake server answering at once, 2 tokio workers");
        println!(
            "{:>5} | {:>10} {:>9} {:>9} | {:>10} {:>9} {:>9} | {:>9} {:>9}",
            "conc", "client/s", "p50 us", "p99 us", "bare/s", "p50 us", "p99 us", "+p50 us", "+p99 us"
        );
        for conc in [1usize, 64, 256] {
            // warm both connection pools
            let m = model.clone();
            drive(conc * 2, conc, move |i| {
                let m = m.clone();
                async move {
                    m.chat(&request(i)).await.unwrap();
                }
            })
            .await;
            let m = model.clone();
            let ours = drive(calls, conc, move |i| {
                let m = m.clone();
                async move {
                    m.chat(&request(i)).await.unwrap();
                }
            })
            .await;
            let (b, u, bd) = (bare.clone(), url.clone(), body.clone());
            let base = drive(calls, conc, move |_| {
                let (b, u, bd) = (b.clone(), u.clone(), bd.clone());
                async move {
                    let r = b.post(&u).header("content-type", "application/json").body(bd).send().await.unwrap();
                    let v: serde_json::Value = r.json().await.unwrap();
                    assert!(v["choices"][0]["message"]["content"].is_string());
                }
            })
            .await;
            println!(
                "{:>5} | {:>10.0} {:>9.0} {:>9.0} | {:>10.0} {:>9.0} {:>9.0} | {:>+9.0} {:>+9.0}",
                conc,
                ours.calls_per_s,
                us(ours.p50),
                us(ours.p99),
                base.calls_per_s,
                us(base.p50),
                us(base.p99),
                us(ours.p50) - us(base.p50),
                us(ours.p99) - us(base.p99),
            );
            let detail = format!("{calls} calls, concurrency {conc}, in-process instant server, 2 tokio workers");
            figures.record(&format!("client calls/s, concurrency {conc}"), ours.calls_per_s, "calls/s", &detail);
            figures.record(&format!("bare reqwest calls/s, concurrency {conc}"), base.calls_per_s, "calls/s", &detail);
            figures.record(&format!("client p50 latency, concurrency {conc}"), us(ours.p50), "µs", &detail);
            figures.record(&format!("client p99 latency, concurrency {conc}"), us(ours.p99), "µs", &detail);
            figures.record(&format!("added p50 latency vs bare reqwest, concurrency {conc}"), us(ours.p50) - us(base.p50), "µs", &detail);
        }
    });
}
