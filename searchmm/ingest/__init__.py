"""The ingest pipeline: diff a scan against the store, encode what is new, commit in batches."""
