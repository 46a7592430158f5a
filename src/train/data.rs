//! Training examples as token ids with a loss mask, built from chat
//! conversations with the model's own chat template, and the batches a
//! trainer feeds: seeded shuffling per epoch, optimizer-step groups of the
//! effective batch size, length-sorted micro-batches inside a group (less
//! padding, same gradient), right padding.

use serde::{Deserialize, Serialize};

use crate::model::local::ChatTokenizer;
use crate::model::local::generate::Rng;
use crate::model::Message;

/// A token sequence and which of its tokens are trained targets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Example {
    pub ids: Vec<u32>,
    /// `mask[j]` = token `j` is predicted with loss (prompt tokens are not).
    pub mask: Vec<bool>,
}

impl Example {
    /// `prompt` (masked) followed by `completion` (trained).
    pub fn prompt_completion(prompt: &[u32], completion: &[u32]) -> Self {
        let mut ids = prompt.to_vec();
        ids.extend_from_slice(completion);
        let mut mask = vec![false; prompt.len()];
        mask.extend(std::iter::repeat_n(true, completion.len()));
        Self { ids, mask }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
    /// Trained tokens (the first token is never a target).
    pub fn targets(&self) -> usize {
        self.mask.iter().skip(1).filter(|&&m| m).count()
    }

    /// Keeps the first `max_len` tokens.
    pub fn truncate(&mut self, max_len: usize) {
        self.ids.truncate(max_len);
        self.mask.truncate(max_len);
    }
}

/// A DPO example: one prompt, a chosen and a rejected completion.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairExample {
    pub chosen: Example,
    pub rejected: Example,
}

/// Encodes a conversation with the chat template, training on the
/// assistant turns only (each assistant message's text and its end-of-turn
/// tokens), as LLaMA-Factory's multi-turn SFT does: the rendered text is
/// cut at every assistant turn's boundaries and each piece is tokenized on
/// its own.
pub fn chat_example(tok: &ChatTokenizer, messages: &[Message]) -> Result<Example, String> {
    let mut ids = Vec::new();
    let mut mask = Vec::new();
    let mut done = String::new();
    for (i, m) in messages.iter().enumerate() {
        if m.role != crate::model::Role::Assistant {
            continue;
        }
        let prefix = tok.render(&messages[..i], true)?;
        let upto = tok.render(&messages[..=i], false)?;
        let masked = prefix.strip_prefix(done.as_str()).ok_or("chat template is not prefix-stable")?;
        let trained = upto.strip_prefix(prefix.as_str()).ok_or("chat template is not prefix-stable")?;
        for (text, train) in [(masked, false), (trained, true)] {
            if text.is_empty() {
                continue;
            }
            let t = tok.encode(text)?;
            mask.extend(std::iter::repeat_n(train, t.len()));
            ids.extend(t);
        }
        done = upto;
    }
    if ids.is_empty() {
        return Err("a training conversation has no assistant turn".into());
    }
    Ok(Example { ids, mask })
}

/// A prompt (user turn, with the generation prompt) and a completion (the
/// assistant's text and its end-of-turn), e.g. a planner's task → plan.
pub fn completion_example(tok: &ChatTokenizer, user: &str, completion: &str) -> Result<Example, String> {
    chat_example(tok, &[Message::user(user), Message::assistant(completion)])
}

/// Seeded Fisher–Yates.
pub fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = Rng::new(seed);
    for i in (1..n).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

/// The examples of a training split into `(trained, held out)` indices:
/// `round(n × share)` examples (at least 1 when `share > 0`, and never all
/// of them) chosen by `seed`, each list in ascending order. `share = 0`
/// trains on everything, in order.
pub fn held_out_split(n: usize, share: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    if !(share > 0.0) || n < 2 {
        return ((0..n).collect(), Vec::new());
    }
    let k = ((n as f64 * share).round() as usize).clamp(1, n - 1);
    // A stream of its own, so the epochs' order is not the held-out draw's.
    let order = shuffled(n, seed ^ 0x4845_4C44_4F55_5421);
    let mut held: Vec<usize> = order[..k].to_vec();
    let mut trained: Vec<usize> = order[k..].to_vec();
    held.sort_unstable();
    trained.sort_unstable();
    (trained, held)
}

/// The optimizer-step groups of an epoch: the examples in a seeded order,
/// cut into groups of `batch` (the last may be smaller).
pub fn epoch_groups(n: usize, batch: usize, seed: u64, epoch: u64, shuffle: bool) -> Vec<Vec<usize>> {
    let order = if shuffle { shuffled(n, seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15)) } else { (0..n).collect() };
    order.chunks(batch.max(1)).map(<[usize]>::to_vec).collect()
}

/// Cuts a group into micro-batches of at most `micro` examples, sorted by
/// length so that each micro-batch pads little.
pub fn micro_batches(group: &[usize], lens: &[usize], micro: usize) -> Vec<Vec<usize>> {
    let mut g = group.to_vec();
    g.sort_by_key(|&i| (lens[i], i));
    g.chunks(micro.max(1)).map(<[usize]>::to_vec).collect()
}

/// Right-padded rows: `(ids, targets, mask)` as flat `[rows × width]`
/// vectors, where `targets[r][j]` is the token at `j + 1` and `mask[r][j]`
/// says whether it is trained.
pub fn pack(rows: &[&Example]) -> (Vec<i64>, Vec<i64>, Vec<f32>, usize) {
    let width = rows.iter().map(|e| e.len()).max().unwrap_or(1).max(2);
    let b = rows.len();
    let mut ids = vec![0i64; b * width];
    let mut tgt = vec![0i64; b * width];
    let mut mask = vec![0f32; b * width];
    for (r, e) in rows.iter().enumerate() {
        for (j, &t) in e.ids.iter().enumerate() {
            ids[r * width + j] = t as i64;
            if j > 0 {
                tgt[r * width + j - 1] = t as i64;
                if e.mask[j] {
                    mask[r * width + j - 1] = 1.0;
                }
            }
        }
    }
    (ids, tgt, mask, width)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_shifts_targets_and_masks_prompts() {
        let e = Example::prompt_completion(&[1, 2], &[3, 4]);
        assert_eq!(e.targets(), 2);
        let (ids, tgt, mask, w) = pack(&[&e, &Example::prompt_completion(&[5], &[6])]);
        assert_eq!(w, 4);
        assert_eq!(ids, vec![1, 2, 3, 4, 5, 6, 0, 0]);
        assert_eq!(tgt, vec![2, 3, 4, 0, 6, 0, 0, 0]);
        assert_eq!(mask, vec![0., 1., 1., 0., 1., 0., 0., 0.]);
    }

    #[test]
    fn groups_cover_every_example_once_per_epoch_and_depend_on_the_seed() {
        let g0 = epoch_groups(10, 4, 7, 0, true);
        let mut all: Vec<usize> = g0.concat();
        all.sort();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        assert_eq!(g0.iter().map(Vec::len).collect::<Vec<_>>(), vec![4, 4, 2]);
        assert_eq!(g0, epoch_groups(10, 4, 7, 0, true));
        assert_ne!(g0, epoch_groups(10, 4, 7, 1, true));
        let lens = vec![5, 1, 9, 3, 2, 8, 7, 6, 4, 0];
        let mb = micro_batches(&g0[0], &lens, 2);
        let flat: Vec<usize> = mb.concat();
        assert!(flat.windows(2).all(|w| lens[w[0]] <= lens[w[1]]));
    }
}
