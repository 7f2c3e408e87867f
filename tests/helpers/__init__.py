"""Test helpers: fake trial notebooks, tagged processes, the offline W&B reader, reference
implementations (upstream's dense re-ranking and per-query ranking)."""
