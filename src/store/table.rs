//! Result tables (docs/ARCHITECTURE.md, "Results") as Parquet, written and read with polars.
//!
//! A table's columns are declared once here; column names and types are a
//! public interface (users open these files with polars, pandas or DuckDB).
//! Rows travel as serde structs; conversion goes through JSON objects so one
//! generic writer/reader serves every table.
//!
//! `messages` in `episodes` is the full chat history as a JSON array of
//! `{"role", "content"}` objects (a string column, readable everywhere).

use std::fs::File;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use polars::prelude::*;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// A column's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColType {
    Str,
    U64,
    F64,
    Bool,
    /// A UTC instant, stored as Parquet `timestamp[us, tz=UTC]`; rows
    /// carry it as integer microseconds since the Unix epoch
    /// (`chrono::serde::ts_microseconds_option`).
    TimestampUtc,
}

/// One declared column.
#[derive(Clone, Copy, Debug)]
pub struct Col {
    pub name: &'static str,
    pub ty: ColType,
    pub nullable: bool,
}

const fn col(name: &'static str, ty: ColType) -> Col {
    Col { name, ty, nullable: false }
}
const fn opt(name: &'static str, ty: ColType) -> Col {
    Col { name, ty, nullable: true }
}

use ColType::*;

/// Columns that collated results carry in front of a stage's own columns.
pub const PROVENANCE: &[Col] = &[col("experiment", Str), col("variant", Str)];

/// One episode of an agent in an environment (expert, rollouts, eval).
pub const EPISODES: &[Col] = &[
    col("stage", Str),
    col("env", Str),
    col("split", Str),
    col("task_id", Str),
    col("task_type", Str),
    col("agent", Str),
    col("planner", Str),
    col("insertion", Str),
    opt("plan_id", Str),
    col("rollout", U64),
    opt("seed", U64),
    col("temperature", F64),
    col("reward", F64),
    col("success", Bool),
    col("steps", U64),
    col("finish_reason", Str),
    col("prompt_tokens", U64),
    col("completion_tokens", U64),
    col("wall_ms", U64),
    opt("plan", Str),
    col("messages", Str),
];

/// Plans: seed plans, sampled plans (with Q once scored), test plans.
pub const PLANS: &[Col] = &[
    col("task_id", Str),
    col("planner", Str),
    col("sample", U64),
    col("text", Str),
    opt("q", F64),
    opt("n", U64),
];

/// Pairwise judge verdicts, MPO vs SFT meta plan of one test task (App.
/// E.3, Fig. 6): one row per task and dimension (`correctness`,
/// `followability`, `standardization`, `overall`). `verdict` is `mpo`,
/// `sft` or `tie`, or `failed` when no reply parsed within `attempts` calls
/// (`reason` then holds the error); `mpo_first` says whether the MPO plan
/// was shown first; `judge` is the judge model's identity.
pub const JUDGE: &[Col] = &[
    col("task_id", Str),
    col("dimension", Str),
    col("verdict", Str),
    col("reason", Str),
    col("mpo_first", Bool),
    col("judge", Str),
    col("attempts", U64),
];

/// One optimizer step of a training stage (`sft`, `dpo`, `rft`,
/// `agent_sft`); the DPO columns are null for the others.
pub const TRAIN_LOG: &[Col] = &[
    col("stage", Str),
    col("step", U64),
    col("epoch", F64),
    col("loss", F64),
    col("lr", F64),
    col("grad_norm", F64),
    col("tokens_per_s", F64),
    opt("reward_accuracy", F64),
    opt("chosen_reward", F64),
    opt("rejected_reward", F64),
    opt("margin", F64),
    opt("finished_at", TimestampUtc),
    opt("eval_loss", F64),
];

/// An episode row (see [`EPISODES`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpisodeRow {
    pub stage: String,
    pub env: String,
    pub split: String,
    pub task_id: String,
    pub task_type: String,
    pub agent: String,
    pub planner: String,
    pub insertion: String,
    pub plan_id: Option<String>,
    pub rollout: u64,
    pub seed: Option<u64>,
    pub temperature: f64,
    pub reward: f64,
    pub success: bool,
    pub steps: u64,
    pub finish_reason: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub wall_ms: u64,
    pub plan: Option<String>,
    pub messages: String,
}

