//! The worker pool: at most `workers` bridge processes, each leased to one
//! episode at a time. Workers start lazily and are reused across episodes; a
//! worker that fails at the transport level is killed on the spot and the
//! next lease starts a fresh one in its place.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::worker::{Worker, WorkerFailure};
use crate::env::EnvError;

pub(crate) struct PoolConfig {
    pub python: String,
    pub script: PathBuf,
    pub start_timeout: Duration,
    pub request_timeout: Duration,
    /// Extra environment variables of the workers.
    pub env: Vec<(String, String)>,
}

pub(crate) struct Pool {
    cfg: PoolConfig,
    idle: Mutex<Vec<Worker>>,
    sem: Arc<Semaphore>,
    /// Pids of this pool's live workers (idle or leased).
    pids: Arc<Mutex<HashSet<i32>>>,
    started: AtomicUsize,
    failed: AtomicUsize,
}

/// Counters of a pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Workers started so far.
    pub started: usize,
    /// Workers killed after a transport failure (dead, hung, garbage).
    pub failed: usize,
    /// Workers alive now.
    pub alive: usize,
}

impl Pool {
    pub fn new(cfg: PoolConfig, workers: usize) -> Pool {
        Pool {
            cfg,
            idle: Mutex::new(Vec::new()),
            sem: Arc::new(Semaphore::new(workers.max(1))),
            pids: Arc::new(Mutex::new(HashSet::new())),
            started: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
        }
    }

    pub fn pids(&self) -> Vec<i32> {
        let mut v: Vec<i32> = self.pids.lock().unwrap().iter().copied().collect();
        v.sort_unstable();
        v
    }

    pub fn stats(&self) -> PoolStats {
        PoolStats {
            started: self.started.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            alive: self.pids.lock().unwrap().len(),
        }
    }

    /// Waits for a free slot and returns it with a live worker.
    pub async fn acquire(self: &Arc<Self>) -> Result<Lease, EnvError> {
        let permit = self.sem.clone().acquire_owned().await.map_err(|_| EnvError("worker pool closed".into()))?;
        loop {
            let w = self.idle.lock().unwrap().pop();
            let Some(mut w) = w else { break };
            if w.exited() {
                self.failed.fetch_add(1, Ordering::Relaxed);
                self.forget(w);
            } else {
                return Ok(Lease { worker: Some(w), pool: self.clone(), _permit: permit });
            }
        }
        let w = Worker::spawn(&self.cfg.python, &self.cfg.script, &self.cfg.env, self.cfg.start_timeout, self.cfg.request_timeout)
            .await
            .map_err(EnvError)?;
        self.started.fetch_add(1, Ordering::Relaxed);
        self.pids.lock().unwrap().insert(w.pid());
        Ok(Lease { worker: Some(w), pool: self.clone(), _permit: permit })
    }

    /// Kills a worker (dropping it kills its process group).
    fn forget(&self, w: Worker) {
        self.pids.lock().unwrap().remove(&w.pid());
        drop(w);
    }

    /// Kills the idle workers (leased ones die with their episodes).
    pub fn shutdown_idle(&self) {
        let ws: Vec<Worker> = std::mem::take(&mut *self.idle.lock().unwrap());
        for w in ws {
            self.forget(w);
        }
    }
}

/// A worker leased to one episode. Dropping a lease without
/// [`Lease::release`] kills its worker (its protocol state is unknown).
pub(crate) struct Lease {
    worker: Option<Worker>,
    pool: Arc<Pool>,
    _permit: OwnedSemaphorePermit,
}

impl Lease {
    /// One request. A transport failure kills the worker; a request the
    /// bridge refused leaves it usable. Both are [`EnvError`]s.
    pub async fn request(&mut self, req: Value) -> Result<Value, EnvError> {
        let w = self
            .worker
            .as_mut()
            .ok_or_else(|| EnvError("this episode's ScienceWorld worker was lost earlier".into()))?;
        match w.request(req).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(msg)) => Err(EnvError(format!("ScienceWorld: {msg}"))),
            Err(WorkerFailure(msg)) => {
                self.kill();
                Err(EnvError(msg))
            }
        }
    }

    /// Kills the worker (after a reply that made no sense).
    pub fn kill(&mut self) {
        if let Some(w) = self.worker.take() {
            self.pool.failed.fetch_add(1, Ordering::Relaxed);
            self.pool.forget(w);
        }
    }

    /// Returns a healthy worker to the pool.
    pub fn release(mut self) {
        if let Some(w) = self.worker.take() {
            self.pool.idle.lock().unwrap().push(w);
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(w) = self.worker.take() {
            self.pool.forget(w);
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shutdown_idle();
    }
}
