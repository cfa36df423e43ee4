"""Data: sources and ingest, shards and streaming, GX validation, drift, the split and the fitted
preprocessing. Imports only `pipelines.config` and `pipelines.errors`."""
