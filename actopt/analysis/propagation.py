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

from actopt.core.activation_constants import LEAKY_SLOPE, LECUN_SCALE, LECUN_SLOPE, SELU_ALPHA, SELU_SCALE

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
# Schoenholz et al. 2017 ("Deep Information Propagation", ICLR, sections 5–6): fully connected nets
# trained on MNIST and CIFAR-10 learned where their depth was below about 6 ξ_c, ξ_c being the
# correlation depth scale at the fixed point (``FixedPoint``): an empirical bound, for their SGD and
# RMSProp training, not a theorem.
TRAINABLE_DEPTH_SCALES = 6.0

_LEGENDRE_NODES, _LEGENDRE_WEIGHTS = np.polynomial.legendre.leggauss(PANEL_NODES)



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
    depth_scale: float  # layers per e-fold of this finite net's gradient norm (inf when flat), transient included


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


# The q-map is iterated from q = 1 until it moves by less than this (relative), at most FIXED_POINT_STEPS times.
FIXED_POINT_TOLERANCE = 1e-12
FIXED_POINT_STEPS = 10_000
# Pairs (z1, z2) for the correlation map: the 1-D rule cut at |z| ≤ 8 (the mass beyond is below 1e-15),
# its panels sized as for √q ≤ PAIR_SCALE_LIMIT, so the tensor product stays below 2.4 million nodes
# (a sigmoid net at σ_w² = 113 has √q* ≈ 7, whose full rule would take 13 million per evaluation).
PAIR_Z_LIMIT = 8.0
PAIR_SCALE_LIMIT = 3.0
# φ(a·x) = a·φ(x) for a > 0: the q-map is linear and χ does not depend on q.
# Bisection halvings of c in [−1, 1]: 2⁻³⁰ ≈ 1e-9.
BISECTION_STEPS = 30
HOMOGENEOUS = ("relu", "leaky_relu")
# χ within this of 1 is critical (ReLU with Kaiming computes 1 + 2e-16).
CRITICAL = 1e-9


@dataclass(frozen=True)
class FixedPoint:
    """Where the q-map of one activation × (σ_w², σ_b²) settles, and the depth scales it sets.

    Schoenholz et al. 2017 ("Deep Information Propagation", ICLR) define the gradient depth scale
    ξ_∇ = −1/ln χ₁ (layers per e-fold of the squared error signal ‖δ‖², χ₁ = σ_w²·E[φ′(√q* z)²]) and
    the correlation depth scale ξ_c = −1/ln χ_c, χ_c = σ_w²·E[φ′(u₁)φ′(u₂)] at the correlation map's
    stable fixed point c*; they find nets trainable to about 6ξ_c layers. In the ordered phase
    (χ₁ < 1) c* = 1 and χ_c = χ₁, so the two scales coincide; χ_c ≥ 1 leaves ξ_c undefined (∞ at 1).
    """

    q_star: float  # the q-map's fixed point (0 when it decays to zero, as for odd φ without biases)
    chi_star: float  # χ₁ at q*
    c_star: float  # the correlation map's stable fixed point
    chi_c: float  # χ_c at c*
    gradient_scale: float  # ξ_∇ = −1/ln χ₁ (∞ at χ₁ = 1, NaN above: gradients explode)
    correlation_scale: float  # ξ_c = −1/ln χ_c (∞ at χ_c = 1, NaN where undefined)

    def trainable_depth(self) -> float:
        """Schoenholz et al.'s bound: TRAINABLE_DEPTH_SCALES × ξ_c layers (∞ at criticality, NaN where undefined)."""
        return TRAINABLE_DEPTH_SCALES * self.correlation_scale


def q_map(activation: str, weight: float, bias: float, q: float) -> float:
    return weight * second_moment(activation, q) + bias


def q_fixed_point(activation: str, weight: float, bias: float) -> float:
    """q* by iterating the q-map from q = 1.

    Without biases and with φ(0) = 0 the map's fixed point 0 is found in closed form, since the
    iteration would crawl there (as 1/l for tanh at σ_w² = 1): a homogeneous φ (ReLU) scales q by
    σ_w²·E[φ′²] each layer, so q* = 0 below 1 and any q (here 1) at 1; a smooth odd φ has q* = 0
    exactly when σ_w²·φ′(0)² ≤ 1 (its q-map is concave with that slope at 0).
    """
    phi, derivative = ACTIVATION_FUNCTIONS[activation]
    if bias == 0.0 and float(phi(np.array([0.0]))[0]) == 0.0:
        if activation in HOMOGENEOUS:
            gain = weight * derivative_moment(activation, 1.0)
            return 0.0 if gain < 1.0 - 1e-12 else (1.0 if gain <= 1.0 + 1e-12 else math.inf)
        if weight * float(derivative(np.array([0.0]))[0]) ** 2 <= 1.0 + 1e-12:
            return 0.0
    q = 1.0
    for _ in range(FIXED_POINT_STEPS):
        following = q_map(activation, weight, bias, q)
        if abs(following - q) <= FIXED_POINT_TOLERANCE * q:
            return following
        q = following
    return q


