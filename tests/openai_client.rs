//! The OpenAI-compatible client against an in-process fake server.

#[path = "support/fake_openai.rs"]
mod fake_openai;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fake_openai::{count_tokens, expected_answer, reserve_addr, FakeOptions, FakeServer, Fault};
use mpo_run::model::openai::{OpenAiClient, OpenAiConfig, PrefillMode};
use mpo_run::model::{ChatModel, ChatRequest, Message, ModelError};
use serde_json::json;

/// A config with fast retries, for tests.
fn cfg(base: &str) -> OpenAiConfig {
    let mut c = OpenAiConfig::new(base, "fake-model");
    c.timeout_s = 5.0;
    c.retry_backoff_ms = 10;
    c.retry_backoff_max_s = 0.2;
    c.cooldown_s = 0.2;
    c
}

fn client(c: OpenAiConfig) -> OpenAiClient {
    OpenAiClient::new("test", c).expect("valid config")
}

fn req(last: &str) -> ChatRequest {
    ChatRequest::new(vec![Message::system("You are an agent."), Message::user(last)])
}

fn seeded(last: &str, seed: u64) -> ChatRequest {
    let mut r = req(last);
    r.params.seed = Some(seed);
    r
}

// ---- config --------------------------------------------------------------

#[test]
fn config_defaults_from_toml_and_embedding() {
    #[derive(serde::Deserialize, Debug)]
    #[serde(tag = "kind", rename_all = "lowercase")]
    enum ModelSpec {
        Openai(OpenAiConfig),
    }
    #[derive(serde::Deserialize, Debug)]
    struct Spec {
        models: HashMap<String, ModelSpec>,
    }
    let spec: Spec = toml::from_str(
        r#"
        [models.actor]
        kind = "openai"
        base_url = "http://127.0.0.1:8000/v1"
        model = "meta-llama/Llama-3.1-8B-Instruct"
        timeout_s = 30
        params_b = 8

        [models.actor.extra_body]
        top_k = 20
        chat_template_kwargs = { enable_thinking = false }
        "#,
    )
    .unwrap();
    let ModelSpec::Openai(c) = &spec.models["actor"];
    c.validate().unwrap();
    assert_eq!(c.timeout_s, 30.0);
    assert_eq!(c.params_b, Some(8.0));
    assert_eq!(c.max_concurrency, 64);
    assert_eq!(c.max_retries, 6);
    assert_eq!(c.max_tokens, 512);
    assert_eq!(c.temperature, 0.0);
    assert_eq!(c.top_p, 1.0);
    assert_eq!(c.stop, vec!["\nObservation:", "\nTask:", "\n---"]);
    assert!(c.supports_n);
    assert_eq!(c.prefill, PrefillMode::Vllm);
    assert_eq!(c.ready_timeout_s, 600.0);
    assert_eq!(c.extra_body["top_k"], json!(20));
    assert_eq!(c.extra_body["chat_template_kwargs"], json!({"enable_thinking": false}));

    let unknown = toml::from_str::<OpenAiConfig>("base_url = \"http://h/v1\"\nmodel = \"m\"\nbase_ur = 1\n");
    assert!(unknown.unwrap_err().to_string().contains("base_ur"));
    let pool: OpenAiConfig =
        toml::from_str("base_urls = [\"http://a:1/v1\", \"http://b:2/v1/\"]\nmodel = \"m\"\nprefill = \"none\"\n")
            .unwrap();
    pool.validate().unwrap();
    assert_eq!(pool.endpoints(), vec!["http://a:1/v1", "http://b:2/v1"]);
    assert_eq!(pool.prefill, PrefillMode::None);
    // What a manifest writes back parses to the same config.
    let again: OpenAiConfig = toml::from_str(&toml::to_string(c).unwrap()).unwrap();
    assert_eq!(&again, c);
}

