"""actopt: an MLflow pipeline that measures how activation functions and optimizers shape training."""

__version__ = "0.1.0"
