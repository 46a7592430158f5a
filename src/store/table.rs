//! Result tables (docs/ARCHITECTURE.md, "Results") as Parquet, written and read with polars.
//!
//! A table's columns are declared once here; column names and types are a
//! public interface (users open these files with polars, pandas or DuckDB).
//! Rows travel as serde structs; conversion goes through JSON objects so one
//! generic writer/reader serves every table.
//!
//! `messages` in `episodes` is the full chat history as a JSON array of
//! `{"role", "content"}` objects (a string column, readable everywhere).
//!
//! Types (#26, docs/migration.md): every integer column is a signed `Int64`
//! (pandas, DuckDB and polars compute with it without surprises); `seed`
//! holds a `u64`'s 64 bits as an `Int64` ([`ColType::U64Bits`]); instants
//! are `timestamp[us, UTC]`. Files written before #26 hold `UInt64`
//! columns and lack the newer columns: [`conform`] reads either into the
//! declared schema (collation applies it to every artifact), and the row
//! readers accept both, so old results dirs keep working under their keys.
//! Every file carries pandas metadata naming its integer columns pandas'
//! nullable `Int64`, so `pandas.read_parquet` keeps nullable integers exact
//! instead of turning them into floats.

use std::fs::File;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use chrono::{DateTime, SecondsFormat, Utc};
use polars::prelude::*;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// A column's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColType {
    /// `String` (utf8).
    Str,
    /// A count, index or step: `Int64`. The row's value (a `u64` in Rust)
    /// must be below 2^63; writing a larger one is an error.
    I64,
    /// A `u64` stored as the `Int64` with the same 64 bits (`seed`): values
    /// of 2^63 and more read negative; `x as u64` (NumPy:
    /// `.astype("uint64")`) gives the `u64` back (docs/migration.md).
    U64Bits,
    F64,
    Bool,
    /// A UTC instant, `timestamp[us, UTC]`; RFC 3339 text in rows.
    Timestamp,
}

impl ColType {
    /// The polars type of the column in the file.
    pub fn dtype(self) -> DataType {
        match self {
            Str => DataType::String,
            I64 | U64Bits => DataType::Int64,
            F64 => DataType::Float64,
            Bool => DataType::Boolean,
            Timestamp => DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC)),
        }
    }
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
    col("rollout", I64),
    opt("seed", U64Bits),
    col("temperature", F64),
    col("reward", F64),
    col("success", Bool),
    col("steps", I64),
    col("finish_reason", Str),
    col("prompt_tokens", I64),
    col("completion_tokens", I64),
    col("wall_ms", I64),
    // When the episode finished (journaled with it); null in rows of
    // artifacts written before #26.
    opt("finished_at", Timestamp),
    opt("plan", Str),
    col("messages", Str),
];

/// Plans: seed plans, sampled plans (with Q once scored), test plans.
/// `stage` is the stage that made the plan: `seed_plans`, `sample_plans`
/// (rows written by `mc_rollouts`, which adds `q` and `n`) or
/// `test_plans`; `split` is its task's split (`train`, or the test split),
/// null for a user's seed set file and in rows of artifacts written before
/// #26 (collation fills their `stage` in).
pub const PLANS: &[Col] = &[
    col("stage", Str),
    opt("split", Str),
    col("task_id", Str),
    col("planner", Str),
    col("sample", I64),
    col("text", Str),
    opt("q", F64),
    opt("n", I64),
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
    col("attempts", I64),
];

/// One optimizer step of a training stage (`sft`, `dpo`, `rft`,
/// `agent_sft`); the DPO columns are null for the others.
pub const TRAIN_LOG: &[Col] = &[
    col("stage", Str),
    col("step", I64),
    col("epoch", F64),
    col("loss", F64),
    col("lr", F64),
    col("grad_norm", F64),
    col("tokens_per_s", F64),
    opt("reward_accuracy", F64),
    opt("chosen_reward", F64),
    opt("rejected_reward", F64),
    opt("margin", F64),
    opt("finished_at", Timestamp),
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
    /// Stored as the `Int64` with the same bits ([`ColType::U64Bits`]).
    #[serde(default, deserialize_with = "u64_bits::deserialize")]
    pub seed: Option<u64>,
    pub temperature: f64,
    pub reward: f64,
    pub success: bool,
    pub steps: u64,
    pub finish_reason: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub wall_ms: u64,
    /// When the episode finished (UTC, whole microseconds: see [`now`]);
    /// `None` for episodes journaled before #26.
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    pub plan: Option<String>,
    pub messages: String,
}

/// A plan row (see [`PLANS`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanRow {
    pub stage: String,
    pub split: Option<String>,
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

/// Now, in whole microseconds: what a [`ColType::Timestamp`] column
/// stores, so a row written and read back compares equal.
pub fn now() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

