"""Run the kernels' Python bodies once with NUMBA_DISABLE_JIT=1.

Numba-compiled code is invisible to coverage, and the Python bodies must stay
valid Python with NumPy scalar semantics. The check runs in a subprocess,
because numba reads the JIT switch when it is first imported. Coverage
measures the subprocess only when subprocess measurement is enabled, for
example through coverage's COVERAGE_PROCESS_START.
"""

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

# Small inputs only: without the JIT every synapse is one Python-level step.
SCRIPT = r"""
import numpy as np

from reverb_edge import kernels, reference
from reverb_edge.bitpack import pack_signs
from reverb_edge.kernels import conv
from reverb_edge.kernels.checks import check_float_conv2d
from reverb_edge.kernels.conv import PreparedConv2d, prepare_linear
from reverb_edge.kernels.neuron import _lif_step_kernel

assert not hasattr(conv._conv2d_rows, "py_func"), "the JIT is still enabled"

rng = np.random.default_rng(7)


def sparse(shape):
    values = rng.standard_normal(shape).astype(np.float32)
    values[rng.random(shape) < 0.5] = 0.0
    return values


for channels, out_channels, groups, kernel, stride, padding, dilation in [
    (3, 4, 1, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
    (4, 6, 2, (2, 3), (2, 1), (0, 1, 1, 0), (1, 2)),
    (65, 2, 1, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1)),
    (3, 3, 3, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),
]:
    x = sparse((channels, 5, 6))
    weight = rng.standard_normal((out_channels, channels // groups, *kernel)).astype(np.float32)
    signs = np.where(weight >= 0, 1.0, -1.0).astype(np.float32)
    bits = pack_signs(weight.transpose(0, 2, 3, 1))
    scale = rng.uniform(0.5, 2.0, out_channels).astype(np.float32)
    bias = rng.standard_normal(out_channels).astype(np.float32)
    options = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)

    binary = kernels.binary_conv2d(x, bits, scale, bias, in_channels=channels, **options)
    expected = reference.binary_conv2d(x, bits, scale, bias, in_channels=channels, **options)
    dense = kernels.float_conv2d(x, signs, scale, bias, **options)
    fan_in = (channels // groups) * kernel[0] * kernel[1]
    np.testing.assert_allclose(binary, expected, rtol=1e-5, atol=1e-5 * fan_in)
    np.testing.assert_array_equal(binary, dense)

binary = (rng.random((70, 4, 5)) < 0.4).astype(np.float32)
bits = pack_signs(rng.standard_normal((3, 3, 3, 35)))
scale = np.ones(3, np.float32)
bias = np.zeros(3, np.float32)
np.testing.assert_array_equal(
    kernels.binary_conv2d_popcount(binary[:35], bits, scale, bias, in_channels=35, padding=1),
    reference.binary_conv2d_popcount(binary[:35], bits, scale, bias, in_channels=35, padding=1),
)

x = sparse((70,))
weight = rng.standard_normal((3, 70)).astype(np.float32)
scale = np.ones(3, np.float32)
bias = np.zeros(3, np.float32)
np.testing.assert_allclose(
    kernels.binary_linear(x, pack_signs(weight), scale, bias, in_features=70),
    reference.binary_linear(x, pack_signs(weight), scale, bias, in_features=70),
    rtol=1e-5, atol=1e-5 * 70,
)
np.testing.assert_allclose(
    kernels.float_linear(x, weight, scale, bias),
    reference.float_linear(x, weight, scale, bias),
    rtol=1e-5, atol=1e-5 * 70,
)

image = sparse((2, 5, 5))
image[0, 0, 0] = np.nan
np.testing.assert_array_equal(
    kernels.avg_pool2d(image, 2, 2, (0, 1, 1, 0)), reference.avg_pool2d(image, 2, 2, (0, 1, 1, 0))
)
np.testing.assert_array_equal(
    kernels.max_pool2d(image, 3, 1, 1, 2), reference.max_pool2d(image, 3, 1, 1, 2)
)

membrane = np.zeros((2, 3), np.float32)
membrane_reference = membrane.copy()
for _ in range(4):
    current = sparse((2, 3))
    spikes, n_fired = kernels.lif_step(current, membrane, 0.25, 0.5)
    spikes_reference, n_reference = reference.lif_step(current, membrane_reference, 0.25, 0.5)
    np.testing.assert_array_equal(spikes, spikes_reference)
    np.testing.assert_array_equal(membrane, membrane_reference)
    assert n_fired == n_reference

np.testing.assert_array_equal(kernels.residual_add(image, image), image + image)

# Two timesteps in one pass, and a convolution merged with the LIF neurons it feeds (17 outputs: a
# partly filled vector), against one-timestep calls.
tau, threshold = np.float32(0.25), np.float32(0.5)
inputs = [np.ascontiguousarray(sparse((3, 5, 6)).transpose(1, 2, 0)) for _ in range(2)]
weight = np.where(rng.standard_normal((17, 3, 3, 3)) >= 0, 1.0, -1.0).astype(np.float32)
scale = rng.uniform(0.5, 2.0, 17).astype(np.float32)
bias = rng.standard_normal(17).astype(np.float32)
geometry = check_float_conv2d("nojit", np.empty((3, 5, 6), np.float32), weight, scale, bias, 1, 1, 1, 1)[4]
layer = PreparedConv2d(weight, scale, bias, geometry, 5, 6)
both = [out.copy() for out in layer.pair(*inputs)[:2]]
membrane = np.zeros(layer.out.shape, np.float32)
spikes = [np.empty_like(membrane) for _ in range(2)]
layer.fire(*inputs, (membrane, tau, threshold, *spikes), True)
expected_membrane = np.zeros(membrane.size, np.float32)
for x_now, pair_out, spikes_now in zip(inputs, both, spikes):
    current = layer(x_now)[0].reshape(-1)
    np.testing.assert_array_equal(pair_out.reshape(-1), current)
    expected = np.empty(membrane.size, np.float32)
    _lif_step_kernel(current, expected_membrane, tau, threshold, expected)
    np.testing.assert_array_equal(spikes_now.reshape(-1), expected)
np.testing.assert_array_equal(membrane.reshape(-1), expected_membrane)

# The scatter kernel (17 inputs, so the layer takes it) against the gather kernel and the reference.
chw = sparse((17, 5, 6))
weight = np.where(rng.standard_normal((17, 17, 3, 3)) >= 0, 1.0, -1.0).astype(np.float32)
geometry = check_float_conv2d("nojit", chw, weight, scale, bias, 1, 1, 1, 1)[4]
scattering = PreparedConv2d(weight, scale, bias, geometry, 5, 6)
gathering = PreparedConv2d(weight, scale, bias, geometry, 5, 6)
assert scattering.scatter is not None
gathering.scatter = None
x_now = np.ascontiguousarray(chw.transpose(1, 2, 0))
scattered = scattering(x_now)[0]
np.testing.assert_array_equal(scattered, gathering(x_now)[0])
np.testing.assert_allclose(scattered.transpose(2, 0, 1), reference.float_conv2d(chw, weight, scale, bias, padding=1),
                           rtol=1e-5, atol=1e-5 * 17 * 9)

linear = prepare_linear(weight.reshape(17, -1)[:, :40], scale, bias)
vectors = [sparse((40,)), sparse((40,))]
both = [out.copy() for out in linear.pair(*vectors)[:2]]
for vector, pair_out in zip(vectors, both):
    np.testing.assert_array_equal(pair_out, linear(vector)[0])
print("kernels without JIT match the reference")
"""


def test_kernels_without_jit_match_reference():
    environment = dict(os.environ, NUMBA_DISABLE_JIT="1")

    completed = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert completed.returncode == 0, completed.stderr
    assert "kernels without JIT match the reference" in completed.stdout