/// A plan row (see [`PLANS`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanRow {
    pub task_id: String,
    pub planner: String,
    pub sample: u64,
    pub text: String,
    pub q: Option<f64>,
    pub n: Option<u64>,
}

/// A judge row (see [`JUDGE`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JudgeRow {
    pub task_id: String,
    pub dimension: String,
    pub verdict: String,
    pub reason: String,
    pub mpo_first: bool,
    pub judge: String,
    pub attempts: u64,
}

/// Builds a frame of `rows` with the declared columns, in order.
pub fn to_frame<T: Serialize>(cols: &[Col], rows: &[T]) -> Result<DataFrame> {
    let objs: Vec<serde_json::Value> =
        rows.iter().map(serde_json::to_value).collect::<Result<_, _>>()?;
    to_frame_json(cols, &objs)
}

/// Like [`to_frame`], from JSON objects.
pub fn to_frame_json(cols: &[Col], rows: &[serde_json::Value]) -> Result<DataFrame> {
    let mut columns = Vec::with_capacity(cols.len());
    for c in cols {
        let cell = |r: &serde_json::Value| -> Result<serde_json::Value> {
            match r.get(c.name) {
                Some(v) if !v.is_null() => Ok(v.clone()),
                _ if c.nullable => Ok(serde_json::Value::Null),
                _ => bail!("row has no value for non-null column `{}`", c.name),
            }
        };
        let name: PlSmallStr = c.name.into();
        let column: Column = match c.ty {
            Str => {
                let v: Vec<Option<String>> = rows
                    .iter()
                    .map(|r| cell(r).map(|v| v.as_str().map(str::to_string)))
                    .collect::<Result<_>>()?;
                Column::new(name, v)
            }
            U64 => {
                let v: Vec<Option<u64>> =
                    rows.iter().map(|r| cell(r).map(|v| v.as_u64())).collect::<Result<_>>()?;
                Column::new(name, v)
            }
            F64 => {
                let v: Vec<Option<f64>> =
                    rows.iter().map(|r| cell(r).map(|v| v.as_f64())).collect::<Result<_>>()?;
                Column::new(name, v)
            }
            Bool => {
                let v: Vec<Option<bool>> =
                    rows.iter().map(|r| cell(r).map(|v| v.as_bool())).collect::<Result<_>>()?;
                Column::new(name, v)
            }
            TimestampUtc => {
                let v: Vec<Option<i64>> =
                    rows.iter().map(|r| cell(r).map(|v| v.as_i64())).collect::<Result<_>>()?;
                Series::new(name, v).into_datetime(TimeUnit::Microseconds, Some(TimeZone::UTC)).into()
            }
        };
        columns.push(column);
    }
    Ok(DataFrame::new(rows.len(), columns)?)
}

/// Reads every row of `df` as JSON objects (column name → value).
pub fn frame_to_json(df: &DataFrame) -> Result<Vec<serde_json::Value>> {
    let mut rows = vec![serde_json::Map::new(); df.height()];
    for column in df.columns() {
        let name = column.name().to_string();
        let s = column.as_materialized_series();
        match s.dtype() {
            DataType::String => {
                let ca = s.str()?;
                for i in 0..ca.len() {
                    let v = ca.get(i);
                    rows[i].insert(name.clone(), v.map_or(serde_json::Value::Null, |v| v.into()));
                }
            }
            DataType::UInt64 => {
                let ca = s.u64()?;
                for i in 0..ca.len() {
                    let v = ca.get(i);
                    rows[i].insert(name.clone(), v.map_or(serde_json::Value::Null, |v| v.into()));
                }
            }
            DataType::Int64 => {
                let ca = s.i64()?;
                for i in 0..ca.len() {
                    let v = ca.get(i);
                    rows[i].insert(name.clone(), v.map_or(serde_json::Value::Null, |v| v.into()));
                }
            }
            DataType::Float64 => {
                let ca = s.f64()?;
                for i in 0..ca.len() {
                    let v = ca.get(i);
                    rows[i].insert(name.clone(), v.map_or(serde_json::Value::Null, |v| v.into()));
                }
            }
            DataType::Boolean => {
                let ca = s.bool()?;
                for i in 0..ca.len() {
                    let v = ca.get(i);
                    rows[i].insert(name.clone(), v.map_or(serde_json::Value::Null, |v| v.into()));
                }
            }
            DataType::Datetime(unit, _) => {
                // As microseconds since the epoch, whatever the stored unit.
                let ca = s.datetime()?.physical();
                let us = |v: i64| match unit {
                    TimeUnit::Nanoseconds => v.div_euclid(1000),
                    TimeUnit::Microseconds => v,
                    TimeUnit::Milliseconds => v * 1000,
                };
                for i in 0..ca.len() {
                    let v = ca.get(i).map(us);
                    rows[i].insert(name.clone(), v.map_or(serde_json::Value::Null, |v| v.into()));
                }
            }
            DataType::Null => {
                for r in rows.iter_mut() {
                    r.insert(name.clone(), serde_json::Value::Null);
                }
            }
            other => return Err(anyhow!("column `{name}` has unsupported type {other}")),
        }
    }
    Ok(rows.into_iter().map(serde_json::Value::Object).collect())
}

