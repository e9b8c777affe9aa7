"""Event-driven first layer: scattering raw events equals convolving their count frame."""

import numpy as np
import pytest

from reverb_edge import kernels, reference
from reverb_edge.bitpack import pack_signs
from reverb_edge.errors import InputError
from reverb_edge.events import make_events

# Both paths add the same ±1 values; the event kernel adds them in event order and the
# frame kernel in pixel order. Integer-valued float32 sums below 2**24 are exact, so the
# sign-sums agree exactly and the affine output agrees to float32 rounding of one product.
TOLERANCE = 1e-5


def _random_events(rng, count, height, width):
    return make_events(
        rng.integers(0, width, count), rng.integers(0, height, count),
        np.sort(rng.integers(0, 10_000, count)), rng.integers(0, 2, count),
    )


def _layer(rng, in_channels, out_channels, kernel, groups):
    signs = rng.standard_normal((out_channels, kernel[0], kernel[1], in_channels // groups))
    scale = rng.uniform(0.1, 1.0, out_channels).astype(np.float32)
    bias = rng.uniform(-0.5, 0.5, out_channels).astype(np.float32)
    return pack_signs(signs), scale, bias


@pytest.mark.parametrize(
    "channels, out_channels, kernel, stride, padding, dilation, groups",
    [
        (2, 8, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
        (2, 5, (2, 2), (2, 2), (0, 1, 0, 1), (1, 1), 1),
        (2, 6, (3, 3), (2, 1), (2, 2, 2, 2), (2, 2), 2),
        (1, 7, (5, 3), (1, 2), (0, 0, 1, 1), (1, 1), 1),
    ],
)
@pytest.mark.parametrize("backend", [kernels, reference])
def test_event_conv_equals_frame_path(rng, backend, channels, out_channels, kernel, stride, padding, dilation, groups):
    height, width = 11, 13
    events = _random_events(rng, 300, height, width)
    bits, scale, bias = _layer(rng, channels, out_channels, kernel, groups)
    frame = np.zeros((channels, height, width), np.float32)
    np.add.at(frame, (events["p"].astype(int) if channels == 2 else 0, events["y"], events["x"]), 1.0)
    options = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)

    from_events = backend.binary_conv2d_events(events, (channels, height, width), bits, scale, bias, **options)
    from_frame = kernels.binary_conv2d(frame, bits, scale, bias, in_channels=channels, **options)
    np.testing.assert_allclose(from_events, from_frame, rtol=TOLERANCE, atol=TOLERANCE)


def test_event_conv_no_events_gives_bias(rng):
    bits, scale, bias = _layer(rng, 2, 4, (3, 3), 1)
    empty = _random_events(rng, 0, 5, 5)
    out = kernels.binary_conv2d_events(empty, (2, 5, 5), bits, scale, bias, padding=1)
    assert out.shape == (4, 5, 5)
    np.testing.assert_array_equal(out, np.broadcast_to(bias[:, None, None], out.shape))


def test_event_conv_rejects_outside_events(rng):
    bits, scale, bias = _layer(rng, 2, 4, (3, 3), 1)
    events = make_events([0, 9], [0, 0], [0, 1], [1, 0])
    with pytest.raises(InputError, match="x in \\[0, 9\\].*outside the input \\(5, 5\\)"):
        kernels.binary_conv2d_events(events, (2, 5, 5), bits, scale, bias)


def test_event_conv_rejects_plain_array(rng):
    bits, scale, bias = _layer(rng, 2, 4, (3, 3), 1)
    with pytest.raises(InputError, match="fields x, y, p"):
        kernels.binary_conv2d_events(np.zeros((3, 4)), (2, 5, 5), bits, scale, bias)
