"""Run: the stages as plain functions, their Prefect flows, the retraining flow and its
deployment, and the local servers they start. The top wing: nothing but the CLI imports it."""
