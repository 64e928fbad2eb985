"""The numbers inside the activations, in one place and without torch, so that the torch modules
(``models``, ``derivatives``) and the numpy theory (``analysis.propagation``) cannot drift apart."""

# LeCun et al. 1998 ("Efficient BackProp", section 4.4): f(x) = 1.7159·tanh(2x/3) has f(±1) = ±1 and
# keeps unit-variance inputs at unit variance.
LECUN_SCALE = 1.7159
LECUN_SLOPE = 2.0 / 3.0
# Klambauer et al. 2017's λ and α, the values torch.nn.SELU hard-codes.
SELU_SCALE = 1.0507009873554805
SELU_ALPHA = 1.6732632423543772
# torch.nn.LeakyReLU's default negative slope (models builds it with its defaults).
LEAKY_SLOPE = 0.01
