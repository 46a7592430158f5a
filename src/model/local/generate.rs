//! Sampling and the step-synchronous scheduler: per-sequence host RNG
//! (same seed ⇒ same tokens whatever the batch), temperature / top-k / top-p,
//! greedy at temperature 0, EOS and stop-string stops, and a [`Scheduler`]
//! that admits sequences at any step (continuous batching), prefills the new
//! ones together, decodes the running ones together, and reuses KV caches of
//! earlier turns through an LRU [`PrefixCache`].

use std::collections::VecDeque;

use super::runner::{Runner, SeqKv};
use super::tokenizer::ChatTokenizer;

/// xoshiro256** seeded through splitmix64.
#[derive(Clone, Debug)]
pub struct Rng([u64; 4]);

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Self([next(), next(), next(), next()])
    }
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let out = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        out
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// How to sample one sequence.
#[derive(Clone, Debug, PartialEq)]
pub struct GenParams {
    pub max_new_tokens: usize,
    /// 0 ⇒ greedy.
    pub temperature: f64,
    pub top_p: f64,
    /// 0 ⇒ off.
    pub top_k: usize,
    pub seed: u64,
    pub stop: Vec<String>,
    /// Stop on these ids (`None` ⇒ the model's EOS ids).
    pub eos_ids: Option<Vec<u32>>,
}

impl Default for GenParams {
    fn default() -> Self {
        Self { max_new_tokens: 256, temperature: 0.0, top_p: 1.0, top_k: 0, seed: 0, stop: Vec::new(), eos_ids: None }
    }
}

/// Why a sequence ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    Stop,
    Length,
}

impl Finish {
    pub fn as_str(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
        }
    }
}

/// One generated sequence.
#[derive(Clone, Debug, PartialEq)]
pub struct GenOutput {
    /// New tokens (an EOS that ended it included).
    pub tokens: Vec<u32>,
    /// Decoded text, cut before a stop string.
    pub text: String,
    pub finish: Finish,
    /// Prompt tokens whose KV came from the prefix cache.
    pub reused_tokens: usize,
}

/// Picks the next token from `logits`.
pub fn sample(logits: &[f32], p: &GenParams, rng: &mut Rng) -> u32 {
    let argmax = || {
        let mut best = 0;
        for (i, &x) in logits.iter().enumerate() {
            if x > logits[best] {
                best = i;
            }
        }
        best as u32
    };
    if p.temperature <= 0.0 {
        return argmax();
    }
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    if p.top_k > 0 && p.top_k < idx.len() {
        idx.truncate(p.top_k);
    }
    let max = logits[idx[0]] as f64;
    let mut probs: Vec<f64> = idx.iter().map(|&i| ((logits[i] as f64 - max) / p.temperature).exp()).collect();
    let total: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|x| *x /= total);
    if p.top_p < 1.0 {
        let mut cum = 0.0;
        let mut keep = probs.len();
        for (j, &x) in probs.iter().enumerate() {
            cum += x;
            if cum >= p.top_p {
                keep = j + 1;
                break;
            }
        }
        probs.truncate(keep);
        idx.truncate(keep);
    }
    let total: f64 = probs.iter().sum();
    let mut u = rng.uniform() * total;
    for (j, &x) in probs.iter().enumerate() {
        if u < x {
            return idx[j] as u32;
        }
        u -= x;
    }
    idx[idx.len() - 1] as u32
}

/// LRU cache of KV caches keyed by their token sequence.
#[derive(Default)]
pub struct PrefixCache {
    entries: Vec<(SeqKv, u64)>,
    clock: u64,
    pub budget_tokens: usize,
    pub hits_tokens: u64,
}

impl PrefixCache {
    pub fn new(budget_tokens: usize) -> Self {
        Self { budget_tokens, ..Default::default() }
    }

    /// A copy of the cached KV sharing the longest prefix with `tokens`,
    /// truncated to that prefix (at most `tokens.len() - 1`, so at least one
    /// token is left to feed).
    pub fn lookup(&mut self, tokens: &[u32], per_token: usize) -> Option<SeqKv> {
        if self.budget_tokens == 0 || tokens.len() < 2 {
            return None;
        }
        let limit = tokens.len() - 1;
        let mut best: Option<(usize, usize)> = None;
        for (ei, (kv, _)) in self.entries.iter().enumerate() {
            let lcp = kv.tokens.iter().zip(tokens).take(limit).take_while(|(a, b)| a == b).count();
            if lcp > 0 && best.is_none_or(|(_, l)| lcp > l) {
                best = Some((ei, lcp));
            }
        }
        let (ei, lcp) = best?;
        self.clock += 1;
        self.entries[ei].1 = self.clock;
        self.hits_tokens += lcp as u64;
        let mut kv = self.entries[ei].0.clone();
        kv.truncate(lcp, per_token);
        Some(kv)
    }