/// Serde for an optional `u64` that a row may hold as itself (journals,
/// files written before #26) or as the `Int64` with the same bits (a
/// [`ColType::U64Bits`] column read back): both give the same `u64`.
pub mod u64_bits {
    use serde::de::{Deserializer, Error, Visitor};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        struct Bits;
        impl<'de> Visitor<'de> for Bits {
            type Value = Option<u64>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a 64-bit integer or null")
            }
            fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                d.deserialize_any(Bits)
            }
            fn visit_u64<E: Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Some(v))
            }
            fn visit_i64<E: Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Some(v as u64))
            }
        }
        d.deserialize_option(Bits)
    }
}

/// Builds a frame of `rows` with the declared columns, in order.
pub fn to_frame<T: Serialize>(cols: &[Col], rows: &[T]) -> Result<DataFrame> {
    let objs: Vec<serde_json::Value> =
        rows.iter().map(serde_json::to_value).collect::<Result<_, _>>()?;
    to_frame_json(cols, &objs)
}

/// The `Int64` a JSON cell of an integer column holds (the microseconds
/// since the epoch for a timestamp).
fn int_cell(c: &Col, v: &serde_json::Value) -> Result<Option<i64>> {
    if v.is_null() {
        return Ok(None);
    }
    let got = match c.ty {
        I64 => v.as_i64(),
        U64Bits => v.as_u64().map(|u| u as i64).or_else(|| v.as_i64()),
        Timestamp => serde_json::from_value::<DateTime<Utc>>(v.clone()).ok().map(|t| t.timestamp_micros()),
        _ => None,
    };
    match (got, c.ty) {
        (Some(x), _) => Ok(Some(x)),
        (None, Timestamp) => bail!("column `{}`: {v} is not an RFC 3339 time", c.name),
        (None, _) => bail!("column `{}`: {v} is not an integer below 2^63", c.name),
    }
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
            I64 | U64Bits | Timestamp => {
                let v: Vec<Option<i64>> = rows.iter().map(|r| int_cell(c, &cell(r)?)).collect::<Result<_>>()?;
                let s = Series::new(name, v);
                match c.ty {
                    Timestamp => s.into_datetime(TimeUnit::Microseconds, Some(TimeZone::UTC)).into(),
                    _ => s.into(),
                }
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
        };
        columns.push(column);
    }
    Ok(DataFrame::new(rows.len(), columns)?)
}

/// Microseconds since the epoch of a datetime column's values.
fn micros(s: &Series) -> Result<Vec<Option<i64>>> {
    let DataType::Datetime(unit, _) = s.dtype() else { bail!("column `{}` is not a datetime", s.name()) };
    let per = |v: i64| match unit {
        TimeUnit::Nanoseconds => v.div_euclid(1000),
        TimeUnit::Microseconds => v,
        TimeUnit::Milliseconds => v * 1000,
    };
    let phys = s.to_physical_repr();
    Ok(phys.i64()?.iter().map(|v| v.map(per)).collect())
}

/// An old (before #26) `UInt64` column as the `Int64` with the same bits.
fn u64_as_i64(s: &Series) -> Result<Series> {
    let v: Vec<Option<i64>> = s.u64()?.iter().map(|v| v.map(|u| u as i64)).collect();
    Ok(Series::new(s.name().clone(), v))
}

/// `df` with the declared columns `cols`, in order, whatever schema
/// revision wrote it: `UInt64` columns (files written before #26) become
/// the `Int64` with the same bits, a missing nullable column (one added
/// since) is all null, and other types are cast to the declared one.
/// Columns `cols` does not declare follow, unchanged.
pub fn conform(df: &DataFrame, cols: &[Col]) -> Result<DataFrame> {
    let h = df.height();
    let mut out: Vec<Column> = Vec::with_capacity(df.width().max(cols.len()));
    for c in cols {
        let want = c.ty.dtype();
        let column = match df.column(c.name) {
            Err(_) if c.nullable => Column::full_null(c.name.into(), h, &want),
            Err(_) => bail!("no column `{}` (and it has no default)", c.name),
            Ok(col) if col.dtype() == &want => col.clone(),
            Ok(col) => {
                let s = col.as_materialized_series();
                let s = match s.dtype() {
                    DataType::UInt64 if want == DataType::Int64 => u64_as_i64(s)?,
                    _ => s.strict_cast(&want).map_err(|e| anyhow!("column `{}`: {e}", c.name))?,
                };
                s.into()
            }
        };
        out.push(column);
    }
    for col in df.columns() {
        if !cols.iter().any(|c| c.name == col.name().as_str()) {
            out.push(col.clone());
        }
    }
    Ok(DataFrame::new(h, out)?)
}

