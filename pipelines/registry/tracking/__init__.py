"""The MLflow adapter, a module per job. Only this package and the pyfunc wrapper
(`registry/raw_model.py`) import MLflow (an import-linter contract in pyproject.toml):

- `connection`: the tracking URI, experiments, the UI's address;
- `run_lifecycle`: opening and ending runs, closing runs whose process died;
- `run_logging`: params, metrics, curves, inputs, figures, tags and artifacts of a run;
- `nested_runs`: a search's trial runs under their parent;
- `epoch_logging`: the Keras callback behind the live curves;
- `model_versions`: logging the raw-input model, registering and reading versions;
- `aliases`: champion and previous-champion, compare-and-set promotion, the lock, rollback;
- `drift_reference`: the champion's training reference for drift;
- `fresh_process`: scoring in a clean interpreter, as `mlflow models serve` does."""
