//! Unit tests of the result tables: round trips, seeds' bits, files of the
//! schema before #26, the pandas metadata.

use super::*;

fn episode(seed: Option<u64>, finished_at: Option<DateTime<Utc>>) -> EpisodeRow {
    EpisodeRow {
        stage: "eval".into(),
        env: "household".into(),
        split: "seen".into(),
        task_id: "t".into(),
        task_type: "pick".into(),
        agent: "a".into(),
        planner: "none".into(),
        insertion: "none".into(),
        plan_id: None,
        rollout: 3,
        seed,
        temperature: 0.7,
        reward: 1.0,
        success: true,
        steps: 12,
        finish_reason: "success".into(),
        prompt_tokens: 900,
        completion_tokens: 120,
        wall_ms: 40,
        finished_at,
        plan: None,
        messages: "[]".into(),
    }
}

#[test]
fn plan_rows_round_trip_through_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let rows = vec![
        PlanRow { stage: "sample_plans".into(), split: Some("train".into()), task_id: "t1".into(), planner: "sft".into(), sample: 0, text: "Step 1: a".into(), q: Some(0.5), n: Some(2) },
        PlanRow { stage: "seed_plans".into(), split: None, task_id: "t2".into(), planner: "sft".into(), sample: 1, text: "Step 1: b".into(), q: None, n: None },
    ];
    let p = dir.path().join("plans.parquet");
    assert_eq!(write_rows(&p, PLANS, &rows).unwrap(), 2);
    let back: Vec<PlanRow> = read_rows(&p).unwrap();
    assert_eq!(back, rows);
}

/// #26: a seed is the same `u64` after Parquet, whatever its size (the
/// file holds its bits as `Int64`), and the finish time round-trips.
#[test]
fn episode_rows_round_trip_seeds_bit_for_bit_and_times() {
    let dir = tempfile::tempdir().unwrap();
    let t = now();
    let rows: Vec<EpisodeRow> = [Some(0), Some(7), Some(i64::MAX as u64), Some(1u64 << 63), Some(u64::MAX), None]
        .into_iter()
        .map(|s| episode(s, Some(t)))
        .chain([episode(Some(1), None)])
        .collect();
    let p = dir.path().join("episodes.parquet");
    write_rows(&p, EPISODES, &rows).unwrap();
    let back: Vec<EpisodeRow> = read_rows(&p).unwrap();
    assert_eq!(back, rows);
    let df = read_parquet(&p).unwrap();
    let seeds: Vec<Option<i64>> = df.column("seed").unwrap().i64().unwrap().iter().collect();
    assert_eq!(seeds, vec![Some(0), Some(7), Some(i64::MAX), Some(i64::MIN), Some(-1), None, Some(1)]);
    assert_eq!(df.column("finished_at").unwrap().dtype(), &DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC)));
    for c in EPISODES {
        assert_eq!(df.column(c.name).unwrap().dtype(), &c.ty.dtype(), "{}", c.name);
    }
}

#[test]
fn a_count_too_large_for_int64_is_an_error_not_a_null() {
    let mut row = episode(None, None);
    row.steps = 1u64 << 63;
    let err = to_frame(EPISODES, &[row]).unwrap_err().to_string();
    assert!(err.contains("`steps`") && err.contains("below 2^63"), "{err}");
}

/// A file written before #26: `UInt64` columns, no `finished_at`.
fn old_episodes_frame() -> DataFrame {
    let n = 2;
    let mut cols: Vec<Column> = Vec::new();
    for c in EPISODES {
        let name: PlSmallStr = c.name.into();
        cols.push(match (c.name, c.ty) {
            ("finished_at", _) => continue,
            ("seed", _) => Column::new(name, vec![Some(u64::MAX), None]),
            (_, I64) => Column::new(name, vec![5u64; n]),
            (_, Str) => Column::new(name, vec![Some("x"); n]),
            (_, F64) => Column::new(name, vec![0.5f64; n]),
            (_, Bool) => Column::new(name, vec![true; n]),
            (_, ty) => unreachable!("{ty:?}"),
        });
    }
    DataFrame::new(n, cols).unwrap()
}

#[test]
fn files_written_before_signed_columns_read_and_conform() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("episodes.parquet");
    let mut old = old_episodes_frame();
    write_parquet(&p, &mut old).unwrap();
    let rows: Vec<EpisodeRow> = read_rows(&p).unwrap();
    assert_eq!(rows[0].seed, Some(u64::MAX));
    assert_eq!((rows[1].seed, rows[0].steps, rows[0].finished_at), (None, 5, None));

    let new = conform(&read_parquet(&p).unwrap(), EPISODES).unwrap();
    let names: Vec<&str> = new.columns().iter().map(|c| c.name().as_str()).collect();
    assert_eq!(names, EPISODES.iter().map(|c| c.name).collect::<Vec<_>>());
    for c in EPISODES {
        assert_eq!(new.column(c.name).unwrap().dtype(), &c.ty.dtype(), "{}", c.name);
    }
    assert_eq!(new.column("seed").unwrap().i64().unwrap().get(0), Some(-1));
    assert_eq!(new.column("finished_at").unwrap().null_count(), 2);
    // Conformed old rows stack under new ones (what collation does).
    let mut fresh = to_frame(EPISODES, &[episode(Some(3), Some(now()))]).unwrap();
    fresh.vstack_mut_owned(new).unwrap();
    assert_eq!(fresh.height(), 3);
}

#[test]
fn pandas_metadata_names_every_int64_column() {
    let df = to_frame(EPISODES, &[episode(Some(3), None)]).unwrap();
    let meta: serde_json::Value = serde_json::from_str(&pandas_metadata(&df)).unwrap();
    let named: Vec<&str> = meta["columns"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    let ints: Vec<&str> = EPISODES.iter().filter(|c| matches!(c.ty, I64 | U64Bits)).map(|c| c.name).collect();
    assert_eq!(named, ints);
    assert!(meta["columns"].as_array().unwrap().iter().all(|c| c["numpy_type"] == "Int64"));
}
