"""Model: the family builders, training, evaluation and metrics. Imports the data wing and the
door (`config`, `families`, `errors`), never the registry or the orchestration wing."""