/// Reads typed rows from a Parquet file.
pub fn read_rows<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let df = read_parquet(path)?;
    frame_to_json(&df)?
        .into_iter()
        .map(|v| serde_json::from_value(v).map_err(Into::into))
        .collect()
}

/// Writes `df` to `path` (zstd) and fsyncs it. Not atomic by itself: write
/// into an artifact's temp dir or use a temp name and rename.
pub fn write_parquet(path: &Path, df: &mut DataFrame) -> Result<()> {
    let file = File::create(path).with_context(|| format!("cannot create `{}`", path.display()))?;
    ParquetWriter::new(&file)
        .with_compression(ParquetCompression::Zstd(None))
        .finish(df)
        .map_err(|e| anyhow!("cannot write `{}`: {e}", path.display()))?;
    file.sync_all()?;
    Ok(())
}

pub fn read_parquet(path: &Path) -> Result<DataFrame> {
    let file = File::open(path).with_context(|| format!("cannot open `{}`", path.display()))?;
    ParquetReader::new(file)
        .finish()
        .map_err(|e| anyhow!("cannot read `{}`: {e}", path.display()))
}

/// Writes typed rows to a Parquet file with the declared columns.
pub fn write_rows<T: Serialize>(path: &Path, cols: &[Col], rows: &[T]) -> Result<usize> {
    let mut df = to_frame(cols, rows)?;
    write_parquet(path, &mut df)?;
    Ok(df.height())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_rows_round_trip_through_parquet() {
        let dir = tempfile::tempdir().unwrap();
        let rows = vec![
            PlanRow { task_id: "t1".into(), planner: "sft".into(), sample: 0, text: "Step 1: a".into(), q: Some(0.5), n: Some(2) },
            PlanRow { task_id: "t2".into(), planner: "sft".into(), sample: 1, text: "Step 1: b".into(), q: None, n: None },
        ];
        let p = dir.path().join("plans.parquet");
        assert_eq!(write_rows(&p, PLANS, &rows).unwrap(), 2);
        let back: Vec<PlanRow> = read_rows(&p).unwrap();
        assert_eq!(back, rows);
    }

    /// `finished_at` is a Parquet UTC timestamp in microseconds, null where
    /// a row has no time, and reads back to the same instant.
    #[test]
    fn train_log_times_are_utc_microsecond_timestamps() {
        let dir = tempfile::tempdir().unwrap();
        let row = |step: u64, at: Option<i64>| {
            let mut r = serde_json::json!({ "stage": "sft", "step": step, "epoch": 1.0, "loss": 1.0, "lr": 0.0, "grad_norm": 0.0, "tokens_per_s": 0.0 });
            r["finished_at"] = at.into();
            r
        };
        let rows = vec![row(1, Some(1_796_000_123_456_789)), row(2, None)];
        let p = dir.path().join("train_log.parquet");
        write_parquet(&p, &mut to_frame_json(TRAIN_LOG, &rows).unwrap()).unwrap();
        let df = read_parquet(&p).unwrap();
        assert_eq!(df.column("finished_at").unwrap().dtype(), &DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC)));
        let back = frame_to_json(&df).unwrap();
        assert_eq!(back[0]["finished_at"], 1_796_000_123_456_789i64);
        assert!(back[1]["finished_at"].is_null());
    }
}
