"""The training core: one configuration, its data, model, optimizer and statistics. Knows nothing of MLflow."""
