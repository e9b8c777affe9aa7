"""The inference engine: runs a model file's graph timestep by timestep.

Thread safety: an :class:`Engine` keeps mutable state (membrane potentials,
statistics, scratch buffers), so one instance must not be used from two
threads at once. Weights are read-only and shared: :meth:`Engine.clone` gives
another engine over the same weights with its own state, one per thread. (A
compiled program, see :mod:`reverb_edge.program`, keeps its own copy of the
weights and buffers it uses, so each engine that runs one has that copy.) The
Numba kernels release the GIL, so engines in different threads run in parallel.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from types import ModuleType
from typing import Callable, Iterable

import numba
import numpy as np
from tqdm import tqdm

from . import kernels, reference
from .bitpack import unpack_signs
from .kernels.checks import check_float_conv2d, check_pool2d
from .kernels.conv import PreparedConv2d, prepare_linear
from .kernels.layout import _channels_last_copy, _flatten_channels_first_kernel, _flatten_pair_kernel
from .kernels.neuron import _add_kernel, _lif_first_step_kernel, _lif_pair_kernel, _lif_step_kernel
from .kernels.pool import avg_pool2d_hwc, avg_pool2d_hwc_pair, max_pool2d_hwc, max_pool2d_hwc_pair
from .errors import InputError, ReverbError
from .graph import Graph, InputSpec
from .modelfile import Model, load_model, validate_tensors
from .nodes import LIF, Add, AvgPool2d, Conv2d, Flatten, Linear, MaxPool2d, Node
from .program import FALLBACK, NOT_FINITE, Program, build_program, programs_enabled
from .registry import resolve_model

logger = logging.getLogger(__name__)

BACKENDS = {"numba": kernels, "reference": reference}

# 2**27 float32 membrane potentials (512 MiB, plus as much again for spike buffers)
# is far above any network that a Raspberry Pi-class board runs.
MAX_STATE_ELEMENTS = 1 << 27

# The largest input magnitude accepted. A normalised input lies within a few units of 0, and
# values near float32's 3.4e38 overflow in the first layer's sums (see Engine._check_magnitude).
MAX_INPUT_MAGNITUDE = 1e30

# The Numba backend keeps synaptic weights as float32 rows (4 bytes per weight, each row padded
# to 16 outputs), 32 times their packed size. 2**26 of them take 256 MiB, which leaves room on a
# board with 1 GiB of memory. A network with 12.6 million weights needs about a fifth of that.
MAX_WEIGHT_ROW_ELEMENTS = 1 << 26


def weight_row_elements(graph: Graph) -> int:
    """Return how many float32 weights the Numba backend prepares for ``graph``'s synaptic layers."""
    total = 0
    for node in graph.nodes:
        if isinstance(node, Conv2d):
            group_out = node.out_channels // node.groups
            padded = -(-group_out // 16) * 16
            total += node.in_channels * node.kernel_size[0] * node.kernel_size[1] * padded
        elif isinstance(node, Linear):
            total += node.in_features * (-(-node.out_features // 16) * 16)
    return total


def check_threads(threads) -> int:
    """Return ``threads`` as an int in [1, the number of threads Numba may start], or raise InputError."""
    limit = numba.config.NUMBA_NUM_THREADS
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or not 1 <= threads <= limit:
        raise InputError(
            f"threads is {threads!r}, expected an int from 1 to {limit} (this machine's cores, "
            "or NUMBA_NUM_THREADS when set)"
        )
    return int(threads)


_UNBUILT = object()  # marks a program that is not built yet (see Engine._program_of)


# The counters of a LayerStats, in the order of a row of Engine._stat_counts.
STAT_FIELDS = ("timesteps", "neurons", "spikes", "inputs", "input_events")


def _counter(index: int, doc: str) -> property:
    """Return the property of counter ``index``: the plan's count plus the compiled programs' count."""
    field = "_" + STAT_FIELDS[index]

    def get(self) -> int:
        value = getattr(self, field)
        return value if self._counts is None else value + int(self._counts[index])

    def set(self, value: int) -> None:
        setattr(self, field, value if self._counts is None else value - int(self._counts[index]))

    return property(get, set, doc=doc)


class LayerStats:
    """Activity of one node, summed over its evaluations since the last reset of the statistics.

    A node runs once per timestep, except the time-invariant nodes that
    :meth:`Engine.predict` computes once per input; ``timesteps`` counts runs.

    For a neuron node: ``neurons`` per timestep, ``spikes`` emitted and
    ``firing_rate`` = spikes / (neurons · timesteps). For a synaptic node:
    ``input_events``, the non-zero inputs it received (each costs fan-out
    synaptic operations; zeros cost nothing), out of ``inputs`` in total.

    Each counter is the sum of two parts: the engine's plan adds to a plain
    attribute (``_timesteps`` and so on), and the compiled programs (see
    :mod:`reverb_edge.program`) add to ``counts``, a row of an int64 array
    that they receive, without any Python work per call.
    """

    __slots__ = ("name", "kind", "_timesteps", "_neurons", "_spikes", "_inputs", "_input_events", "_counts")

    def __init__(self, name: str, kind: str, timesteps: int = 0, neurons: int = 0, spikes: int = 0, inputs: int = 0,
                 input_events: int = 0, counts: np.ndarray | None = None) -> None:
        self.name, self.kind, self._counts = name, kind, counts
        self._timesteps, self._neurons, self._spikes = timesteps, neurons, spikes
        self._inputs, self._input_events = inputs, input_events

    timesteps = _counter(0, "evaluations of the node")
    neurons = _counter(1, "neurons per timestep (LIF nodes)")
    spikes = _counter(2, "spikes emitted (LIF nodes)")
    inputs = _counter(3, "input values received (Conv2d and Linear nodes)")
    input_events = _counter(4, "non-zero input values received (Conv2d and Linear nodes)")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LayerStats):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __copy__(self) -> "LayerStats":
        """Return a snapshot: a LayerStats with the current counts that no engine updates."""
        return LayerStats(self.name, self.kind, *(getattr(self, field) for field in STAT_FIELDS))

    def __deepcopy__(self, memo: dict) -> "LayerStats":
        return self.__copy__()

    def __repr__(self) -> str:
        counters = ", ".join(f"{field}={getattr(self, field)}" for field in STAT_FIELDS)
        return f"LayerStats(name={self.name!r}, kind={self.kind!r}, {counters})"

    @property
    def firing_rate(self) -> float | None:
        if self.kind != "LIF" or self.timesteps == 0:
            return None
        return self.spikes / (self.neurons * self.timesteps)

    @property
    def input_density(self) -> float | None:
        if self.inputs == 0:
            return None
        return self.input_events / self.inputs

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "timesteps": self.timesteps,
            "neurons": self.neurons,
            "spikes": self.spikes,
            "firing_rate": self.firing_rate,
            "inputs": self.inputs,
            "input_events": self.input_events,
            "input_density": self.input_density,
        }


def _make_executor(node: Node, tensors: dict[str, np.ndarray], backend: ModuleType) -> Callable:
    """Bind a node's parameters and weights into a function of its input arrays."""
    if isinstance(node, Conv2d):
        weight = tensors[f"{node.name}.weight"]
        scale = tensors[f"{node.name}.scale"]
        bias = tensors[f"{node.name}.bias"]
        options = dict(stride=node.stride, padding=node.padding, dilation=node.dilation, groups=node.groups)
        if node.weight_format == "binary":
            # The signs are unpacked once into ±1.0 floats (O, C/groups, kh, kw): adding value · (±1.0)
            # is exactly the sign-add, and the float kernel's inner loop vectorises, where testing one
            # bit per output channel does not. It was 1.8 times faster on the shipped MNIST model.
            signs = unpack_signs(weight, node.in_channels // node.groups).astype(np.float32)
            signs = np.ascontiguousarray(signs.transpose(0, 3, 1, 2))
            return lambda x, slot=0: backend.float_conv2d(x, signs, scale, bias, **options)
        return lambda x, slot=0: backend.float_conv2d(x, weight, scale, bias, **options)
    if isinstance(node, Linear):
        weight = tensors[f"{node.name}.weight"]
        scale = tensors[f"{node.name}.scale"]
        bias = tensors[f"{node.name}.bias"]
        if node.weight_format == "binary":
            return lambda x, slot=0: backend.binary_linear(x, weight, scale, bias, in_features=node.in_features)
        return lambda x, slot=0: backend.float_linear(x, weight, scale, bias)
    if isinstance(node, AvgPool2d):
        return lambda x, slot=0: backend.avg_pool2d(x, node.kernel_size, node.stride, node.padding)
    if isinstance(node, MaxPool2d):
        return lambda x, slot=0: backend.max_pool2d(x, node.kernel_size, node.stride, node.padding, node.dilation)
    if isinstance(node, Flatten):
        return lambda x, slot=0: np.ascontiguousarray(x).reshape(-1)
    if isinstance(node, Add):
        return lambda a, b, slot=0: backend.residual_add(a, b)
    raise InputError(f"node {node.name!r}: the engine has no executor for type {node.type_name}")


def _float_weight(node: Conv2d | Linear, tensors: dict[str, np.ndarray]) -> np.ndarray:
    """Return a layer's weights as floats, unpacking binary signs to ±1.0 (PyTorch's layout)."""
    weight = tensors[f"{node.name}.weight"]
    if node.weight_format != "binary":
        return weight
    if isinstance(node, Linear):
        return unpack_signs(weight, node.in_features).astype(np.float32)
    signs = unpack_signs(weight, node.in_channels // node.groups).astype(np.float32)
    return np.ascontiguousarray(signs.transpose(0, 3, 1, 2))


def _channels_last(shape: tuple[int, ...]) -> tuple[int, ...]:
    return (shape[1], shape[2], shape[0]) if len(shape) == 3 else tuple(shape)


def _make_fast_executor(node: Node, input_shape: tuple[int, ...], tensors: dict[str, np.ndarray], engine: "Engine") -> Callable:
    """Bind a node into a function of channels-last arrays for the Numba backend.

    Synaptic nodes return (output, non-zero inputs); the others return the
    output. Outputs live in buffers allocated here, once, and are overwritten
    by the node's next evaluation in the same ``slot``. There are two slots,
    0 and 1, so that two consecutive timesteps can be live at once (see
    ``Engine._run_block``). A convolution also has ``pair``, which computes
    both timesteps in one pass.
    """
    if isinstance(node, (Conv2d, Linear)):
        weight = _float_weight(node, tensors)
        scale, bias = tensors[f"{node.name}.scale"], tensors[f"{node.name}.bias"]
        rows = engine.model.prepared.get(f"{node.name}.rows")
        if isinstance(node, Linear):
            layer = prepare_linear(weight, scale, bias, rows=rows)
            engine.model.prepared[f"{node.name}.rows"] = layer.conv.rows
        else:
            channels, height, width = input_shape
            geometry = check_float_conv2d(
                node.name, np.empty(input_shape, np.float32), weight, scale, bias, node.stride, node.padding, node.dilation, node.groups,
            )[4]
            bits = tensors[f"{node.name}.weight"] if node.weight_format == "binary" else None
            layer = PreparedConv2d(weight, scale, bias, geometry, height, width, weight_bits=bits, rows=rows)
            engine.model.prepared[f"{node.name}.rows"] = layer.rows

        outs = (layer.out, layer.out_next)

        def synapses(x, slot=0):
            return layer(x, engine.threads, out=outs[slot])

        synapses.layer = layer  # the event-driven first layer reuses its weight rows
        synapses.pair = lambda x, x_next: layer.pair(x, x_next, engine.threads)
        return synapses
    if isinstance(node, (AvgPool2d, MaxPool2d)):
        dilation = node.dilation if isinstance(node, MaxPool2d) else (1, 1)
        geometry = check_pool2d(node.name, np.empty(input_shape, np.float32), node.kernel_size, node.stride, node.padding, dilation)[1]
        outs = tuple(np.empty((geometry.out_height, geometry.out_width, input_shape[0]), np.float32) for _ in range(2))
        pool, pool_pair = (avg_pool2d_hwc, avg_pool2d_hwc_pair) if isinstance(node, AvgPool2d) else (max_pool2d_hwc, max_pool2d_hwc_pair)

        def pooling(x, slot=0):
            return pool(x, geometry, outs[slot])

        pooling.pair = lambda x, x_next: pool_pair(x, x_next, geometry, *outs)
        return pooling
    if isinstance(node, Flatten):
        if len(input_shape) != 3:
            return lambda x, slot=0: x.reshape(-1)

        # Flatten in PyTorch's channels-first order, which the next layer's weights expect.
        flats = tuple(np.empty(int(np.prod(input_shape)), np.float32) for _ in range(2))

        def flatten(x, slot=0):
            _flatten_channels_first_kernel(x, flats[slot])
            return flats[slot]

        def flatten_pair(x, x_next):
            _flatten_pair_kernel(x, x_next, *flats)
            return flats

        flatten.pair = flatten_pair
        return flatten
    if isinstance(node, Add):
        outs = tuple(np.empty(_channels_last(input_shape), np.float32) for _ in range(2))

        def add(a, b, slot=0):
            _add_kernel(a.reshape(-1), b.reshape(-1), outs[slot].reshape(-1))
            return outs[slot]

        return add
    raise InputError(f"node {node.name!r}: the engine has no executor for type {node.type_name}")


class _Exclusive:
    """Context manager that holds an engine's lock for one call (a class: cheaper than a generator)."""

    __slots__ = ("engine",)

    def __init__(self, engine: "Engine") -> None:
        self.engine = engine

    def __enter__(self) -> None:
        if not self.engine._busy.acquire(blocking=False):
            raise ReverbError(
                "this Engine is already running in another thread; give each thread its own engine.clone()"
            )
        if self.engine.threads > 1:
            try:
                numba.set_num_threads(self.engine.threads)  # a per-thread setting in Numba
            except BaseException:
                self.engine._busy.release()
                raise

    def __exit__(self, *exc_info) -> None:
        self.engine._busy.release()


class Engine:
    """Run a ReverB-SNN model on the CPU, one sample at a time.

    Typical use::

        engine = Engine.load("mnist")
        scores = engine.predict(engine.preprocess(image))   # T timesteps from reset
        label = engine.labels[int(scores.argmax())]

    or, for a stream, ``engine.reset()`` then ``engine.step(x)`` once per timestep.
    """

    def __init__(self, model: Model, backend: str = "numba", threads: int = 1) -> None:
        if backend not in BACKENDS:
            raise InputError(f"backend must be one of {sorted(BACKENDS)}, got {backend!r}")
        self.threads = check_threads(threads)
        validate_tensors(model.graph, model.tensors, str(model.path or "model"))
        state_elements = sum(int(np.prod(model.graph.shapes[n.name])) for n in model.graph.nodes if n.stateful)
        if state_elements > MAX_STATE_ELEMENTS:
            raise InputError(
                f"the model's neurons need {state_elements} membrane potentials, more than the "
                f"{MAX_STATE_ELEMENTS} this engine allocates; the model is too large for the device"
            )
        if backend == "numba" and weight_row_elements(model.graph) > MAX_WEIGHT_ROW_ELEMENTS:
            megabytes = weight_row_elements(model.graph) * 4 / 2**20
            raise InputError(
                f"the model's weights take {megabytes:.0f} MiB as the engine's float32 rows, more than the "
                f"{MAX_WEIGHT_ROW_ELEMENTS * 4 // 2**20} MiB it allocates; the model is too large for the device"
            )
        self.model = model
        self.backend = backend
        graph = model.graph
        self._kernels = BACKENDS[backend]
        # The Numba backend keeps feature maps channels-last (H, W, C) between nodes; the
        # reference backend keeps PyTorch's (C, H, W). Arrays leaving the engine are (C, H, W).
        self._fast = backend == "numba"
        layout = _channels_last if self._fast else tuple
        if self._fast:
            self._executors = {
                node.name: _make_fast_executor(node, graph.input_shapes(node)[0], model.tensors, self)
                for node in graph.nodes if not node.stateful
            }
        else:
            self._executors = {node.name: _make_executor(node, model.tensors, self._kernels) for node in graph.nodes if not node.stateful}
        self._invariant = graph.time_invariant()
        self._membranes = {
            node.name: np.zeros(layout(graph.shapes[node.name]), dtype=np.float32) for node in graph.nodes if node.stateful
        }
        # Spikes of time slots 0 and 1 (see _run_block).
        self._spike_buffers = {name: (np.empty_like(u), np.empty_like(u)) for name, u in self._membranes.items()}
        # Neurons whose membrane potentials count as zero, whatever their buffers hold (see reset).
        self._fresh: set[str] = set(self._membranes)
        # False while the last timesteps of a predict call run: their membrane potentials are not read
        # again (the call ends with a reset), so the kernels may skip storing them.
        self._keep = True
        self._nodes = {node.name: node for node in graph.nodes}
        self._output_name = graph.output_name
        self._neuron_constants = {
            node.name: (np.float32(node.tau), np.float32(node.threshold)) for node in graph.nodes if node.stateful
        }
        # One entry per node, resolved once so that each timestep only looks up values:
        # (name, kind, sources, function, two-timestep function or None, time-invariant, fused node or None).
        self._plan = []
        for node in graph.nodes:
            function = self._node_function(node)
            self._plan.append((node.name, self._kind(node), tuple(graph.sources[node.name]), function,
                               getattr(function, "pair", None), node.name in self._invariant, None))
        # Plans with convolutions merged into their neurons: for inputs that change with every
        # timestep, and for predict, whose time-invariant nodes run once (see _fuse).
        self._stream_plan = self._fuse(self._plan, invariant="each timestep")
        self._fused_plan = self._fuse(self._plan, invariant="once" if graph.timesteps <= 2 else "apart")
        self._supplied_plan = self._fuse(self._plan, invariant="apart")
        self._busy = threading.Lock()
        # The compiled predict and predict_frames (see reverb_edge.program), each built by its first
        # call on one thread; None where programs do not cover this network or the environment turns
        # them off when the engine is built.
        self._use_programs = self._fast and programs_enabled()
        self._programs: dict[str, Program | None] = {}
        self._no_frames: np.ndarray | None = None  # predict_frames' input when the program bins events
        self.stats: dict[str, LayerStats] = {}
        self.reset_stats()

    @classmethod
    def load(cls, path_or_name: str | Path, backend: str = "numba", use_mmap: bool = True, threads: int = 1) -> "Engine":
        """Load a ``.reverb`` file, or a shipped model by name (``"mnist"``).

        ``threads`` > 1 splits each convolution's output rows over that many
        of Numba's threads; 1 (the default) runs on the calling thread only.
        """
        model = load_model(resolve_model(path_or_name), use_mmap=use_mmap)
        logger.info("loaded %s: %d nodes, T=%d", model.path, len(model.graph.nodes), model.graph.timesteps)
        return cls(model, backend=backend, threads=threads)

    def clone(self) -> "Engine":
        """Return an engine over the same (read-only) weights with its own state, for another thread.

        The clone runs compiled programs where this engine does, whatever
        the environment variable is set to now.
        """
        clone = Engine(self.model, backend=self.backend, threads=self.threads)
        clone._use_programs = self._use_programs
        return clone

    @property
    def graph(self) -> Graph:
        return self.model.graph

    @property
    def input_spec(self) -> InputSpec:
        return self.model.graph.input

    @property
    def labels(self) -> tuple[str, ...]:
        labels = self.input_spec.labels
        return labels or tuple(str(i) for i in range(self.graph.shapes[self.graph.output_name][0]))

    @property
    def timesteps(self) -> int:
        return self.model.graph.timesteps

    def reset(self) -> None:
        """Set every membrane potential to zero (the state before the first timestep)."""
        if self._fast:
            # Lazily: each neuron's next step starts from zero without reading its stored potentials.
            self._fresh.update(self._membranes)
            return
        for membrane in self._membranes.values():
            membrane.fill(0.0)

    def reset_stats(self) -> None:
        """Zero the per-layer activity counters.

        The counters are new objects: a LayerStats taken before keeps its
        values and stops counting.
        """
        self.stats = {}
        # The programs' part of every counter: one row per node, in graph order (see LayerStats).
        self._stat_counts = np.zeros((len(self.graph.nodes), len(STAT_FIELDS)), np.int64)
        for row, node in enumerate(self.graph.nodes):
            stats = LayerStats(node.name, node.type_name, counts=self._stat_counts[row])
            if node.stateful:
                stats.neurons = int(np.prod(self.graph.shapes[node.name]))
            self.stats[node.name] = stats

    def preprocess(self, image) -> np.ndarray:
        """Turn a PIL image or a uint8 array into the normalised (C, H, W) float32 input."""
        from .preprocess import preprocess_image

        return preprocess_image(image, self.input_spec)

    def _check_input(self, x: np.ndarray) -> np.ndarray:
        array = np.asarray(x)
        if array.shape != self.input_spec.shape:
            raise InputError(
                f"input has shape {array.shape}, but the model expects {self.input_spec.shape} (C, H, W); "
                "use Engine.preprocess for images, or predict_batch for a batch"
            )
        if array.dtype.kind != "f":
            raise InputError(
                f"input has dtype {array.dtype}, but the engine expects the normalised float input; "
                "turn images into it with engine.preprocess(image)"
            )
        if array.dtype == np.float32 and array.flags.c_contiguous:
            # The common case: one scan, no conversion. For the Numba backend that scan is part of the
            # copy in _internal, which every caller applies next.
            if not self._fast or array.ndim != 3:
                self._check_magnitude(array)
            return array
        self._check_magnitude(array)
        with np.errstate(over="ignore"):
            converted = np.ascontiguousarray(array, dtype=np.float32)
        if not np.isfinite(converted).all():
            largest = float(np.abs(array).max())
            raise InputError(
                f"input values up to {largest:.3g} exceed the float32 range (3.4e38); normalise the input "
                "as the model's input spec says (engine.preprocess does)"
            )
        return converted

    @staticmethod
    def _check_magnitude(array: np.ndarray) -> None:
        """Reject NaN, infinity and values beyond MAX_INPUT_MAGNITUDE.

        Values near float32's limit overflow in the first layer's sums. An
        overflow to infinity reaches the scores, which are checked, but one
        that meets infinity of the other sign leaves NaN membrane potentials,
        which never fire: the scores then look valid and are wrong.
        """
        largest = np.abs(array).max()
        if float(np.finfo(largest.dtype).max) < MAX_INPUT_MAGNITUDE:
            # float16: the limit would turn into infinity in the comparison, so compare in float64.
            largest = np.float64(largest)
        if largest <= MAX_INPUT_MAGNITUDE:
            return
        if not np.isfinite(largest):
            raise InputError("input contains NaN or infinity")
        if largest <= np.finfo(np.float32).max:
            raise InputError(
                f"input values up to {float(largest):.3g} are far outside a normalised input (at most "
                f"{MAX_INPUT_MAGNITUDE:.0e} is accepted), and the network's sums would overflow float32; normalise "
                "the input as the model's input spec says (engine.preprocess does)"
            )

    def _internal(self, array: np.ndarray) -> np.ndarray:
        """Return a checked (C, H, W) array in the backend's layout, as a new writable array for the Numba backend.

        For the Numba backend one compiled pass copies the input channels-last
        and finds its largest magnitude, which :meth:`_check_input` left to it.
        """
        if self._fast and array.ndim == 3:
            # Always a copy: with one channel the transpose is already contiguous, and a view of a
            # read-only input would reach the kernels as another type and compile them again.
            channels, height, width = array.shape
            internal = np.empty((height, width, channels), np.float32)
            if not _channels_last_copy(array, internal) <= MAX_INPUT_MAGNITUDE:
                self._check_magnitude(array)  # raises, naming the problem
            return internal
        return array

    def _public(self, array: np.ndarray) -> np.ndarray:
        """Return a copy of a backend array in the (C, H, W) layout."""
        if self._fast and array.ndim == 3:
            return array.transpose(2, 0, 1).copy()
        return array.copy()

    _NEURON, _SYNAPSES, _OTHER, _FIRING = range(4)

    def _fuse(self, plan: list[tuple], invariant: str) -> list[tuple]:
        """Return ``plan`` with each convolution that alone feeds a LIF node merged into that node.

        The merged entry (kind _FIRING) computes the convolution and the
        neuron step in one kernel (``PreparedConv2d.fire``), so the currents
        are never stored. It carries the LIF node's name, and as its last
        field (convolution, None, once). Where the LIF node's one reader is a
        max pooling of non-overlapping windows (:meth:`_poolable`), the
        pooling joins too: the entry carries the pooling's name and
        (convolution, LIF node, once), and the spikes are pooled row by row
        as the kernel makes them, so on one thread the whole spike map is
        never stored. A convolution is merged only where the LIF node is its
        one reader.

        ``invariant`` says what happens to a time-invariant convolution:
        "each timestep" merges it like the others (frames and ``step``
        compute it at every timestep anyway); "once" merges it with
        ``once`` True, for ``predict`` with T <= 2: its pair function then
        gets the same input twice, computes the layer once and fires the
        neurons twice (``PreparedConv2d.fire``), and its statistics count one
        timestep; "apart" leaves it alone, for ``predict`` with T > 2, where
        its cached output serves every pair, and for ``predict_events``,
        which supplies the first layer's output.

        A Flatten of a feature map whose one reader is a Linear node is
        merged into that node too (kind _SYNAPSES, last field (Flatten,)):
        the linear kernel reads the map in the Flatten's order, so the copy
        is skipped. Runs that record every node keep the plain plan.
        """
        if not self._fast:
            return plan
        graph = self.graph
        readers: dict[str, list[str]] = {}
        for node in graph.nodes:
            for source in graph.sources[node.name]:
                readers.setdefault(source, []).append(node.name)
        merged_into = {}
        for node in graph.nodes:
            if (isinstance(node, Conv2d) and (invariant != "apart" or node.name not in self._invariant)
                    and node.name != graph.output_name):
                following = readers.get(node.name, [])
                if len(following) == 1 and self._nodes[following[0]].stateful:
                    merged_into[following[0]] = node.name
        pooled_by = {}
        for lif in merged_into:
            following = readers.get(lif, [])
            if lif != graph.output_name and len(following) == 1 and self._poolable(self._nodes[following[0]]):
                pooled_by[following[0]] = lif
        flattened = {}
        for node in graph.nodes:
            following = readers.get(node.name, [])
            if (isinstance(node, Flatten) and len(graph.input_shapes(node)[0]) == 3 and node.name != graph.output_name
                    and len(following) == 1 and isinstance(self._nodes[following[0]], Linear)):
                flattened[following[0]] = node.name
        fused = []
        for entry in plan:
            name = entry[0]
            if name in merged_into.values() or name in pooled_by.values() or name in flattened.values():
                continue
            if name in flattened:
                flatten = flattened[name]
                function, pair = self._flat_linear_functions(self._nodes[name], graph.input_shapes(self._nodes[flatten])[0][0])
                fused.append((name, self._SYNAPSES, tuple(graph.sources[flatten]), function, pair, entry[5], (flatten,)))
                continue
            if name in merged_into or name in pooled_by:
                lif = pooled_by.get(name, name)
                conv = merged_into[lif]
                pool = self._nodes[name] if name in pooled_by else None
                function, pair = self._firing_functions(self._nodes[conv], self._nodes[lif], pool)
                once = invariant == "once" and conv in self._invariant
                merged = (conv, None if pool is None else lif, once)
                fused.append((name, self._FIRING, tuple(graph.sources[conv]), function, pair, False, merged))
                continue
            fused.append(entry)
        return fused

    def _flat_linear_functions(self, linear: Linear, channels: int) -> tuple[Callable, Callable]:
        """Return the one- and two-timestep functions of a Linear node that reads a channels-last map directly.

        They map the map of ``channels`` channels (the input of the Flatten
        node merged away) to what the Linear node's own functions return.
        """
        layer = self._executors[linear.name].layer
        outs = (layer.out, layer.out_next)

        def synapses(x, slot=0):
            return layer(x.reshape(-1), self.threads, out=outs[slot], channels=channels)

        def synapses_pair(x, x_next):
            return layer.pair(x.reshape(-1), x_next.reshape(-1), self.threads, channels)

        return synapses, synapses_pair

    @staticmethod
    def _poolable(node: Node) -> bool:
        """Return whether ``node`` is a max pooling that a convolution's kernel can do row by row.

        That is non-overlapping windows (stride = kernel), no padding and no
        dilation, the usual 2 x 2 pooling of a spiking CNN.
        """
        # TODO: average pooling and overlapping windows still run as their own node.
        return (isinstance(node, MaxPool2d) and tuple(node.stride) == tuple(node.kernel_size)
                and tuple(node.padding) == (0, 0, 0, 0) and tuple(node.dilation) == (1, 1))

    def _firing_functions(self, conv: Conv2d, lif: Node, pool: MaxPool2d | None = None) -> tuple[Callable, Callable]:
        """Return the one- and two-timestep functions of a convolution merged with the LIF node it feeds.

        They map the convolution's input to (output, non-zero inputs, fired)
        and two inputs to (output, next output, non-zero inputs, next, fired,
        next). The output is the spikes, or with ``pool`` the pooled spikes.
        """
        layer = self._executors[conv.name].layer
        name = lif.name
        membrane, spikes = self._membranes[name], self._spike_buffers[name]
        tau, threshold = self._neuron_constants[name]
        fresh = self._fresh
        outputs = spikes
        pooling = (None, None)
        pooling_pair = None
        if pool is not None:
            kernel_h, kernel_w = pool.kernel_size
            outputs = tuple(np.empty(_channels_last(self.graph.shapes[pool.name]), np.float32) for _ in range(2))
            rows = tuple(np.empty((kernel_h, *membrane.shape[1:]), np.float32) for _ in range(2))
            pooling = tuple((kernel_h, kernel_w, outputs[slot], outputs[slot], rows[slot], rows[slot]) for slot in range(2))
            pooling_pair = (kernel_h, kernel_w, *outputs, *rows)

        def fire(x, slot=0):
            first = name in fresh
            fresh.discard(name)
            events, _, fired, _ = layer.fire(x, None, (membrane, tau, threshold, spikes[slot], spikes[slot]), first,
                                             self.threads, self._keep, pooling[slot])
            return outputs[slot], events, fired

        def fire_pair(x, x_next):
            first = name in fresh
            fresh.discard(name)
            events, events_next, fired, fired_next = layer.fire(
                x, x_next, (membrane, tau, threshold, spikes[0], spikes[1]), first, self.threads, self._keep,
                pooling_pair,
            )
            return outputs[0], outputs[1], events, events_next, fired, fired_next

        # For reverb_edge.program, which calls the kernels with these buffers itself.
        fire.pooling, fire_pair.pooling = pooling[0], pooling_pair
        return fire, fire_pair

    def _kind(self, node: Node) -> int:
        if node.stateful:
            return self._NEURON
        return self._SYNAPSES if isinstance(node, (Conv2d, Linear)) else self._OTHER

    def _node_function(self, node: Node) -> Callable:
        """Return the function that computes ``node`` in this engine's backend.

        A neuron node maps its input current to (spikes, number fired), a
        synaptic node its input to (output, non-zero inputs), any other node
        its inputs to its output.
        """
        name = node.name
        if not node.stateful:
            if self._fast or not isinstance(node, (Conv2d, Linear)):
                return self._executors[name]
            executor = self._executors[name]
            return lambda x, slot=0: (executor(x), int(np.count_nonzero(x)))

        membrane, spikes = self._membranes[name], self._spike_buffers[name]
        if not self._fast:
            return lambda current, slot=0: self._kernels.lif_step(current, membrane, node.tau, node.threshold, spikes[slot])

        tau, threshold = self._neuron_constants[name]
        flat_membrane, flat_spikes = membrane.reshape(-1), tuple(buffer.reshape(-1) for buffer in spikes)
        fresh = self._fresh

        def step(current, slot=0):
            if name in fresh:
                fresh.discard(name)
                return spikes[slot], _lif_first_step_kernel(current.reshape(-1), flat_membrane, threshold, flat_spikes[slot])
            return spikes[slot], _lif_step_kernel(current.reshape(-1), flat_membrane, tau, threshold, flat_spikes[slot])

        def step_pair(current, current_next):
            fresh_tag = ()
            if name in fresh:
                fresh.discard(name)
                fresh_tag = (0,)
            fired, fired_next = _lif_pair_kernel(current.reshape(-1), current_next.reshape(-1), flat_membrane, tau,
                                                 threshold, *flat_spikes, fresh_tag, self._keep)
            return spikes[0], spikes[1], fired, fired_next

        step.pair = step_pair
        return step

    def _run_block(
        self, xs: tuple[np.ndarray, ...], cache: dict[str, np.ndarray] | None = None,
        record: dict[str, list] | None = None, supplied: dict[str, tuple[np.ndarray, ...]] | None = None,
    ) -> tuple[np.ndarray, ...]:
        """Run one or two consecutive timesteps on the inputs ``xs`` and return their readouts.

        The block goes node by node: a node computes both timesteps before
        the next node starts. That is the same arithmetic as timestep by
        timestep, because a neuron's state depends only on its own earlier
        timesteps, but a convolution with a ``pair`` function computes both
        timesteps in one pass (see ``PreparedConv2d.pair``). Timestep k uses
        the node's buffers of slot k. ``cache`` contains the outputs of
        time-invariant nodes, computed once; ``supplied`` fixes some nodes'
        outputs per timestep; ``record`` collects every output.
        """
        n = len(xs)
        values: dict[str, tuple[np.ndarray, ...]] = {"input": xs}
        stats_by_name = self.stats
        neuron_kind, firing_kind, synapses_kind = self._NEURON, self._FIRING, self._SYNAPSES
        if record is not None:
            plan = self._plan
        elif supplied is not None:
            plan = self._supplied_plan
        elif cache is not None:
            plan = self._fused_plan
        else:
            plan = self._stream_plan
        for name, kind, sources, function, pair, invariant, merged in plan:
            if supplied is not None and name in supplied:
                values[name] = supplied[name]
                continue
            if cache is not None and name in cache:
                values[name] = (cache[name],) * n
                continue

            # A time-invariant node has the same input at every timestep: compute it once.
            once = cache is not None and invariant
            steps = 1 if once else n
            stats = stats_by_name[name]
            stats._timesteps += steps
            if kind == neuron_kind:
                current = values[sources[0]]
                if steps == 2 and pair is not None:
                    spikes, spikes_next, fired, fired_next = pair(current[0], current[1])
                    outputs = [spikes, spikes_next]
                    stats._spikes += int(fired) + int(fired_next)
                else:
                    outputs = []
                    for slot in range(steps):
                        spikes, fired = function(current[slot], slot)
                        stats._spikes += int(fired)
                        outputs.append(spikes)
            elif kind == firing_kind:
                x_in = values[sources[0]]
                conv, lif, conv_once = merged
                synapses = stats_by_name[conv]
                synaptic_steps = 1 if conv_once else steps  # a time-invariant convolution runs once
                synapses._timesteps += synaptic_steps
                synapses._inputs += x_in[0].size * synaptic_steps
                neurons = stats
                if lif is not None:  # a pooling follows the neurons
                    neurons = stats_by_name[lif]
                    neurons._timesteps += steps
                if steps == 2:
                    spikes, spikes_next, events, events_next, fired, fired_next = pair(x_in[0], x_in[1])
                    outputs = [spikes, spikes_next]
                    synapses._input_events += events if conv_once else events + events_next
                    neurons._spikes += fired + fired_next
                else:
                    spikes, events, fired = function(x_in[0])
                    outputs = [spikes]
                    synapses._input_events += events
                    neurons._spikes += fired
            elif kind == synapses_kind:
                x_in = values[sources[0]]
                if merged is not None:  # a Flatten merged away
                    stats_by_name[merged[0]]._timesteps += steps
                if steps == 2 and pair is not None:
                    out, out_next, events, events_next = pair(x_in[0], x_in[1])
                    outputs = [out, out_next]
                    stats._input_events += events + events_next
                else:
                    outputs = []
                    for slot in range(steps):
                        out, events = function(x_in[slot], slot)
                        outputs.append(out)
                        stats._input_events += events
                stats._inputs += x_in[0].size * steps
            elif steps == 2 and pair is not None:
                outputs = pair(values[sources[0]][0], values[sources[0]][1])
            else:
                inputs = [values[source] for source in sources]
                outputs = [function(*[x_in[slot] for x_in in inputs], slot=slot) for slot in range(steps)]

            if once:
                # No copy: a cached node does not run again while the cache is in use, so nothing
                # overwrites its output buffer.
                cache[name] = outputs[0]
                outputs = [outputs[0]] * n
            values[name] = tuple(outputs)
            if record is not None:
                record.setdefault(name, []).extend(self._public(output) for output in outputs)
        return values[self._output_name]

    def _run_timesteps(self, inputs, cache=None, supplied=None) -> np.ndarray:
        """Run the timesteps of ``inputs`` (a sequence of inputs), two at a time; return the mean readout.

        ``supplied``, if set, maps a node name to a function of the timestep
        index and the time slot that returns that node's output. The engine
        is reset at the end, so the last block need not store its membrane
        potentials.
        """
        total = None
        count = len(inputs)
        try:
            for start in range(0, count, 2):
                block = tuple(inputs[start:start + 2])
                fixed = None
                if supplied is not None:
                    fixed = {name: tuple(f(start + slot, slot) for slot in range(len(block))) for name, f in supplied.items()}
                self._keep = start + 2 < count
                outputs = self._run_block(block, cache, supplied=fixed)
                if total is None:
                    # A new array: the outputs live in buffers that the next block overwrites.
                    total = outputs[0] + outputs[1] if len(outputs) == 2 else outputs[0].copy()
                else:
                    for out in outputs:
                        total += out
        finally:
            self._keep = True
            self.reset()
        total /= np.float32(count)
        return self._finite_scores(self._public(total) if total.ndim == 3 else total)

    def _exclusive(self) -> "_Exclusive":
        """Raise instead of letting two threads mix their membrane potentials in one engine."""
        return _Exclusive(self)

    def _finite_scores(self, scores: np.ndarray) -> np.ndarray:
        if not np.isfinite(scores).all():
            raise InputError(
                "the class scores are not finite: the input is too large for float32 arithmetic; "
                "normalise it as the model's input spec says (engine.preprocess does)"
            )
        return scores

    def step(self, x: np.ndarray) -> np.ndarray:
        """Run one timestep on input ``x`` (C, H, W), keeping the membrane state; return the readout."""
        x = self._internal(self._check_input(x))
        with self._exclusive():
            return self._finite_scores(self._public(self._run_block((x,))[0]))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Reset, run T timesteps on ``x`` (direct encoding) and return the mean readout (class scores).

        The engine is left reset, like every ``predict`` method: a following
        :meth:`step` starts from zero membrane potentials.

        Nodes upstream of every neuron see the same input at each timestep, so
        they run once and their output is reused. Where it can, the engine
        runs the whole call as one compiled function (see
        :mod:`reverb_edge.program`), built and cached by the first call.
        """
        x = self._check_input(x)
        with self._exclusive():
            scores = self._run_program(self._program_of("predict"), x)
            if scores is not None:
                return scores
            x = self._internal(x)
            self.reset()
            return self._run_timesteps((x,) * self.timesteps, cache={})

    def _program_of(self, method: str) -> Program | None:
        """Return the compiled ``predict`` or ``predict_frames`` of this engine, building it at the first call.

        None where there is none: programs run on one thread, for the
        networks that :func:`reverb_edge.program.build_program` covers.
        """
        if self.threads != 1:
            return None
        if self._programs.get(method, _UNBUILT) is _UNBUILT:
            program = build_program(self, MAX_INPUT_MAGNITUDE, frames=method == "predict_frames") if self._use_programs else None
            self._programs[method] = program
            if program is not None:
                logger.debug("%s runs %s", method, program.path)
        return self._programs[method]

    def _run_program(self, program: Program | None, x: np.ndarray,
                     events: np.ndarray | None = None) -> np.ndarray | None:
        """Run ``program`` on ``x`` (or ``events``) and return the scores, or None where the plan must run the input."""
        if program is None:
            return None
        largest, scores, status = program(x, self._stat_counts, events)
        if status == FALLBACK:
            return None
        self.reset()
        if status == NOT_FINITE:
            self._finite_scores(scores)  # raises
        return scores

    def predict_frames(self, frames: np.ndarray) -> np.ndarray:
        """Reset, run one timestep per frame of ``frames`` (T, C, H, W), return the mean readout.

        This is the path for inputs that change over time, such as binned DVS
        events; any number of frames is accepted. Float32 frames in one
        C-contiguous array run as one compiled function where the network
        allows it (see :mod:`reverb_edge.program`).
        """
        frames = np.asarray(frames)
        if frames.ndim != len(self.input_spec.shape) + 1 or len(frames) == 0:
            raise InputError(
                f"frames have shape {frames.shape}, expected (T, {', '.join(map(str, self.input_spec.shape))}) with T >= 1"
            )
        if frames.dtype == np.float32 and frames.flags.c_contiguous and frames.shape[1:] == self.input_spec.shape:
            with self._exclusive():
                scores = self._run_program(self._program_of("predict_frames"), frames)
                if scores is not None:
                    return scores
        checked = [self._internal(self._check_input(frame)) for frame in frames]
        with self._exclusive():
            self.reset()
            return self._run_timesteps(checked)

    def _run_events_program(self, events) -> np.ndarray | None:
        """Bin and classify ``events`` in the ``predict_frames`` program; None where they take the checked path."""
        from .events.types import EVENT_DTYPE

        if not (isinstance(events, np.ndarray) and events.dtype == EVENT_DTYPE and events.ndim == 1
                and events.flags.c_contiguous):
            return None
        with self._exclusive():
            program = self._program_of("predict_frames")
            if program is None:
                return None
            if self._no_frames is None:
                self._no_frames = np.zeros((0, *self.input_spec.shape), np.float32)
            return self._run_program(program, self._no_frames, events)

    def events_to_frames(self, events: np.ndarray) -> np.ndarray:
        """Bin one window of events into the model's input frames (T, C, H, W), float32."""
        from .events.frames import to_frames

        encoding = self.input_spec.events
        if encoding is None:
            from .events.online import IMAGE_MODEL_MESSAGE

            raise InputError(IMAGE_MODEL_MESSAGE)
        return to_frames(
            events, encoding.sensor_size, n_time_bins=encoding.n_time_bins,
            polarity_channels=encoding.polarity_channels, dtype=np.float32,
        )

    def _event_driven_node(self) -> Conv2d | None:
        """Return the binary convolution that alone reads the input, which events can feed directly."""
        first = self.graph.nodes[0]
        readers = [node for node in self.graph.nodes if "input" in self.graph.sources[node.name]]
        if readers == [first] and isinstance(first, Conv2d) and first.weight_format == "binary":
            return first
        return None

    def predict_events(self, events: np.ndarray, event_driven: bool | None = None) -> np.ndarray:
        """Classify one window of events (a whole recording, or a slice of a stream).

        By default the events are binned into frames (:meth:`events_to_frames`)
        and classified with :meth:`predict_frames`. Where the network has a
        compiled ``predict_frames`` (see :mod:`reverb_edge.program`), a
        C-contiguous EVENT_DTYPE array goes to it whole, and it bins the
        events itself. Any input that ``to_frames`` would reject goes back
        to that checked path, which raises. With ``event_driven``,
        each timestep's events scatter their ±1 kernels straight into the
        first layer instead, and no frame is built. The model must let a
        binary convolution alone read the input. Both give the same result.
        The frame path is the default because it was faster on real N-MNIST
        recordings (about 640 events per time bin on 34 x 34 x 2): binning
        merges the events at one pixel, and the first layer then runs two
        timesteps per pass, merged with its neurons. The scatter path costs
        9 x O additions per event, so it pays off only for sparse bins.
        """
        if self.input_spec.events is None:
            from .events.online import IMAGE_MODEL_MESSAGE

            raise InputError(IMAGE_MODEL_MESSAGE)
        if not event_driven:
            scores = self._run_events_program(events)
            if scores is not None:
                return scores
            return self.predict_frames(self.events_to_frames(events))
        node = self._event_driven_node()
        if node is None:
            raise InputError(
                "this model cannot take events directly: its input must feed a single binary convolution"
            )

        from .events.frames import check_events, time_bin_ranges

        encoding = self.input_spec.events
        check_events("predict_events", events, encoding.sensor_size)
        lo, hi = time_bin_ranges(events, encoding.n_time_bins)
        placeholder = self._internal(np.zeros(self.input_spec.shape, np.float32))
        if self._fast:
            from .kernels.events import event_coordinates, events_accumulator_shape, scatter_events

            layer = self._executors[node.name].layer
            channel, y, x = event_coordinates("predict_events", events, self.input_spec.shape)
            accumulator = np.empty(events_accumulator_shape(layer), np.float32)
            currents = (np.empty_like(layer.out), np.empty_like(layer.out))  # one per time slot
        else:
            weight = self.model.tensors[f"{node.name}.weight"]
            scale = self.model.tensors[f"{node.name}.scale"]
            bias = self.model.tensors[f"{node.name}.bias"]
        def first_layer(k: int, slot: int) -> np.ndarray:
            """Return the first layer's output at timestep k, from that time bin's events."""
            stats = self.stats[node.name]
            stats._timesteps += 1
            stats._inputs += placeholder.size
            stats._input_events += int(hi[k] - lo[k])
            if self._fast:
                window = slice(lo[k], hi[k])
                return scatter_events(layer, channel[window], y[window], x[window], accumulator, currents[slot])
            return self._kernels.binary_conv2d_events(
                events[lo[k]:hi[k]], self.input_spec.shape, weight, scale, bias,
                stride=node.stride, padding=node.padding, dilation=node.dilation, groups=node.groups,
            )

        with self._exclusive():
            self.reset()
            return self._run_timesteps((placeholder,) * encoding.n_time_bins, supplied={node.name: first_layer})

    def trace(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Run T timesteps from reset like :meth:`predict` and return every node's outputs.

        The result maps node name -> array (T, *node shape), for example the
        spikes of each LIF node; it is meant for debugging and parity checks.
        """
        x = self._internal(self._check_input(x))
        with self._exclusive():
            self.reset()
            record: dict[str, list] = {}
            for _ in range(self.timesteps):
                self._run_block((x,), record=record)
            return {name: np.stack(outputs) for name, outputs in record.items()}

    def predict_batch(self, xs: Iterable[np.ndarray] | np.ndarray, progress: bool = False) -> np.ndarray:
        """Return class scores (N, classes) for a batch of inputs (N, C, H, W), one sample at a time."""
        if isinstance(xs, np.ndarray):
            if xs.ndim != len(self.input_spec.shape) + 1:
                raise InputError(
                    f"batch has shape {xs.shape}, expected (N, {', '.join(map(str, self.input_spec.shape))})"
                )
            total = len(xs)
        else:
            xs = list(xs)
            total = len(xs)
        classes = self.graph.shapes[self.graph.output_name][0]
        scores = np.empty((total, classes), dtype=np.float32)
        for i, x in enumerate(tqdm(xs, total=total, disable=not progress, unit="sample", desc="predict")):
            scores[i] = self.predict(x)
        return scores

    def layer_stats(self) -> list[dict]:
        """Return the activity statistics of every node as plain dictionaries."""
        return [stats.to_dict() for stats in self.stats.values()]
