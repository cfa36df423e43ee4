"""Raw data to a validated, registered Keras model, driven by DVC, Prefect and MLflow."""

__version__ = "0.4.0"
