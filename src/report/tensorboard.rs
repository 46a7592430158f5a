//! The train log as TensorBoard event files (`[report] tensorboard = true`,
//! #26), so a training can be watched and compared in the tool researchers
//! already use: `tensorboard --logdir reports/<experiment>/tensorboard`.
//!
//! Layout: one run per training stage, `tensorboard/<stage>/`, and for a
//! sweep variant whose training differs from the base's,
//! `tensorboard/<stage>/<variant>/` (a node shared by variants is written
//! once). Each run holds one file, `events.out.tfevents.0.mpo-run`, with
//! one event per optimizer step carrying the step's scalars: `train/loss`,
//! `train/lr`, `train/grad_norm`, `train/tokens_per_s`, DPO's
//! `train/reward_accuracy`, `train/chosen_reward`, `train/rejected_reward`,
//! `train/margin`, and `eval/loss` where a held-out loss was logged. The
//! event's wall time is the row's `finished_at` (0 where the row has none).
//! The directory is rewritten whole with every report.
//!
//! The format, written here rather than through a crate (it is small):
//! a file is a sequence of records `u64 length (LE) · u32 masked CRC-32C
//! of the length · data · u32 masked CRC-32C of the data`, each data an
//! `Event` protobuf (`tensorflow/core/util/event.proto`): the first holds
//! `file_version = "brain.Event:2"`, the others `wall_time`, `step` and a
//! `Summary` of `{tag, simple_value}` values. TensorBoard's scalars are
//! 32-bit floats, so values are the log's rounded to `f32`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;

use crate::store::table::{frame_to_json, read_parquet};

/// The train-log columns written, and their tags.
pub const TAGS: [(&str, &str); 9] = [
    ("loss", "train/loss"),
    ("lr", "train/lr"),
    ("grad_norm", "train/grad_norm"),
    ("tokens_per_s", "train/tokens_per_s"),
    ("reward_accuracy", "train/reward_accuracy"),
    ("chosen_reward", "train/chosen_reward"),
    ("rejected_reward", "train/rejected_reward"),
    ("margin", "train/margin"),
    ("eval_loss", "eval/loss"),
];

/// The event file's name in every run directory.
pub const FILE: &str = "events.out.tfevents.0.mpo-run";

/// Writes the train log at `train_log` as event files under `out` (removed
/// and rewritten); returns the number of scalars written.
pub fn write_train_log(train_log: &Path, out: &Path) -> Result<usize> {
    let rows = frame_to_json(&read_parquet(train_log)?)?;
    // stage → variant → rows without the provenance columns, in row order.
    let mut by: BTreeMap<String, BTreeMap<String, Vec<serde_json::Value>>> = BTreeMap::new();
    for mut r in rows {
        let Some(o) = r.as_object_mut() else { continue };
        let variant = o.remove("variant").and_then(|v| v.as_str().map(str::to_string)).unwrap_or_else(|| "base".into());
        o.remove("experiment");
        let stage = o.get("stage").and_then(|v| v.as_str()).unwrap_or("").to_string();
        by.entry(stage).or_default().entry(variant).or_default().push(r);
    }
    if out.exists() {
        std::fs::remove_dir_all(out)?;
    }
    let mut written = 0;
    for (stage, variants) in &by {
        let stage_dir = out.join(safe(stage));
        // The base's run first; a variant that trained exactly the same
        // (a shared node) is not written again.
        let mut names: Vec<&String> = variants.keys().collect();
        names.sort_by_key(|v| (v.as_str() != "base", v.to_string()));
        let mut done: Vec<&Vec<serde_json::Value>> = Vec::new();
        for (i, v) in names.into_iter().enumerate() {
            let rows = &variants[v];
            if done.contains(&rows) {
                continue;
            }
            done.push(rows);
            let dir = if i == 0 { stage_dir.clone() } else { stage_dir.join(safe(v)) };
            let (bytes, n) = events(rows);
            std::fs::create_dir_all(&dir)?;
            crate::store::write_atomic(&dir.join(FILE), &bytes)?;
            written += n;
        }
    }
    Ok(written)
}

fn safe(name: &str) -> String {
    name.chars().map(|c| if c == '/' || c == '\\' || c.is_control() { '_' } else { c }).collect()
}

/// The event file of one run's rows, and its scalar count.
fn events(rows: &[serde_json::Value]) -> (Vec<u8>, usize) {
    let mut file = Vec::new();
    let mut version = Vec::new();
    proto::double(&mut version, 1, 0.0);
    proto::bytes(&mut version, 3, b"brain.Event:2");
    record(&mut file, &version);
    let mut n = 0;
    for r in rows {
        let step = r.get("step").and_then(serde_json::Value::as_i64).unwrap_or(0);
        let wall = r
            .get("finished_at")
            .and_then(serde_json::Value::as_str)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map_or(0.0, |t| t.timestamp_micros() as f64 / 1e6);
        let mut summary = Vec::new();
        for (col, tag) in TAGS {
            let Some(v) = r.get(col).and_then(serde_json::Value::as_f64) else { continue };
            let mut value = Vec::new();
            proto::bytes(&mut value, 1, tag.as_bytes());
            proto::float(&mut value, 2, v as f32);
            proto::bytes(&mut summary, 1, &value);
            n += 1;
        }
        let mut event = Vec::new();
        proto::double(&mut event, 1, wall);
        proto::varint_field(&mut event, 2, step as u64);
        proto::bytes(&mut event, 5, &summary);
        record(&mut file, &event);
    }
    (file, n)
}

/// Appends one TFRecord: length, its masked CRC, the data, its masked CRC.
pub fn record(out: &mut Vec<u8>, data: &[u8]) {
    let len = (data.len() as u64).to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
}

/// TFRecord's CRC mask: rotate right by 15 and add a constant.
pub fn masked_crc(data: &[u8]) -> u32 {
    let c = crc32c(data);
    c.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), bitwise per
/// byte through a table built at compile time.
pub fn crc32c(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 { (c >> 1) ^ 0x82F6_3B78 } else { c >> 1 };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    let mut c = !0u32;
    for &b in data {
        c = TABLE[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// The few protobuf encodings an `Event` needs.
mod proto {
    pub fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    fn key(out: &mut Vec<u8>, field: u32, wire: u8) {
        varint(out, ((field as u64) << 3) | wire as u64);
    }
    pub fn varint_field(out: &mut Vec<u8>, field: u32, v: u64) {
        key(out, field, 0);
        varint(out, v);
    }
    pub fn double(out: &mut Vec<u8>, field: u32, v: f64) {
        key(out, field, 1);
        out.extend_from_slice(&v.to_le_bytes());
    }
    pub fn bytes(out: &mut Vec<u8>, field: u32, v: &[u8]) {
        key(out, field, 2);
        varint(out, v.len() as u64);
        out.extend_from_slice(v);
    }
    pub fn float(out: &mut Vec<u8>, field: u32, v: f32) {
        key(out, field, 5);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn a_record_frames_its_data() {
        let mut out = Vec::new();
        record(&mut out, b"abc");
        assert_eq!(out.len(), 8 + 4 + 3 + 4);
        assert_eq!(&out[..8], &3u64.to_le_bytes());
        assert_eq!(&out[12..15], b"abc");
        assert_eq!(&out[15..], &masked_crc(b"abc").to_le_bytes());
    }
}
