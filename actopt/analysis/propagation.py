"""Mean-field signal propagation at initialisation (Poole et al. 2016, Schoenholz et al. 2017), in pure numpy.

For a fully connected net whose layer l draws weights with variance σ_w²/fan_in and biases with
variance σ_b², a hidden unit's pre-activation is Gaussian over the draw of the weights, with second
moment q^l given by the forward map

    q^1 = σ_w² · q_in + σ_b²                      (q_in: mean squared input value)
    q^l = σ_w² · E[φ(√q^(l−1) z)²] + σ_b²          (z ~ N(0, 1))

and the squared norm of the error signal δ^l = ∂L/∂h^l shrinks from layer l+1 to l by

    χ^l = σ_w²(l+1) · E[φ′(√q^l z)²].

A weight gradient ∂L/∂W^l = δ^l (a^(l−1))ᵀ of one example has squared norm ‖δ^l‖²·‖a^(l−1)‖², so
relative to the last hidden layer L its log10 norm is ½·log10(Π_{k=l}^{L−1} χ^k · ‖a^(l−1)‖² / ‖a^(L−1)‖²).
The expectations are quadratures against the normal density (composite Gauss–Legendre, see
PANEL_WIDTH). Every number here is a pure function of the activation, the initialisation's
variances and the input's second moment; tests hold it against Monte Carlo on wide random nets,
against PyTorch's initialisers and against closed forms.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

# The expectations over z ~ N(0, 1) are composite Gauss–Legendre sums with the normal density as an
# explicit weight: 8 nodes per panel, panels split at x = 0 (where ReLU′, ELU′ and SELU′ jump or kink)
# and no wider than 0.25 in x = √q·z (where tanh′ and sigmoid′ have their features), over |z| ≤ 12
# (the mass beyond is below 1e-32). Plain Gauss–Hermite, which the issue suggested, is exact for
# polynomials but not here: with 80 nodes it misses E[tanh′(3z)²] by 3.4%, E[selu′(3z)²] by 4.5% and
# E[tanh′(10z)²] by 93%, and numpy's nodes turn NaN beyond about 300 (measured against scipy's quad).
PANEL_NODES = 8
PANEL_WIDTH = 0.25
Z_LIMIT = 12.0
# Panels stop growing here (a q of ~10^5); such a pre-activation is saturated or exploding anyway.
MAX_PANELS = 20_000
# Schoenholz et al. 2017: a net trains when its depth is below about 6 depth scales ξ. With ξ the
# layers per e-fold of the gradient norm, 6ξ layers is a gradient ratio of e⁶ ≈ 400 first to last.
TRAINABLE_DEPTH_SCALES = 6.0

_LEGENDRE_NODES, _LEGENDRE_WEIGHTS = np.polynomial.legendre.leggauss(PANEL_NODES)

LECUN_SCALE, LECUN_SLOPE = 1.7159, 2.0 / 3.0
SELU_ALPHA, SELU_SCALE = 1.6732632423543772, 1.0507009873554805
LEAKY_SLOPE = 0.01  # nn.LeakyReLU's default


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _normal_cdf(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def _normal_pdf(x: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


# φ and φ′ of every activation training can build (actopt.core.models.ACTIVATIONS), as numpy functions.
ACTIVATION_FUNCTIONS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]] = {
    "relu": (lambda x: np.maximum(x, 0.0), lambda x: (x > 0).astype(float)),
    "tanh": (np.tanh, lambda x: 1.0 - np.tanh(x) ** 2),
    "sigmoid": (_sigmoid, lambda x: _sigmoid(x) * (1.0 - _sigmoid(x))),
    "lecun_tanh": (lambda x: LECUN_SCALE * np.tanh(LECUN_SLOPE * x),
                   lambda x: LECUN_SCALE * LECUN_SLOPE * (1.0 - np.tanh(LECUN_SLOPE * x) ** 2)),
    "leaky_relu": (lambda x: np.where(x > 0, x, LEAKY_SLOPE * x), lambda x: np.where(x > 0, 1.0, LEAKY_SLOPE)),
    "elu": (lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))), lambda x: np.where(x > 0, 1.0, np.exp(
        np.minimum(x, 0.0)))),
    "gelu": (lambda x: x * _normal_cdf(x), lambda x: _normal_cdf(x) + x * _normal_pdf(x)),
    "selu": (lambda x: SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(np.minimum(x, 0.0))),
             lambda x: SELU_SCALE * np.where(x > 0, 1.0, SELU_ALPHA * np.exp(np.minimum(x, 0.0)))),
    "silu": (lambda x: x * _sigmoid(x), lambda x: _sigmoid(x) * (1.0 + x * (1.0 - _sigmoid(x)))),
}


def standard_normal_rule(scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Nodes z and weights w with Σ w·f(scale·z) ≈ E[f(scale·z)], z ~ N(0, 1), for f with a kink at 0."""
    width = min(PANEL_WIDTH / scale, 0.5) if scale > 0 else 0.5
    panels = min(MAX_PANELS, math.ceil(Z_LIMIT / width))
    edges = np.linspace(0.0, Z_LIMIT, panels + 1)
    half = (edges[1:] - edges[:-1])[:, None] / 2
    nodes = ((edges[1:] + edges[:-1])[:, None] / 2 + half * _LEGENDRE_NODES).ravel()
    weights = (half * _LEGENDRE_WEIGHTS).ravel() * np.exp(-0.5 * nodes**2) / math.sqrt(2.0 * math.pi)
    return np.concatenate([-nodes[::-1], nodes]), np.concatenate([weights[::-1], weights])


