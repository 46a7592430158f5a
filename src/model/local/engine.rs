//! The engine thread of a local model: owns a copy of the network, receives
//! sequences from any number of concurrent `chat` callers through a channel,
//! and runs them through one [`Scheduler`] (shared forward passes, prefix KV
//! reuse across a conversation's turns), answering each on a oneshot channel.
//! A request is ranked by the age of its session (the order in which the
//! engine first saw it), so episodes under way are served before new ones.

use std::collections::HashMap;
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
    session: Option<u64>,
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
            let mut ages = SessionAges::default();
            loop {
                if sched.is_idle() {
                    match rx.recv() {
                        Ok(job) => sched.submit(job.reply, job.prompt, job.params, ages.rank(job.session)),
                        Err(_) => return, // every sender dropped
                    }
                }
                while let Ok(job) = rx.try_recv() {
                    sched.submit(job.reply, job.prompt, job.params, ages.rank(job.session));
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

    /// Queues one sequence of `session` (a conversation; `None`: a request
    /// of its own); the receiver yields its output.
    pub fn submit(&self, prompt: Vec<u32>, params: GenParams, session: Option<u64>) -> Result<oneshot::Receiver<GenOutput>, ModelError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job { prompt, params, session, reply })
            .map_err(|_| ModelError::Other("local model engine is not running".into()))?;
        Ok(rx)
    }

    /// (forward passes so far, prompt tokens reused from the prefix cache).
    pub fn stats(&self) -> (u64, u64) {
        (self.steps.load(Ordering::Relaxed), self.reused.load(Ordering::Relaxed))
    }
}

/// Ranks of sessions: the order in which the engine first saw each one. A
/// request without a session is a conversation of its own (a new rank).
/// Only the most recent sessions are remembered (an episode is short); one
/// that returns after being forgotten simply ranks as new.
#[derive(Default)]
struct SessionAges {
    first_seen: HashMap<u64, u64>,
    next: u64,
}

impl SessionAges {
    const REMEMBERED: u64 = 1 << 16;

    fn rank(&mut self, session: Option<u64>) -> u64 {
        self.next += 1;
        let Some(s) = session else { return self.next };
        let next = self.next;
        let rank = *self.first_seen.entry(s).or_insert(next);
        if self.first_seen.len() as u64 > 2 * Self::REMEMBERED {
            let cutoff = self.next - Self::REMEMBERED;
            self.first_seen.retain(|_, &mut r| r > cutoff);
        }
        rank
    }
}

#[cfg(test)]
mod tests {
    use super::SessionAges;

    #[test]
    fn a_session_keeps_the_rank_of_its_first_request() {
        let mut ages = SessionAges::default();
        let a = ages.rank(Some(7));
        let lone = ages.rank(None);
        let b = ages.rank(Some(9));
        assert!(a < lone && lone < b);
        assert_eq!(ages.rank(Some(7)), a, "a later turn of session 7 keeps its age");
        assert_eq!(ages.rank(Some(9)), b);
        assert!(ages.rank(None) > b, "a request without a session is new");
    }
}