#[test]
fn config_validation_names_the_key() {
    let ok = OpenAiConfig::new("http://127.0.0.1:8000/v1", "m");
    ok.validate().unwrap();
    let check = |f: &dyn Fn(&mut OpenAiConfig), needle: &str| {
        let mut c = ok.clone();
        f(&mut c);
        let e = c.validate().unwrap_err();
        assert!(e.contains(needle), "`{e}` should mention `{needle}`");
        e
    };
    check(&|c| c.base_urls = vec!["http://x:1/v1".into()], "exactly one of `base_url`");
    check(&|c| c.base_url = None, "`base_url`");
    check(&|c| c.base_url = Some("localhost:8000".into()), "http://");
    check(&|c| c.base_url = Some("http://h:1/v1/chat/completions".into()), "base URL");
    let e = check(&|c| c.base_url = Some("http://user:hunter2@h:1/v1".into()), "api_key_env");
    assert!(!e.contains("hunter2"));
    let e = check(&|c| c.api_key_env = Some("sk-live-abc123".into()), "`api_key_env`");
    assert!(!e.contains("sk-live-abc123"), "the value may be a key: never echo it");
    check(&|c| c.max_concurrency = 0, "`max_concurrency`");
    check(&|c| c.timeout_s = 0.0, "`timeout_s`");
    check(&|c| c.temperature = 3.0, "`temperature`");
    check(&|c| c.top_p = 0.0, "`top_p`");
    check(&|c| c.max_tokens = 0, "`max_tokens`");
    check(&|c| c.stop = vec![String::new()], "`stop`");
    check(&|c| c.params_b = Some(-1.0), "`params_b`");
    check(&|c| drop(c.extra_body.insert("temperature".into(), json!(1))), "`extra_body.temperature`");
    let e = OpenAiClient::new("actor", { let mut c = ok.clone(); c.top_p = 2.0; c }).unwrap_err();
    assert!(e.to_string().contains("[models.actor]"), "{e}");
}

#[test]
fn identity_sorted_hosts_and_outcome_settings() {
    let c = OpenAiConfig::with_pool(vec!["http://b.local:8001/v1".into(), "http://a.local:8000/v1/".into()], "m");
    assert_eq!(client(c.clone()).identity(), "openai:m@a.local:8000,b.local:8001");
    let mut c2 = c.clone();
    c2.extra_body.insert("top_k".into(), json!(20));
    c2.extra_body.insert("chat_template_kwargs".into(), json!({"z": 1, "b": 2}));
    c2.temperature = 0.7;
    c2.api_key_env = Some("PATH".into()); // any set variable
    let id = client(c2).identity();
    assert_eq!(
        id,
        r#"openai:m@a.local:8000,b.local:8001?{"extra_body":{"chat_template_kwargs":{"b":2,"z":1},"top_k":20},"temperature":0.7}"#
    );
    assert!(!id.contains("PATH"));
    let single = client(OpenAiConfig::new("https://api.example.com/v1", "gpt-4o"));
    assert_eq!(single.identity(), "openai:gpt-4o@api.example.com:443");
}

// ---- request shape -------------------------------------------------------

#[tokio::test]
async fn request_body_usage_and_stop_union() {
    let fake = FakeServer::start(FakeOptions::default()).await;
    let mut c = cfg(&fake.base_url());
    c.extra_body.insert("top_k".into(), json!(20));
    let model = client(c);
    let mut r = seeded("go to the kitchen", 3);
    r.params.temperature = Some(0.7);
    r.params.stop = vec!["\nEND".into(), "\nTask:".into()];
    let out = model.chat(&r).await.unwrap();
    assert_eq!(out.texts, vec![expected_answer("go to the kitchen", Some(3), 0)]);
    assert_eq!(out.finish_reasons, vec!["stop"]);
    assert_eq!(out.prompt_tokens, count_tokens("You are an agent.") + count_tokens("go to the kitchen"));
    assert_eq!(out.completion_tokens, count_tokens(&out.texts[0]));
    let reqs = fake.chat_requests();
    assert_eq!(reqs.len(), 1);
    let b = &reqs[0].body;
    assert_eq!(b["model"], "fake-model");
    assert_eq!(b["messages"], json!([{"role":"system","content":"You are an agent."},{"role":"user","content":"go to the kitchen"}]));
    assert_eq!(b["temperature"], 0.7);
    assert_eq!(b["top_p"], 1.0);
    assert_eq!(b["max_tokens"], 512);
    assert_eq!(b["seed"], 3);
    assert_eq!(b["top_k"], 20);
    assert_eq!(b["stop"], json!(["\nObservation:", "\nTask:", "\n---", "\nEND"]));
    assert!(b.get("n").is_none() && b.get("continue_final_message").is_none());
    assert!(reqs[0].header("authorization").is_none());
    assert_eq!(reqs[0].header("content-type"), Some("application/json"));
}

