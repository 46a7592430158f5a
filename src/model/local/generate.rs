//! Sampling and the step-synchronous scheduler: per-sequence host RNG
//! (same seed ⇒ same tokens whatever the batch), temperature / top-k / top-p,
//! greedy at temperature 0, EOS and stop-string stops, and a [`Scheduler`]
//! that admits sequences at any step (continuous batching) oldest
//! conversation first, runs new and running sequences in one pass where the
//! runner allows it, and reuses KV caches of earlier turns through an LRU
//! [`PrefixCache`].

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

use rayon::prelude::*;

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

/// LRU cache of KV caches, one entry per conversation (`owner`: the
/// scheduler's rank of the request, which the engine derives from the
/// request's session).
///
/// A conversation's next turn finds its own entry through the index and
/// takes it out, truncated to the shared prefix, without copying it (it goes
/// back, longer, when the turn finishes). A conversation's first turn, which
/// has no entry of its own, scans the others for the longest shared prefix
/// (a common system prompt, one-shot example or task) and copies only that
/// prefix.
#[derive(Default)]
pub struct PrefixCache {
    entries: HashMap<u64, (SeqKv, u64)>,
    /// Last use → owner, for LRU eviction.
    order: BTreeMap<u64, u64>,
    total: usize,
    clock: u64,
    pub budget_tokens: usize,
    pub hits_tokens: u64,
}

fn common_prefix(a: &[u32], b: &[u32], limit: usize) -> usize {
    a.iter().zip(b).take(limit).take_while(|(x, y)| x == y).count()
}

impl PrefixCache {
    pub fn new(budget_tokens: usize) -> Self {
        Self { budget_tokens, ..Default::default() }
    }

    /// The cached KV sharing the longest prefix with `tokens`, truncated to
    /// that prefix (at most `tokens.len() - 1`, so at least one token is
    /// left to feed): `owner`'s own entry, taken out of the cache, if it
    /// shares any prefix; else a copy of the best prefix of another entry.
    pub fn lookup(&mut self, owner: u64, tokens: &[u32], per_token: usize) -> Option<SeqKv> {
        if self.budget_tokens == 0 || tokens.len() < 2 {
            return None;
        }
        let limit = tokens.len() - 1;
        if let Some((kv, _)) = self.entries.get(&owner) {
            let lcp = common_prefix(&kv.tokens, tokens, limit);
            if lcp > 0 {
                let (mut kv, used) = self.entries.remove(&owner).expect("entry just seen");
                self.order.remove(&used);
                self.total -= kv.len();
                self.hits_tokens += lcp as u64;
                kv.truncate(lcp, per_token);
                return Some(kv);
            }
        }
        let (best, lcp) = self
            .entries
            .iter()
            .map(|(&o, (kv, _))| (o, common_prefix(&kv.tokens, tokens, limit)))
            .filter(|&(_, l)| l > 0)
            .max_by_key(|&(o, l)| (l, std::cmp::Reverse(o)))?;
        self.touch(best);
        self.hits_tokens += lcp as u64;
        let kv = &self.entries[&best].0;
        let mut copy = SeqKv { tokens: kv.tokens[..lcp].to_vec(), layers: Vec::with_capacity(kv.layers.len()) };
        for (k, v) in &kv.layers {
            copy.layers.push((k[..lcp * per_token].to_vec(), v[..lcp * per_token].to_vec()));
        }
        Some(copy)
    }

    fn touch(&mut self, owner: u64) {
        self.clock += 1;
        if let Some((_, used)) = self.entries.get_mut(&owner) {
            self.order.remove(used);
            *used = self.clock;
            self.order.insert(self.clock, owner);
        }
    }