def gaussian_expectation(function: Callable[[np.ndarray], np.ndarray], q: float) -> float:
    """E[f(√q·z)] for z ~ N(0, 1) by composite Gauss–Legendre quadrature (see PANEL_WIDTH)."""
    scale = math.sqrt(float(q))
    nodes, weights = standard_normal_rule(scale)
    return float((function(scale * nodes) * weights).sum())


def second_moment(activation: str, q: float) -> float:
    """E[φ(√q z)²]: the mean squared output of a unit whose pre-activation has second moment q."""
    phi, _ = ACTIVATION_FUNCTIONS[activation]
    return gaussian_expectation(lambda x: phi(x) ** 2, q)


def derivative_moment(activation: str, q: float) -> float:
    """E[φ′(√q z)²]: how much squared error signal a unit passes back (times σ_w², that is χ)."""
    _, derivative = ACTIVATION_FUNCTIONS[activation]
    return gaussian_expectation(lambda x: derivative(x) ** 2, q)


@dataclass(frozen=True)
class LayerVariances:
    """One Linear layer's draw: weight variance σ_w²/fan_in and bias variance σ_b², with its fan-in."""

    weight: float  # σ_w²: the weight variance times fan_in
    bias: float  # σ_b²: the bias variance itself
    fan_in: int


def init_variances(init: str, fan_in: int, fan_out: int) -> LayerVariances:
    """σ_w² and σ_b² of a Linear layer as ``actopt.core.models.INITIALIZATIONS`` draws it in PyTorch.

    ``default`` is nn.Linear's reset_parameters: kaiming_uniform_(a=√5) gives U(±1/√fan_in) weights,
    variance 1/(3·fan_in), so σ_w² = 1/3; biases U(±1/√fan_in), variance 1/(3·fan_in). The others
    zero the biases: xavier_uniform_ U(±√(6/(fan_in+fan_out))) has variance 2/(fan_in+fan_out);
    kaiming_normal_ (fan_in, ReLU gain √2) variance 2/fan_in; lecun N(0, 1/fan_in).
    """
    if init == "default":
        return LayerVariances(1.0 / 3.0, 1.0 / (3.0 * fan_in), fan_in)
    weights = {"xavier": 2.0 * fan_in / (fan_in + fan_out), "kaiming": 2.0, "lecun": 1.0}
    if init not in weights:
        raise ValueError(f"unknown init {init!r}; known: default, {', '.join(weights)}")
    return LayerVariances(weights[init], 0.0, fan_in)


def network_variances(init: str, sizes: Sequence[int]) -> list[LayerVariances]:
    """Every Linear layer's variances for layer widths ``sizes`` = (inputs, hidden..., outputs)."""
    return [init_variances(init, fan_in, fan_out) for fan_in, fan_out in zip(sizes[:-1], sizes[1:])]


