"""The ReverB-SNN LIF neuron step and the elementwise residual add."""

import numpy as np
from numba import njit

from reverb_edge.kernels.checks import check_lif_step, check_same_shape
from reverb_edge.kernels.config import NJIT_OPTIONS


def lif_step(
    current: np.ndarray,
    membrane: np.ndarray,
    tau: float,
    threshold: float,
    spikes_out: np.ndarray | None = None,
) -> tuple[np.ndarray, int]:
    """Advance a layer of ReverB LIF neurons by one timestep and return (spikes, n_fired).

    Elementwise over any shape, with U the membrane and I the input current::

        H = tau * U + I          charge
        fired = H >= threshold   fire (a neuron exactly at threshold fires)
        spike = H if fired else 0.0
        U <- 0.0 if fired else H  hard reset

    The spike is real-valued: it carries the membrane potential H itself.
    ``tau`` and ``threshold`` are rounded to float32 first, and every step is
    computed in float32.

    Args:
        current: input current I, any float dtype, same shape as membrane.
        membrane: state U, float32 and C-contiguous. It is updated in place.
        tau: decay factor in [0, 1].
        threshold: firing threshold, finite.
        spikes_out: optional float32 C-contiguous buffer of the membrane's shape
            to write the spikes into, so no array is allocated. It may be the
            current array but must not overlap the membrane.

    Returns:
        The spike array (``spikes_out`` when given) and the number of neurons
        that fired, as an int.

    Raises:
        InputError: on a wrong dtype, shape or layout, or a bad tau or threshold.
    """
    current, membrane, tau, threshold, spikes_out = check_lif_step(
        "lif_step", current, membrane, tau, threshold, spikes_out
    )
    spikes = np.empty(membrane.shape, dtype=np.float32) if spikes_out is None else spikes_out
    n_fired = _lif_step_kernel(
        current.reshape(-1), membrane.reshape(-1), tau, threshold, spikes.reshape(-1)
    )
    return spikes, int(n_fired)


def residual_add(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Add ``a`` and ``b`` elementwise in float32 and return the sum.

    The shapes must match exactly; there is no broadcasting. When ``out`` is
    given (float32, C-contiguous, same shape) the sum is written there, and
    ``out`` may be ``a`` or ``b``. Raises ``InputError`` otherwise.
    """
    a, b, out = check_same_shape("residual_add", a, b, out)
    result = np.empty(a.shape, dtype=np.float32) if out is None else out
    _add_kernel(a.reshape(-1), b.reshape(-1), result.reshape(-1))
    return result


@njit(**NJIT_OPTIONS)
def _lif_step_kernel(current, membrane, tau, threshold, spikes):
    # Written without branches, so LLVM turns the loop into vector compares and selects.
    n_fired = 0
    zero = np.float32(0.0)
    for k in range(membrane.shape[0]):
        potential = tau * membrane[k] + current[k]
        fired = potential >= threshold
        spikes[k] = potential if fired else zero
        membrane[k] = zero if fired else potential
        n_fired += 1 if fired else 0
    return n_fired


@njit(**NJIT_OPTIONS)
def _lif_first_step_kernel(current, membrane, threshold, spikes):
    # The first timestep after a reset, when every membrane potential is 0: the potential is the
    # current, and the stored potentials are not read, so a reset does not need to zero them.
    n_fired = 0
    zero = np.float32(0.0)
    for k in range(membrane.shape[0]):
        potential = current[k]
        fired = potential >= threshold
        spikes[k] = potential if fired else zero
        membrane[k] = zero if fired else potential
        n_fired += 1 if fired else 0
    return n_fired


@njit(**NJIT_OPTIONS)
def _lif_pair_kernel(current, current_next, membrane, tau, threshold, spikes, spikes_next, fresh_tag, keep):
    """Run two consecutive timesteps of :func:`_lif_step_kernel` in one pass; return the two counts of fired neurons.

    With a non-empty ``fresh_tag`` the first timestep is the first after a
    reset, as in :func:`_lif_first_step_kernel`. Each neuron's membrane
    potential is read once and written once, and each step's arithmetic is
    that of the one-step kernels, so the results are the same bit for bit.
    With ``keep`` False the potentials after the second timestep are not
    stored (nobody reads them), so a fresh pair does not touch ``membrane``.
    """
    fresh = len(fresh_tag) > 0
    n_fired = 0
    n_fired_next = 0
    zero = np.float32(0.0)
    for k in range(spikes.shape[0]):
        potential = current[k] if fresh else tau * membrane[k] + current[k]
        fired = potential >= threshold
        spikes[k] = potential if fired else zero
        potential = (tau * (zero if fired else potential)) + current_next[k]
        fired_next = potential >= threshold
        spikes_next[k] = potential if fired_next else zero
        if keep:
            membrane[k] = zero if fired_next else potential
        n_fired += 1 if fired else 0
        n_fired_next += 1 if fired_next else 0
    return n_fired, n_fired_next


@njit(**NJIT_OPTIONS)
def _add_kernel(a, b, out):
    for k in range(out.shape[0]):
        out[k] = a[k] + b[k]