    /// Keeps `kv` as `owner`'s entry (replacing an older one), then evicts
    /// the least recently used entries beyond the budget.
    pub fn insert(&mut self, owner: u64, kv: SeqKv) {
        if self.budget_tokens == 0 || kv.is_empty() || kv.len() > self.budget_tokens {
            return;
        }
        self.clock += 1;
        self.total += kv.len();
        self.order.insert(self.clock, owner);
        if let Some((old, used)) = self.entries.insert(owner, (kv, self.clock)) {
            self.order.remove(&used);
            self.total -= old.len();
        }
        while self.total > self.budget_tokens {
            let Some((_, oldest)) = self.order.pop_first() else { break };
            if let Some((kv, _)) = self.entries.remove(&oldest) {
                self.total -= kv.len();
            }
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
    rank: u64,
    params: GenParams,
    rng: Rng,
    kv: SeqKv,
    /// Tokens still to feed (the prompt's uncached rest, then each sampled token).
    pending: Vec<u32>,
    generated: Vec<u32>,
    reused: usize,
}

/// A sequence waiting for a slot, ordered by rank (then arrival).
struct Queued<T> {
    rank: u64,
    arrival: u64,
    tag: T,
    prompt: Vec<u32>,
    params: GenParams,
}

impl<T> Queued<T> {
    fn key(&self) -> (u64, u64) {
        (self.rank, self.arrival)
    }
}
impl<T> PartialEq for Queued<T> {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl<T> Eq for Queued<T> {}
impl<T> PartialOrd for Queued<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Queued<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

/// Step-synchronous continuous batching over one [`Runner`].
///
/// Waiting sequences are admitted lowest rank first. The engine ranks a
/// request by the age of its conversation (the first time it saw the
/// session), so the turns of episodes already under way go before the
/// first turns of new ones: with more episodes in flight than `max_batch`,
/// episodes finish one after another (and are journaled as they do)
/// instead of all advancing in lockstep and finishing together at the end
/// of a stage, and fewer conversations hold prefix-cache entries at once.
/// Ranks never change what a sequence generates.
pub struct Scheduler<T> {
    queue: BinaryHeap<Reverse<Queued<T>>>,
    arrivals: u64,
    active: Vec<Active<T>>,
    pub cache: PrefixCache,
    pub max_batch: usize,
    /// Upper bound on padded prompt tokens in one prefill pass.
    pub max_prefill_tokens: usize,
}

impl<T: Send> Scheduler<T> {
    pub fn new(max_batch: usize, cache_tokens: usize) -> Self {
        Self {
            queue: BinaryHeap::new(),
            arrivals: 0,
            active: Vec::new(),
            cache: PrefixCache::new(cache_tokens),
            max_batch: max_batch.max(1),
            max_prefill_tokens: 16384,
        }
    }

    /// Queues a sequence; lower `rank` is admitted first, equal ranks in
    /// arrival order.
    pub fn submit(&mut self, tag: T, prompt: Vec<u32>, params: GenParams, rank: u64) {
        self.arrivals += 1;
        self.queue.push(Reverse(Queued { rank, arrival: self.arrivals, tag, prompt, params }));
    }

    pub fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.active.is_empty()
    }

    /// The active rows (ascending) that the next pass feeds.
    ///
    /// On the host-attention path a row's numbers do not depend on the
    /// other rows of its pass, so running sequences (one token each) and new
    /// ones (their prompt's uncached rest) share one pass: every running
    /// row, and new rows in admission order while the pass stays within
    /// `max_prefill_tokens` new tokens (always at least one). The padded
    /// path pads every row to the longest, so there new rows go first in a
    /// pass of their own, bounded by `max_prefill_tokens` padded tokens,
    /// and running rows decode together otherwise.
    fn pick_rows(&self, mixed: bool) -> Vec<usize> {
        let prefill: Vec<usize> = (0..self.active.len()).filter(|&i| self.active[i].pending.len() > 1).collect();
        if prefill.is_empty() {
            return (0..self.active.len()).collect();
        }
        let mut chosen = Vec::new();
        if mixed {
            let mut tokens = self.active.len() - prefill.len();
            let mut taken = 0;
            for &i in &prefill {
                let n = self.active[i].pending.len();
                if taken > 0 && tokens + n > self.max_prefill_tokens {
                    break;
                }
                tokens += n;
                taken += 1;
                chosen.push(i);
            }
            chosen.extend((0..self.active.len()).filter(|&i| self.active[i].pending.len() == 1));
            chosen.sort_unstable();
            return chosen;
        }
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
    }

    /// Admits queued sequences (lowest rank first), runs one pass over the
    /// rows [`Self::pick_rows`] chooses, samples, and returns the finished
    /// ones.
    pub fn step(&mut self, runner: &Runner, tok: &ChatTokenizer, eos: &[u32]) -> Vec<(T, GenOutput)> {
        let per_token = runner.arch.num_key_value_heads * runner.arch.head_dim;
        let n_layers = runner.arch.num_hidden_layers;
        while self.active.len() < self.max_batch {
            let Some(Reverse(Queued { tag, prompt, params, rank, .. })) = self.queue.pop() else { break };
            let mut kv = self.cache.lookup(rank, &prompt, per_token).unwrap_or_else(|| SeqKv::new(n_layers));
            let reused = kv.len();
            if kv.layers.len() != n_layers {
                kv = SeqKv::new(n_layers);
            }
            let mut pending = prompt[kv.len()..].to_vec();
            if pending.is_empty() {
                pending = vec![0];
            }
            let rng = Rng::new(params.seed);
            self.active.push(Active { tag, rank, params, rng, kv, pending, generated: Vec::new(), reused });
        }
        if self.active.is_empty() {
            return Vec::new();
        }
        let rows = self.pick_rows(runner.host_decode);
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
        // Sampling (and stop-string checks) per row, rows in parallel: each
        // row has its own RNG, so the tokens do not depend on the order.
        let mut picked: Vec<(usize, &mut Active<T>)> = self.active.iter_mut().enumerate().filter(|(i, _)| rows.binary_search(i).is_ok()).collect();
        let verdicts: Vec<(usize, Option<Finish>, Option<String>)> = picked
            .par_iter_mut()
            .zip(logits.par_iter())
            .map(|((i, a), row_logits)| {
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
                if finish.is_none() {
                    a.pending = vec![t];
                }
                (*i, finish, text)
            })
            .collect();
        drop(picked);
        let done: Vec<(usize, Finish, Option<String>)> = verdicts.into_iter().filter_map(|(i, f, text)| f.map(|f| (i, f, text))).collect();
        let mut out = Vec::new();
        for (i, f, text) in done.into_iter().rev() {
            let a = self.active.swap_remove(i);
            let text = text.unwrap_or_else(|| tok.decode(&a.generated));
            self.cache.insert(a.rank, a.kv);
            out.push((a.tag, GenOutput { tokens: a.generated, text, finish: f, reused_tokens: a.reused }));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::{PrefixCache, SeqKv};

    /// A one-layer cache of `tokens` whose keys/values are the token ids
    /// (one float per token).
    fn kv(tokens: &[u32]) -> SeqKv {
        let vals: Vec<f32> = tokens.iter().map(|&t| t as f32).collect();
        SeqKv { tokens: tokens.to_vec(), layers: vec![(vals.clone(), vals)] }
    }

    #[test]
    fn a_turn_takes_its_own_entry_and_a_first_turn_copies_a_shared_prefix() {
        let mut c = PrefixCache::new(100);
        c.insert(1, kv(&[1, 2, 3, 4]));
        // Another conversation sharing the first two tokens: a copy of them.
        let other = c.lookup(2, &[1, 2, 9, 9], 1).expect("shared prefix");
        assert_eq!(other.tokens, vec![1, 2]);
        assert_eq!(other.layers[0].0, vec![1.0, 2.0]);
        assert_eq!(c.len(), 1, "the owner's entry stays");
        // Its own next turn: the entry, taken out, cut to what is shared.
        let own = c.lookup(1, &[1, 2, 3, 4, 5, 6], 1).expect("own entry");
        assert_eq!(own.tokens, vec![1, 2, 3, 4]);
        assert!(c.is_empty(), "taken, not copied");
        assert_eq!(c.hits_tokens, 6);
        // At least one token is always left to feed.
        c.insert(1, kv(&[1, 2, 3]));
        assert_eq!(c.lookup(1, &[1, 2, 3], 1).expect("own").tokens, vec![1, 2]);
    }

    #[test]
    fn the_least_recently_used_entries_go_beyond_the_budget() {
        let mut c = PrefixCache::new(7);
        c.insert(1, kv(&[1, 1, 1]));
        c.insert(2, kv(&[2, 2, 2]));
        // Conversation 1 is used (a copy for conversation 3), so 2 is older.
        assert!(c.lookup(3, &[1, 1, 5], 1).is_some());
        c.insert(4, kv(&[4, 4, 4]));
        assert_eq!(c.len(), 2);
        assert!(c.lookup(5, &[2, 2, 9], 1).is_none(), "conversation 2 was evicted");
        assert!(c.lookup(5, &[1, 1, 9], 1).is_some());
        // A newer entry of a conversation replaces its older one.
        c.insert(4, kv(&[4, 4, 4, 4]));
        assert_eq!(c.len(), 2);
        assert_eq!(c.lookup(4, &[4, 4, 4, 4, 0], 1).expect("own").tokens.len(), 4);
    }
}
