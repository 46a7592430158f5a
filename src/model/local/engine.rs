//! The engine thread of a local model: owns a copy of the network, receives
//! sequences from any number of concurrent `chat` callers through a channel,
//! and runs them through one [`Scheduler`] (shared forward passes, prefix KV
//! reuse across a conversation's turns), answering each on a oneshot channel.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::generate::{GenOutput, GenParams, Scheduler};
use super::runner::Runner;
use super::tokenizer::ChatTokenizer;
use crate::model::ModelError;

struct Job {
    prompt: Vec<u32>,
    params: GenParams,
    reply: oneshot::Sender<GenOutput>,
}

pub struct Engine {
    tx: mpsc::Sender<Job>,
    steps: Arc<AtomicU64>,
    reused: Arc<AtomicU64>,
}

impl Engine {
    pub fn start(runner: Runner, tok: Arc<ChatTokenizer>, eos: Vec<u32>, max_batch: usize, cache_tokens: usize) -> Self {
        let (tx, rx) = mpsc::channel::<Job>();
        let steps = Arc::new(AtomicU64::new(0));
        let reused = Arc::new(AtomicU64::new(0));
        let (s2, r2) = (steps.clone(), reused.clone());
        let spawned = std::thread::Builder::new().name("mpo-local-engine".into()).spawn(move || {
            let mut sched: Scheduler<oneshot::Sender<GenOutput>> = Scheduler::new(max_batch, cache_tokens);
            loop {
                if sched.is_idle() {
                    match rx.recv() {
                        Ok(job) => sched.submit(job.reply, job.prompt, job.params),
                        Err(_) => return, // every sender dropped
                    }
                }
                while let Ok(job) = rx.try_recv() {
                    sched.submit(job.reply, job.prompt, job.params);
                }
                for (reply, out) in sched.step(&runner, &tok, &eos) {
                    r2.fetch_add(out.reused_tokens as u64, Ordering::Relaxed);
                    let _ = reply.send(out); // the caller may have gone
                }
                s2.fetch_add(1, Ordering::Relaxed);
            }
        });
        if let Err(e) = spawned {
            tracing::error!("cannot start the local model engine thread: {e}");
        }
        Self { tx, steps, reused }
    }

    /// Queues one sequence; the receiver yields its output.
    pub fn submit(&self, prompt: Vec<u32>, params: GenParams) -> Result<oneshot::Receiver<GenOutput>, ModelError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job { prompt, params, reply })
            .map_err(|_| ModelError::Other("local model engine is not running".into()))?;
        Ok(rx)
    }

    /// (forward passes so far, prompt tokens reused from the prefix cache).
    pub fn stats(&self) -> (u64, u64) {
        (self.steps.load(Ordering::Relaxed), self.reused.load(Ordering::Relaxed))
    }
}