/// Reads every row of `df` as JSON objects (column name → value):
/// integers as numbers (a `UInt64` column of an old file too), datetimes
/// as RFC 3339 text in UTC.
pub fn frame_to_json(df: &DataFrame) -> Result<Vec<serde_json::Value>> {
    let mut rows = vec![serde_json::Map::new(); df.height()];
    for column in df.columns() {
        let name = column.name().to_string();
        let s = column.as_materialized_series();
        let mut put = |values: Vec<serde_json::Value>| {
            for (r, v) in rows.iter_mut().zip(values) {
                r.insert(name.clone(), v);
            }
        };
        let json = |v: Option<serde_json::Value>| v.unwrap_or(serde_json::Value::Null);
        match s.dtype() {
            DataType::String => put(s.str()?.iter().map(|v| json(v.map(Into::into))).collect()),
            DataType::UInt64 => put(s.u64()?.iter().map(|v| json(v.map(Into::into))).collect()),
            DataType::Int64 => put(s.i64()?.iter().map(|v| json(v.map(Into::into))).collect()),
            DataType::Int32 | DataType::UInt32 => {
                let s = s.cast(&DataType::Int64)?;
                put(s.i64()?.iter().map(|v| json(v.map(Into::into))).collect())
            }
            DataType::Float64 => put(s.f64()?.iter().map(|v| json(v.map(Into::into))).collect()),
            DataType::Boolean => put(s.bool()?.iter().map(|v| json(v.map(Into::into))).collect()),
            DataType::Datetime(..) => put(
                micros(s)?
                    .into_iter()
                    .map(|v| {
                        json(v.and_then(DateTime::from_timestamp_micros).map(|t: DateTime<Utc>| {
                            t.to_rfc3339_opts(SecondsFormat::AutoSi, true).into()
                        }))
                    })
                    .collect(),
            ),
            DataType::Null => put(vec![serde_json::Value::Null; s.len()]),
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

/// The `pandas` metadata of a file with `df`'s columns: every `Int64`
/// column read as pandas' nullable `Int64` (what pandas itself records
/// for such a column), so that `pandas.read_parquet` keeps a nullable
/// integer column exact instead of converting it to float64 (#26). Other
/// columns keep pyarrow's default conversion; polars and DuckDB ignore it.
fn pandas_metadata(df: &DataFrame) -> String {
    let columns: Vec<serde_json::Value> = df
        .columns()
        .iter()
        .filter(|c| c.dtype() == &DataType::Int64)
        .map(|c| {
            let name = c.name().as_str();
            serde_json::json!({"name": name, "field_name": name, "pandas_type": "int64", "numpy_type": "Int64", "metadata": null})
        })
        .collect();
    serde_json::json!({
        "index_columns": [],
        "column_indexes": [],
        "columns": columns,
        "creator": {"library": "mpo-run", "version": env!("CARGO_PKG_VERSION")},
    })
    .to_string()
}

/// The file metadata of a Parquet file of `df`: `ARROW:schema`, the Arrow
/// schema polars would store (the same conversion), with
/// [`pandas_metadata`] as its schema metadata — pyarrow takes a file's
/// schema metadata from that entry alone when it is there (ARROW-8980), so
/// a `pandas` key beside it would be ignored — and the `pandas` key too,
/// for readers that look there.
fn file_metadata(df: &DataFrame) -> Result<KeyValueMetadata> {
    use base64::Engine;
    use polars_arrow::io::ipc::write::{default_ipc_fields, schema_to_bytes};
    let pandas = pandas_metadata(df);
    let schema = df.schema().to_arrow(CompatLevel::newest());
    let mut kv = vec![("pandas".to_string(), pandas.clone())];
    // polars rewrites nested types before storing the schema: leave those
    // files (none of ours) to polars.
    if !schema.iter_values().any(|f| f.dtype.is_nested()) {
        let metadata = std::collections::BTreeMap::from([(PlSmallStr::from("pandas"), PlSmallStr::from(pandas))]);
        let bytes = schema_to_bytes(&schema, &default_ipc_fields(schema.iter_values()), Some(&metadata));
        // The legacy IPC framing Arrow expects here: continuation marker, length.
        let mut framed = Vec::with_capacity(bytes.len() + 8);
        framed.extend_from_slice(&[255u8, 255, 255, 255]);
        framed.extend_from_slice(&u32::try_from(bytes.len())?.to_le_bytes());
        framed.extend_from_slice(&bytes);
        kv.insert(0, ("ARROW:schema".to_string(), base64::engine::general_purpose::STANDARD.encode(&framed)));
    }
    Ok(KeyValueMetadata::from_static(kv))
}

/// Writes `df` to `path` (zstd, with [`file_metadata`]) and fsyncs it.
/// Not atomic by itself: write into an artifact's temp dir or use a temp
/// name and rename.
pub fn write_parquet(path: &Path, df: &mut DataFrame) -> Result<()> {
    let file = File::create(path).with_context(|| format!("cannot create `{}`", path.display()))?;
    ParquetWriter::new(&file)
        .with_compression(ParquetCompression::Zstd(None))
        .with_key_value_metadata(Some(file_metadata(df)?))
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
#[path = "table_tests.rs"]
mod tests;