#[tokio::test]
async fn scripted_responder_closure() {
    let fake = FakeServer::start(FakeOptions::default().responder(|msgs: &[Message]| {
        format!("Action: {}", msgs.last().unwrap().content.to_uppercase())
    }))
    .await;
    let out = client(cfg(&fake.base_url())).chat(&req("look")).await.unwrap();
    assert_eq!(out.texts, vec!["Action: LOOK"]);
}

#[tokio::test]
async fn n_native_and_fallback() {
    let fake = FakeServer::start(FakeOptions::default()).await;
    let mut r = seeded("plan please", 7);
    r.params.n = 3;
    let out = client(cfg(&fake.base_url())).chat(&r).await.unwrap();
    let want: Vec<String> = (0..3).map(|i| expected_answer("plan please", Some(7), i)).collect();
    assert_eq!(out.texts, want);
    assert_eq!(fake.chat_count(), 1);
    assert_eq!(fake.chat_requests()[0].body["n"], 3);

    let fake2 = FakeServer::start(FakeOptions::default()).await;
    let mut c = cfg(&fake2.base_url());
    c.supports_n = false;
    let out = client(c).chat(&r).await.unwrap();
    let want: Vec<String> = (0..3).map(|i| expected_answer("plan please", Some(7 + i as u64), 0)).collect();
    assert_eq!(out.texts, want, "seed, seed+1, seed+2, in order");
    assert_eq!(out.finish_reasons.len(), 3);
    assert_eq!(out.completion_tokens, out.texts.iter().map(|t| count_tokens(t)).sum::<u64>());
    assert_eq!(
        out.prompt_tokens,
        count_tokens("You are an agent.") + count_tokens("plan please"),
        "one prompt, counted once, as a server that takes `n` counts it"
    );
    let reqs = fake2.chat_requests();
    assert_eq!(reqs.len(), 3);
    let mut seeds: Vec<u64> = reqs.iter().map(|q| q.body["seed"].as_u64().unwrap()).collect();
    seeds.sort();
    assert_eq!(seeds, vec![7, 8, 9]);
    assert!(reqs.iter().all(|q| q.body.get("n").is_none()));
}