def _scale_free_moment(activation: str, q: float) -> float:
    """E[φ′(√q z)²], with q = 0 read as its limit φ′(0)² (ReLU's ½ is the same at every q)."""
    if q > 0:
        return derivative_moment(activation, q)
    if activation in HOMOGENEOUS:
        return derivative_moment(activation, 1.0)
    _, derivative = ACTIVATION_FUNCTIONS[activation]
    return float(derivative(np.array([0.0]))[0] ** 2)


def pair_expectation(function: Callable[[np.ndarray, np.ndarray], np.ndarray], q: float, c: float) -> float:
    """E[f(u₁, u₂)] for (u₁, u₂) Gaussian with variances q and correlation c (tensor-product quadrature)."""
    scale = math.sqrt(q)
    nodes, weights = standard_normal_rule(min(scale, PAIR_SCALE_LIMIT))
    kept = np.abs(nodes) <= PAIR_Z_LIMIT
    nodes, weights = nodes[kept], weights[kept] / weights[kept].sum()
    first, second = np.meshgrid(nodes, nodes, indexing="ij")
    u1 = scale * first
    u2 = scale * (c * first + math.sqrt(max(0.0, 1.0 - c * c)) * second)
    return float((function(u1, u2) * np.outer(weights, weights)).sum())


def correlation_map(activation: str, weight: float, bias: float, q: float, c: float) -> float:
    phi, _ = ACTIVATION_FUNCTIONS[activation]
    return (weight * pair_expectation(lambda a, b: phi(a) * phi(b), q, c) + bias) / q


def correlation_fixed_point(activation: str, weight: float, bias: float, q: float, chi: float) -> tuple[float, float]:
    """(c*, χ_c): c* = 1 in the ordered phase (χ₁ ≤ 1); otherwise the stable c* < 1, found by bisection."""
    _, derivative = ACTIVATION_FUNCTIONS[activation]
    if chi <= 1.0 + CRITICAL or q == 0.0 or math.isinf(q):
        return 1.0, chi
    low, high = -1.0, 1.0 - 1e-9  # c-map(c) − c is positive below c* and negative between c* and 1
    if correlation_map(activation, weight, bias, q, low) - low <= 0:
        low = -1.0
    else:
        for _ in range(BISECTION_STEPS):
            middle = 0.5 * (low + high)
            if correlation_map(activation, weight, bias, q, middle) - middle > 0:
                low = middle
            else:
                high = middle
    c_star = 0.5 * (low + high)
    return c_star, weight * pair_expectation(lambda a, b: derivative(a) * derivative(b), q, c_star)


def depth_scale_of(chi: float) -> float:
    """−1/ln χ: layers per e-fold; ∞ at χ = 1, NaN for χ > 1 (growth has no depth scale of decay)."""
    if abs(chi - 1.0) <= CRITICAL:
        return math.inf
    return -1.0 / math.log(chi) if 0.0 < chi < 1.0 else math.nan


def fixed_point(activation: str, weight: float, bias: float) -> FixedPoint:
    """q*, χ₁, c*, χ_c and both depth scales of hidden layers drawn with (σ_w², σ_b²): no net depth enters."""
    if activation not in ACTIVATION_FUNCTIONS:
        raise ValueError(f"unknown activation {activation!r}")
    q_star = q_fixed_point(activation, weight, bias)
    chi = weight * _scale_free_moment(activation, q_star)
    c_star, chi_c = correlation_fixed_point(activation, weight, bias, q_star, chi)
    return FixedPoint(q_star, chi, c_star, chi_c, depth_scale_of(chi), depth_scale_of(chi_c))


def init_fixed_point(activation: str, init: str, width: int) -> FixedPoint:
    """The fixed point of ``width``-wide hidden layers as ``init`` draws them (default init's σ_b² is 1/(3·width))."""
    variances = init_variances(init, width, width)
    return fixed_point(activation, variances.weight, variances.bias)
