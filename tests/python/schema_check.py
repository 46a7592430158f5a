"""tests/schema.rs: every Parquet file of a results dir as the Python stack
reads it (#26). pyarrow: no unsigned type, every integer column int64,
`finished_at` a UTC timestamp. pandas, with its defaults: no unsigned or
float dtype for an integer column, and the collated episodes' seeds, steps
and finish times equal to what Rust reads (EXPECTED). DuckDB: arithmetic on
every integer column (`x - 20`), and the documented way to get a seed's u64
back from its int64 bits. Prints a JSON summary for the Rust side.

usage: schema_check.py RESULTS_DIR EXPECTED_JSON
"""

import json
import pathlib
import sys

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

results, expected_path = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
expected = json.loads(expected_path.read_text())

# docs/migration.md: a seed's u64 from the int64 that holds its bits.
SEED_AS_U64 = "CASE WHEN seed < 0 THEN seed::HUGEINT + 18446744073709551616 ELSE seed END::UBIGINT"


def scan(path):
    """DuckDB's scan of one Parquet file (rows in file order)."""
    return "read_parquet('" + str(path).replace("'", "''") + "')"


files = sorted(results.rglob("*.parquet"))
assert files, f"no Parquet files under {results}"
con = duckdb.connect()
for f in files:
    table = pq.read_table(f)
    ints = []
    for field in table.schema:
        t = field.type
        assert not pa.types.is_unsigned_integer(t), f"{f}: `{field.name}` is {t}"
        if pa.types.is_integer(t):
            assert t == pa.int64(), f"{f}: `{field.name}` is {t}"
            ints.append(field.name)
        if field.name == "finished_at":
            assert t == pa.timestamp("us", tz="UTC"), f"{f}: `finished_at` is {t}"
    df = pd.read_parquet(f)
    for name in ints:
        dtype = df[name].dtype
        assert dtype.kind in "iu" and str(dtype) in ("Int64", "int64"), f"{f}: pandas reads `{name}` as {dtype}"
        assert pd.api.types.is_signed_integer_dtype(dtype), f"{f}: pandas reads `{name}` as {dtype}"
        # Arithmetic on counts, where UInt64 raised `Overflow in subtraction`.
        got = con.execute(f'SELECT min("{name}" - 20) FROM {scan(f)}').fetchone()[0]
        low = table.column(name).to_pylist()
        low = min((v for v in low if v is not None), default=None)
        assert got == (None if low is None else low - 20), (f, name, got, low)
    if "finished_at" in df.columns:
        assert str(df["finished_at"].dtype) == "datetime64[us, UTC]", f"{f}: {df['finished_at'].dtype}"

# The collated episodes, against the values Rust read.
episodes = results / expected["collated"] / "episodes.parquet"
df = pd.read_parquet(episodes)
seeds = [None if pd.isna(v) else int(v) for v in df["seed"]]
assert seeds == expected["seed"], "pandas' seeds differ from Rust's"
assert [int(v) for v in df["steps"]] == expected["steps"]
times = [None if pd.isna(v) else v.value // 1000 for v in df["finished_at"]]
assert times == expected["finished_at"], "pandas' finish times differ from Rust's"
d = [r[0] for r in con.execute(f"SELECT steps - 20 FROM {scan(episodes)}").fetchall()]
assert d == [s - 20 for s in expected["steps"]]
u = [r[0] for r in con.execute(f"SELECT {SEED_AS_U64} FROM {scan(episodes)}").fetchall()]
assert u == expected["seed"], "DuckDB's u64 seeds differ from Rust's"

# The documented expression on bits that read negative (u64::MAX).
from_bits = con.execute(f"SELECT {SEED_AS_U64} FROM (SELECT (-1)::BIGINT AS seed)").fetchone()[0]
print(json.dumps({
    "files": len(files),
    "seeds_compared": sum(s is not None for s in seeds),
    "seed_from_bits": from_bits,
}))