#[tokio::test]
async fn prefill_vllm_shape_and_none_refuses() {
    let fake = FakeServer::start(FakeOptions::default()).await;
    let mut r = seeded("Task: heat an egg", 1);
    r.prefill = Some("Thought: I should".into());
    let out = client(cfg(&fake.base_url())).chat(&r).await.unwrap();
    assert_eq!(out.texts, vec![expected_answer("Thought: I should", Some(1), 0)], "only the continuation");
    let b = &fake.chat_requests()[0].body;
    let msgs = b["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 3);
    assert_eq!(msgs[2], json!({"role": "assistant", "content": "Thought: I should"}));
    assert_eq!(b["continue_final_message"], true);
    assert_eq!(b["add_generation_prompt"], false);

    let mut c = cfg(&fake.base_url());
    c.prefill = PrefillMode::None;
    let e = client(c).chat(&r).await.unwrap_err();
    assert!(matches!(e, ModelError::Other(_)), "{e:?}");
    assert!(e.to_string().contains("cannot continue an assistant message"), "{e}");
    assert_eq!(fake.chat_count(), 1, "nothing sent");
}

// ---- errors and retries --------------------------------------------------

#[tokio::test]
async fn client_errors_are_not_retried() {
    for status in [400u16, 404, 422] {
        let fake = FakeServer::start(FakeOptions::default().script(move |_, _| Some(Fault::Status(status)))).await;
        let e = client(cfg(&fake.base_url())).chat(&req("x")).await.unwrap_err();
        match &e {
            ModelError::Status { endpoint, status: s, body } => {
                assert_eq!(*s, status);
                assert_eq!(endpoint, &fake.base_url());
                assert!(body.contains("bad request"), "{body}");
            }
            other => panic!("expected Status, got {other:?}"),
        }
        assert_eq!(fake.chat_count(), 1, "HTTP {status} must not be retried");
    }
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let fake =
        FakeServer::start(FakeOptions::default().script(|seq, _| (seq == 0).then_some(Fault::RateLimited { retry_after_s: 1 })))
            .await;
    let t = Instant::now();
    let out = client(cfg(&fake.base_url())).chat(&req("hello")).await.unwrap();
    let took = t.elapsed();
    assert_eq!(out.texts, vec![expected_answer("hello", None, 0)]);
    let reqs = fake.chat_requests();
    assert_eq!(reqs.len(), 2);
    let gap = reqs[1].at - reqs[0].at;
    assert!(gap >= Duration::from_millis(1000), "retried after {gap:?}");
    assert!(took >= Duration::from_millis(1000) && out.wall_ms >= 1000, "{took:?}");
}

#[tokio::test]
async fn transient_faults_recover_and_are_counted() {
    let script = |seq: u64, _: &serde_json::Value| match seq {
        0 => Some(Fault::ServerError),
        1 => Some(Fault::EmptyChoices),
        2 => Some(Fault::EmptyContent),
        3 => Some(Fault::InvalidJson),
        4 => Some(Fault::CloseConnection),
        5 => Some(Fault::Status(408)),
        _ => None,
    };
    let fake = FakeServer::start(FakeOptions::default().script(script)).await;
    let model = client(cfg(&fake.base_url()));
    let out = model.chat(&req("q")).await.unwrap();
    assert_eq!(out.texts, vec![expected_answer("q", None, 0)]);
    assert_eq!(fake.chat_count(), 7);
    let st = &model.endpoint_stats()[0];
    assert_eq!((st.requests, st.failures, st.outstanding), (7, 6, 0));
}

#[tokio::test]
async fn persistent_malformed_is_reported_as_malformed() {
    let fake = FakeServer::start(FakeOptions::default().script(|_, _| Some(Fault::InvalidJson))).await;
    let mut c = cfg(&fake.base_url());
    c.max_retries = 2;
    let e = client(c).chat(&req("q")).await.unwrap_err();
    match &e {
        ModelError::Malformed { endpoint, detail } => {
            assert_eq!(endpoint, &fake.base_url());
            assert!(detail.contains("invalid JSON") && detail.contains("3 attempts"), "{detail}");
        }
        other => panic!("expected Malformed, got {other:?}"),
    }
    assert_eq!(fake.chat_count(), 3);
}

#[tokio::test]
async fn exhausted_retries_name_endpoint_and_body_excerpt() {
    let long = format!("overloaded {}", "x".repeat(5000));
    let fake = FakeServer::start(FakeOptions::default().script(move |_, _| {
        Some(Fault::Raw { status: 503, body: long.clone() })
    }))
    .await;
    let mut c = cfg(&fake.base_url());
    c.max_retries = 2;
    let e = client(c).chat(&req("q")).await.unwrap_err();
    let ModelError::RetriesExhausted { attempts, last } = &e else { panic!("{e:?}") };
    assert_eq!(*attempts, 3);
    assert!(last.contains(&fake.base_url()) && last.contains("HTTP 503") && last.contains("overloaded"), "{last}");
    assert!(last.matches('x').count() <= 300, "excerpt too long: {} chars", last.len());
    assert_eq!(fake.chat_count(), 3);
}

#[tokio::test]
async fn timeouts_and_refused_connections_are_retried_then_reported() {
    let fake = FakeServer::start(FakeOptions::default().script(|_, _| Some(Fault::Hang(Duration::from_secs(3))))).await;
    let mut c = cfg(&fake.base_url());
    c.timeout_s = 0.3;
    c.max_retries = 1;
    let t = Instant::now();
    let e = client(c).chat(&req("q")).await.unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    let s = e.to_string();
    assert!(s.contains("timed out") && s.contains(&fake.base_url()), "{s}");
    assert_eq!(fake.chat_count(), 2);

    let dead = format!("http://{}/v1", reserve_addr().await);
    let mut c = cfg(&dead);
    c.max_retries = 2;
    let model = client(c);
    let e = model.chat(&req("q")).await.unwrap_err();
    let ModelError::RetriesExhausted { attempts: 3, last } = &e else { panic!("{e:?}") };
    assert!(last.contains("cannot connect") && last.contains(&dead), "{last}");
    eprintln!("refused: {e}");
    assert!(!model.endpoint_stats()[0].up, "a refusing endpoint is marked down");
}

// ---- the API key -----------------------------------------------------------

#[tokio::test]
async fn api_key_is_sent_as_bearer_and_never_leaks() {
    const SECRET: &str = "sk-test-SECRET-0123456789abcdef";
    std::env::set_var("MPO_TEST_OPENAI_KEY_A", SECRET);
    let fake = FakeServer::start(FakeOptions { echo_auth_in_errors: true, ..FakeOptions::default().require_key(SECRET) })
        .await;
    let mut c = cfg(&fake.base_url());
    c.api_key_env = Some("MPO_TEST_OPENAI_KEY_A".into());
    let model = client(c.clone());
    model.chat(&req("hi")).await.unwrap();
    assert_eq!(fake.chat_requests()[0].header("authorization"), Some(format!("Bearer {SECRET}").as_str()));
    model.wait_ready().await.unwrap();
    assert!(fake.requests().iter().all(|r| r.header("authorization") == Some(&format!("Bearer {SECRET}"))));
    for text in [model.identity(), format!("{model:?}"), format!("{c:?}"), format!("{:?}", model.config())] {
        assert!(!text.contains("SECRET"), "key leaked into {text}");
    }
    assert!(format!("{model:?}").contains("<redacted>"));

    // A server that quotes the Authorization header in its 4xx body.
    let other = FakeServer::start(FakeOptions { echo_auth_in_errors: true, ..FakeOptions::default().require_key("another") })
        .await;
    let mut c2 = cfg(&other.base_url());
    c2.api_key_env = Some("MPO_TEST_OPENAI_KEY_A".into());
    let e = client(c2).chat(&req("hi")).await.unwrap_err();
    assert!(matches!(e, ModelError::Status { status: 401, .. }), "{e:?}");
    let (shown, debug) = (e.to_string(), format!("{e:?}"));
    assert!(shown.contains("Incorrect API key") && shown.contains("<redacted>"), "{shown}");
    assert!(!shown.contains("SECRET") && !debug.contains("SECRET"), "key leaked: {shown}");
    assert_eq!(other.chat_count(), 1);
}

#[test]
fn unset_key_variable_is_named_not_valued() {
    std::env::remove_var("MPO_TEST_OPENAI_UNSET_VAR");
    let mut c = OpenAiConfig::new("http://127.0.0.1:9/v1", "m");
    c.api_key_env = Some("MPO_TEST_OPENAI_UNSET_VAR".into());
    let e = OpenAiClient::new("judge", c).unwrap_err().to_string();
    assert!(e.contains("MPO_TEST_OPENAI_UNSET_VAR") && e.contains("not set") && e.contains("judge"), "{e}");
}

// ---- readiness -------------------------------------------------------------

#[tokio::test]
async fn wait_ready_for_a_server_that_starts_late() {
    let addr = reserve_addr().await;
    let starter = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        FakeServer::start_on(addr, FakeOptions::default()).await.unwrap()
    });
    let mut c = cfg(&format!("http://{addr}/v1"));
    c.ready_timeout_s = 20.0;
    let model = client(c);
    let t = Instant::now();
    model.wait_ready().await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(1100), "{:?}", t.elapsed());
    let fake = starter.await.unwrap();
    assert_eq!(model.chat(&req("first")).await.unwrap().texts, vec![expected_answer("first", None, 0)]);
    assert!(model.endpoint_stats()[0].up);
    drop(fake);
}

