"""Registry: the MLflow adapter, registration, the gate and promotion, lineage, the raw-input
pyfunc wrapper, and using registered versions (verify, score, serve). Imports the model and
data wings, never the orchestration wing."""
