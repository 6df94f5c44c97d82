"""``ecgbridge batch``: digitize whole archives, resumably, on one machine or a Dask cluster.

inputs (stream sources) -> engines (local process pool or Dask) -> worker (one file,
outputs written straight to the output folder) -> journal (SQLite, one row per page).
"""