#[tokio::test]
async fn wait_ready_waits_out_503_and_gives_up_in_time() {
    let fake = FakeServer::start(FakeOptions::default().ready_after(Duration::from_millis(800))).await;
    let t = Instant::now();
    client(cfg(&fake.base_url())).wait_ready().await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(750));
    assert!(fake.requests().len() >= 2);

    let dead = format!("http://{}/v1", reserve_addr().await);
    let mut c = cfg(&dead);
    c.ready_timeout_s = 0.5;
    let t = Instant::now();
    let e = client(c).wait_ready().await.unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert!(matches!(e, ModelError::NotReady(_)) && e.to_string().contains(&dead), "{e}");
}

// ---- load --------------------------------------------------------------------

/// Runs `items` calls over `workers` tasks; returns item → texts.
async fn run_items(
    model: Arc<OpenAiClient>,
    items: usize,
    workers: usize,
    on_done: Arc<dyn Fn(usize) + Send + Sync>,
) -> HashMap<usize, Vec<String>> {
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let results = Arc::new(Mutex::new(HashMap::new()));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (model, next, done, results, on_done) =
            (model.clone(), next.clone(), done.clone(), results.clone(), on_done.clone());
        set.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= items {
                    break;
                }
                let out = model.chat(&seeded(&format!("item {i}"), i as u64)).await;
                let out = out.unwrap_or_else(|e| panic!("item {i} failed: {e}"));
                assert!(results.lock().unwrap().insert(i, out.texts).is_none(), "item {i} answered twice");
                on_done(done.fetch_add(1, Ordering::SeqCst) + 1);
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
    Arc::try_unwrap(results).unwrap().into_inner().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_2000_calls_at_20_percent_faults() {
    let faults = vec![
        Fault::RateLimited { retry_after_s: 1 },
        Fault::ServerError,
        Fault::Status(503),
        Fault::Hang(Duration::from_secs(2)),
        Fault::CloseConnection,
        Fault::InvalidJson,
        Fault::EmptyChoices,
        Fault::EmptyContent,
    ];
    let fake = FakeServer::start(FakeOptions::default().faults(0.2, faults)).await;
    let mut c = cfg(&fake.base_url());
    c.timeout_s = 1.0;
    c.max_retries = 10;
    c.retry_backoff_ms = 20;
    c.retry_backoff_max_s = 0.5;
    let model = Arc::new(client(c));
    let t = Instant::now();
    const N: usize = 2000;
    let results = run_items(model.clone(), N, 64, Arc::new(|_| {})).await;
    let took = t.elapsed();
    assert_eq!(results.len(), N, "nothing lost");
    for (i, texts) in &results {
        assert_eq!(texts, &vec![expected_answer(&format!("item {i}"), Some(*i as u64), 0)], "item {i}");
    }
    let clean = fake.clean_answers();
    assert_eq!(clean.len(), N);
    assert!(clean.values().all(|&k| k == 1), "every item answered exactly once by the server");
    let reqs = fake.chat_requests();
    let faulted = reqs.iter().filter(|r| r.fault.is_some()).count();
    let rate = faulted as f64 / reqs.len() as f64;
    eprintln!("soak: {N} items, {} requests, {faulted} faulted ({:.1}%), {took:?}", reqs.len(), rate * 100.0);
    assert!((0.15..0.25).contains(&rate), "fault rate {rate}");
    assert_eq!(reqs.len(), N + faulted, "exactly one clean request per item");
    assert!(took < Duration::from_secs(40), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_outstanding_balancing_survives_a_killed_endpoint() {
    let fast = Arc::new(FakeServer::start(FakeOptions::default().latency(Duration::from_millis(5))).await);
    let mid = Arc::new(FakeServer::start(FakeOptions::default().latency(Duration::from_millis(20))).await);
    let slow = Arc::new(FakeServer::start(FakeOptions::default().latency(Duration::from_millis(60))).await);
    let mut c = OpenAiConfig::with_pool(vec![fast.base_url(), mid.base_url(), slow.base_url()], "fake-model");
    c.timeout_s = 2.0;
    c.retry_backoff_ms = 10;
    c.retry_backoff_max_s = 0.2;
    c.cooldown_s = 0.2;
    c.max_retries = 8;
    let model = Arc::new(client(c));
    const N: usize = 3000;
    let at_kill: Arc<Mutex<Option<[usize; 3]>>> = Arc::new(Mutex::new(None));
    let on_done = {
        let (fast, mid, slow, at_kill) = (fast.clone(), mid.clone(), slow.clone(), at_kill.clone());
        Arc::new(move |done: usize| {
            if done == N / 2 {
                *at_kill.lock().unwrap() = Some([fast.chat_count(), mid.chat_count(), slow.chat_count()]);
                fast.kill();
            }
        })
    };
    let t = Instant::now();
    let results = run_items(model.clone(), N, 48, on_done).await;
    assert_eq!(results.len(), N);
    for (i, texts) in &results {
        assert_eq!(texts, &vec![expected_answer(&format!("item {i}"), Some(*i as u64), 0)]);
    }
    let [f, m, s] = at_kill.lock().unwrap().expect("kill happened");
    let after = [fast.chat_count(), mid.chat_count(), slow.chat_count()];
    eprintln!("balance before kill (5/20/60 ms): {f}/{m}/{s}; at end: {after:?}; {:?}", t.elapsed());
    eprintln!("stats: {:?}", model.endpoint_stats());
    assert!(f > m && m > s, "faster endpoints take more calls: {f}/{m}/{s}");
    assert!(f >= 3 * s, "5 ms vs 60 ms: {f} vs {s}");
    assert!(after[0] <= f + 48, "killed endpoint kept getting calls: {} vs {f}", after[0]);
    assert!(after[1] > m && after[2] > s, "the survivors took the rest");
    assert!(!model.endpoint_stats()[0].up, "killed endpoint is out of rotation");
}

// ---- #24: empty replies, seeds, readiness, dead servers, affinity --------

#[tokio::test]
async fn an_empty_reply_the_model_finished_is_an_answer() {
    // vLLM answers `content: ""`, `finish_reason: "stop"` when the model
    // ends at once (after a thought prefill, say): one call, no retry.
    let fake = FakeServer::start(FakeOptions::default().responder(|_: &[Message]| String::new())).await;
    let out = client(cfg(&fake.base_url())).chat(&req("q")).await.unwrap();
    assert_eq!(out.texts, vec![String::new()]);
    assert_eq!(out.finish_reasons, vec!["stop"]);
    assert_eq!(fake.chat_count(), 1);
    // Empty and unfinished is broken: retried, then reported as malformed.
    let broken = FakeServer::start(FakeOptions::default().script(|_, _| Some(Fault::EmptyContent))).await;
    let mut c = cfg(&broken.base_url());
    c.max_retries = 1;
    let e = client(c).chat(&req("q")).await.unwrap_err();
    assert!(matches!(&e, ModelError::Malformed { detail, .. } if detail.contains("empty content")), "{e}");
    assert_eq!(broken.chat_count(), 2);
}

#[tokio::test]
async fn send_seed_false_sends_no_seed_and_says_so_in_the_identity() {
    let fake = FakeServer::start(FakeOptions::default()).await;
    let mut c = cfg(&fake.base_url());
    let seeded_identity = client(c.clone()).identity();
    c.send_seed = false;
    let model = client(c);
    assert_ne!(model.identity(), seeded_identity);
    assert!(model.identity().contains("\"send_seed\":false"), "{}", model.identity());
    model.chat(&seeded("q", 5)).await.unwrap();
    assert!(fake.chat_requests()[0].body.get("seed").is_none(), "{}", fake.chat_requests()[0].body);
    // From TOML: the key, its default and a serialisation that leaves the
    // default out (so existing keys do not change).
    let parsed: OpenAiConfig = toml::from_str("base_url = \"http://127.0.0.1:1/v1\"\nmodel = \"m\"").unwrap();
    assert!(parsed.send_seed);
    assert!(!serde_json::to_string(&parsed).unwrap().contains("send_seed"));
}

#[tokio::test]
async fn readiness_takes_a_chat_answer_not_only_the_model_list() {
    let fake = FakeServer::start(FakeOptions::default()).await;
    client(cfg(&fake.base_url())).ready().await.unwrap();
    assert_eq!(fake.probe_count(), 1, "one 1-token chat request");
    assert_eq!(fake.chat_count(), 0, "the probe is not part of the workload");
    // Lists its model, fails every chat request: not ready, and says why.
    let sick = FakeServer::start(FakeOptions::default().script(|_, _| Some(Fault::ServerError))).await;
    let mut c = cfg(&sick.base_url());
    c.ready_timeout_s = 30.0;
    let t = Instant::now();
    let e = client(c).ready().await.unwrap_err();
    let text = e.to_string();
    assert!(text.contains("1-token chat request") && text.contains("HTTP 500"), "{text}");
    assert!(t.elapsed() < Duration::from_secs(10), "fails fast, not at the ready timeout: {:?}", t.elapsed());
    assert_eq!(sick.probe_count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_to_a_dead_server_fail_fast_once_it_has_been_down_a_while() {
    let addr = reserve_addr().await; // nothing listens there
    let mut c = cfg(&format!("http://{addr}/v1"));
    c.max_retries = 50;
    c.retry_backoff_ms = 50;
    c.retry_backoff_max_s = 0.1;
    c.cooldown_s = 30.0;
    c.dead_after_s = 0.3;
    let model = client(c);
    // The first call retries until the server has refused for 0.3 s.
    let t = Instant::now();
    let e = model.chat(&req("q")).await.unwrap_err();
    assert!(e.to_string().contains("refused connections") && e.to_string().contains("the server is down"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    // Later calls fail at once: no retries against a dead server.
    let t = Instant::now();
    for _ in 0..100 {
        assert!(model.chat(&req("q")).await.is_err());
    }
    assert!(t.elapsed() < Duration::from_secs(1), "100 calls took {:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_turn_of_an_episode_reaches_one_replica() {
    let a = FakeServer::start(FakeOptions::default().latency(Duration::from_millis(2))).await;
    let b = FakeServer::start(FakeOptions::default().latency(Duration::from_millis(2))).await;
    let mut c = OpenAiConfig::with_pool(vec![a.base_url(), b.base_url()], "fake-model");
    c.timeout_s = 5.0;
    let model = Arc::new(client(c));
    // 64 episodes of 6 turns, 16 at a time, each turn sent after the last.
    let mut set = tokio::task::JoinSet::new();
    let sem = Arc::new(tokio::sync::Semaphore::new(16));
    for ep in 0..64u64 {
        let (model, sem) = (model.clone(), sem.clone());
        set.spawn(async move {
            let _p = sem.acquire().await.unwrap();
            let mut r = req(&format!("episode {ep}"));
            r.session = Some(ep.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            for turn in 0..6 {
                let out = model.chat(&r).await.unwrap();
                r.messages.push(Message::assistant(out.texts[0].clone()));
                r.messages.push(Message::user(format!("Observation {turn}")));
            }
        });
    }
    while let Some(j) = set.join_next().await {
        j.unwrap();
    }
    let sessions = |f: &FakeServer| -> HashMap<String, usize> {
        let mut m = HashMap::new();
        for r in f.chat_requests() {
            *m.entry(r.header("x-session-id").expect("a session header").to_string()).or_default() += 1;
        }
        m
    };
    let (sa, sb) = (sessions(&a), sessions(&b));
    assert_eq!(sa.len() + sb.len(), 64, "every session on exactly one replica");
    assert!(sa.keys().all(|k| !sb.contains_key(k)));
    assert!(sa.values().chain(sb.values()).all(|&n| n == 6), "all six turns of each on its replica");
    assert!(sa.len() >= 16 && sb.len() >= 16, "sessions spread over both: {} vs {}", sa.len(), sb.len());
    // Requests without a session are balanced by load, as before.
    let before = (a.chat_count(), b.chat_count());
    for i in 0..40 {
        model.chat(&req(&format!("lone {i}"))).await.unwrap();
    }
    assert!(a.chat_count() > before.0 && b.chat_count() > before.1);
}