@dataclass(frozen=True)
class Prediction:
    """The mean-field prediction for the hidden layers 1..L of one net (arrays indexed by layer − 1)."""

    q: np.ndarray  # predicted second moment of each hidden layer's pre-activations
    chi: np.ndarray  # χ^l = σ_w²(l+1)·E[φ′(√q^l z)²]: squared error-signal ratio from layer l+1 to l
    log10_gradient: np.ndarray  # log10 weight-gradient norm of layer l relative to layer L
    decay: float  # decades per layer: least-squares slope of log10_gradient over layers 2..L (1 if L < 3)
    span: float  # log10(‖∇W^L‖ / ‖∇W^1‖): decades lost from the last hidden layer back to the first
    depth_scale: float  # layers per e-fold of the gradient norm (inf when flat)

    def trainable_depth(self) -> float:
        """TRAINABLE_DEPTH_SCALES depth scales: the depth beyond which the theory expects no training (inf if flat)."""
        return TRAINABLE_DEPTH_SCALES * self.depth_scale


def predict(activation: str, layers: Sequence[LayerVariances], input_moment: float) -> Prediction:
    """Propagate ``input_moment`` (mean of x²) through ``layers`` (hidden layers, then the output layer).

    The forward map fixes q^l and the mean squared activation of each layer's input; the backward
    map multiplies χ's from the last hidden layer down. Widths enter through ‖a‖² = fan_in·E[a²].
    """
    hidden = len(layers) - 1
    if hidden < 1:
        raise ValueError("need at least one hidden layer and the output layer")
    q = np.empty(hidden)
    input_square_norms = np.empty(hidden)  # ‖a^(l−1)‖² of the input to hidden layer l
    moment = float(input_moment)
    for index in range(hidden):
        layer = layers[index]
        input_square_norms[index] = layer.fan_in * moment
        q[index] = layer.weight * moment + layer.bias
        moment = float(second_moment(activation, q[index]))
    weights = np.array([layers[index + 1].weight for index in range(hidden)])
    chi = weights * np.array([derivative_moment(activation, value) for value in q])
    # Σ_{k=l}^{L−1} log10 χ^k: the error signal's squared-norm ratio from the last hidden layer down to l.
    backward = np.concatenate([np.cumsum(np.log10(chi[:-1])[::-1])[::-1], [0.0]])
    log_square = backward + np.log10(input_square_norms) - np.log10(input_square_norms[-1])
    log10_gradient = 0.5 * log_square
    decay = layer_decay(log10_gradient)
    return Prediction(q, chi, log10_gradient, decay, float(-log10_gradient[0]), depth_scale(decay))


def layer_decay(log10_norms: np.ndarray | Sequence[float]) -> float:
    """Decades lost per layer towards the input: the least-squares slope of log10 norms over layers 2..L.

    Layer 1 is left out because its input is the data, not a hidden layer: its norm jumps by the
    ratio of the input's ‖x‖ to a hidden layer's ‖a‖, which says nothing about depth. Positive =
    vanishing towards the input. With fewer than three layers the slope runs over all of them.
    """
    values = np.asarray(log10_norms, dtype=float)
    chosen = values[1:] if len(values) >= 3 else values
    if len(chosen) < 2:
        return 0.0
    layers = np.arange(len(chosen), dtype=float)
    return float(np.polyfit(layers, chosen, 1)[0])


def depth_scale(decay: float) -> float:
    """Layers over which the gradient norm changes by a factor e: 1 / (ln 10 · |decades per layer|)."""
    # Below 1e-9 decades per layer the slope is rounding noise of a flat profile (ReLU with Kaiming).
    return math.inf if abs(decay) < 1e-9 else 1.0 / (math.log(10.0) * abs(decay))


def predict_config(activation: str, init: str, sizes: Sequence[int], input_moment: float) -> Prediction:
    """The prediction for an MLP of widths ``sizes`` (inputs, hidden..., outputs) drawn by ``init``."""
    if activation not in ACTIVATION_FUNCTIONS:
        raise ValueError(f"unknown activation {activation!r}")
    return predict(activation, network_variances(init, sizes), input_moment)
