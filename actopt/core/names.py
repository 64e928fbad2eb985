"""The names a configuration chooses from, without the torch objects behind them: the config, the CLI's choices and
its shell completion read them here, so that ``actopt --help`` and each TAB import no torch (seconds).
``tests/test_config.py`` holds each list to the registry it names (``data.DATASETS``, ``models.ACTIVATIONS``,
``models.INITIALIZATIONS``, ``optimizers.OPTIMIZERS``, ``data.INPUT_SCALINGS``)."""

DATASETS = ("fashion-mnist", "mnist")
ACTIVATIONS = ("sigmoid", "tanh", "lecun_tanh", "relu", "leaky_relu", "elu", "gelu", "selu", "silu")
INITIALIZATIONS = ("default", "xavier", "kaiming", "lecun")
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
# "auto" picks CUDA when present; everything (data, statistics) then lives on that device.
DEVICES = ("auto", "cpu", "cuda")
# How pixels are scaled before the first layer (actopt.core.data.scaled_inputs says what each does).
INPUT_SCALINGS = ("symmetric", "unit", "standardized")