    pub fn insert(&mut self, kv: SeqKv) {
        if self.budget_tokens == 0 || kv.is_empty() || kv.len() > self.budget_tokens {
            return;
        }
        // Entries that are a prefix of the new one are superseded.
        self.entries.retain(|(e, _)| !(e.len() <= kv.len() && kv.tokens[..e.len()] == e.tokens[..]));
        self.clock += 1;
        self.entries.push((kv, self.clock));
        let mut total: usize = self.entries.iter().map(|(e, _)| e.len()).sum();
        while total > self.budget_tokens {
            let Some(oldest) = self.entries.iter().enumerate().min_by_key(|(_, (_, t))| *t).map(|(i, _)| i) else { break };
            total -= self.entries[oldest].0.len();
            self.entries.swap_remove(oldest);
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A sequence in the scheduler.
struct Active<T> {
    tag: T,
    params: GenParams,
    rng: Rng,
    kv: SeqKv,
    /// Tokens still to feed (the prompt's uncached rest, then each sampled token).
    pending: Vec<u32>,
    generated: Vec<u32>,
    reused: usize,
}

/// Step-synchronous continuous batching over one [`Runner`].
pub struct Scheduler<T> {
    queue: VecDeque<(T, Vec<u32>, GenParams)>,
    active: Vec<Active<T>>,
    pub cache: PrefixCache,
    pub max_batch: usize,
    /// Upper bound on padded prompt tokens in one prefill pass.
    pub max_prefill_tokens: usize,
}

impl<T> Scheduler<T> {
    pub fn new(max_batch: usize, cache_tokens: usize) -> Self {
        Self {
            queue: VecDeque::new(),
            active: Vec::new(),
            cache: PrefixCache::new(cache_tokens),
            max_batch: max_batch.max(1),
            max_prefill_tokens: 16384,
        }
    }

    pub fn submit(&mut self, tag: T, prompt: Vec<u32>, params: GenParams) {
        self.queue.push_back((tag, prompt, params));
    }

    pub fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.active.is_empty()
    }

    /// Admits queued sequences, runs one prefill pass (new sequences) or one
    /// decode pass (running ones), samples, and returns the finished ones.
    pub fn step(&mut self, runner: &Runner, tok: &ChatTokenizer, eos: &[u32]) -> Vec<(T, GenOutput)> {
        let per_token = runner.arch.num_key_value_heads * runner.arch.head_dim;
        let n_layers = runner.arch.num_hidden_layers;
        while self.active.len() < self.max_batch {
            let Some((tag, prompt, params)) = self.queue.pop_front() else { break };
            let mut kv = self.cache.lookup(&prompt, per_token).unwrap_or_else(|| SeqKv::new(n_layers));
            let reused = kv.len();
            if kv.layers.len() != n_layers {
                kv = SeqKv::new(n_layers);
            }
            let mut pending = prompt[kv.len()..].to_vec();
            if pending.is_empty() {
                pending = vec![0];
            }
            let rng = Rng::new(params.seed);
            self.active.push(Active { tag, params, rng, kv, pending, generated: Vec::new(), reused });
        }
        if self.active.is_empty() {
            return Vec::new();
        }
        // Prefill rows (more than one pending token) go first, in one pass
        // bounded by max_prefill_tokens; otherwise every row decodes.
        let prefill: Vec<usize> = (0..self.active.len()).filter(|&i| self.active[i].pending.len() > 1).collect();
        let rows: Vec<usize> = if prefill.is_empty() {
            (0..self.active.len()).collect()
        } else {
            let mut chosen = Vec::new();
            let mut longest = 0;
            for &i in &prefill {
                let l = longest.max(self.active[i].pending.len() + self.active[i].kv.len());
                if !chosen.is_empty() && l * (chosen.len() + 1) > self.max_prefill_tokens {
                    break;
                }
                longest = l;
                chosen.push(i);
            }
            chosen
        };
        let logits = {
            let mut refs: Vec<&mut Active<T>> = Vec::with_capacity(rows.len());
            let mut wanted = rows.iter().peekable();
            for (i, a) in self.active.iter_mut().enumerate() {
                if wanted.peek() == Some(&&i) {
                    refs.push(a);
                    wanted.next();
                }
            }
            let news: Vec<Vec<u32>> = refs.iter_mut().map(|a| std::mem::take(&mut a.pending)).collect();
            let new_refs: Vec<&[u32]> = news.iter().map(Vec::as_slice).collect();
            let mut kvs: Vec<&mut SeqKv> = refs.into_iter().map(|a| &mut a.kv).collect();
            runner.step(&mut kvs, &new_refs)
        };
        let mut done = Vec::new();
        for (&i, row_logits) in rows.iter().zip(logits.iter()) {
            let a = &mut self.active[i];
            let t = sample(row_logits, &a.params, &mut a.rng);
            a.generated.push(t);
            let stop_ids = a.params.eos_ids.as_deref().unwrap_or(eos);
            let mut finish = None;
            let mut text = None;
            if stop_ids.contains(&t) {
                finish = Some(Finish::Stop);
            } else if !a.params.stop.is_empty() {
                let s = tok.decode(&a.generated);
                if let Some(cut) = a.params.stop.iter().filter_map(|st| s.find(st.as_str())).min() {
                    text = Some(s[..cut].to_string());
                    finish = Some(Finish::Stop);
                }
            }
            if finish.is_none() && a.generated.len() >= a.params.max_new_tokens {
                finish = Some(Finish::Length);
            }
            match finish {
                Some(f) => done.push((i, f, text)),
                None => a.pending = vec![t],
            }
        }
        let mut out = Vec::new();
        for (i, f, text) in done.into_iter().rev() {
            let a = self.active.swap_remove(i);
            let text = text.unwrap_or_else(|| tok.decode(&a.generated));
            self.cache.insert(a.kv);
            out.push((a.tag, GenOutput { tokens: a.generated, text, finish: f, reused_tokens: a.reused }));
        }
        out
    }
}
