"""Model files: round trips and clean, specific errors for corrupt or hostile files."""

import json
import struct
import tracemalloc

import numpy as np
import pytest

from reverb_edge.container import read_container, write_container
from reverb_edge.errors import ModelFileError
from reverb_edge.modelfile import CHECKSUM_KEY, FORMAT_NAME, FORMAT_VERSION, data_checksum, load_model, save_model

from helpers import every_node_graph, mnist_like_graph, random_tensors


@pytest.fixture
def model_path(tmp_path, rng):
    graph = every_node_graph()
    path = tmp_path / "model.reverb"
    save_model(path, graph, random_tensors(graph, rng))
    return path


def _rewrite(path, tensors=None, metadata=None):
    """Rewrite a valid file with changed tensors or metadata, bypassing the model-level checks.

    Changed tensors get a new checksum, as a faulty exporter would write, so the loader's other checks meet them.
    """
    with read_container(path, use_mmap=False) as container:
        new_tensors = {name: np.array(array) for name, array in container.tensors.items()}
        new_metadata = dict(container.metadata)
    new_tensors.update(tensors or {})
    if tensors:
        new_metadata[CHECKSUM_KEY] = data_checksum(new_tensors)
    new_metadata.update(metadata or {})
    write_container(path, new_tensors, new_metadata)


def test_model_round_trip(tmp_path, rng):
    graph = every_node_graph()
    tensors = random_tensors(graph, rng)
    path = save_model(tmp_path / "m.reverb", graph, tensors)
    model = load_model(path)
    assert model.graph == graph
    assert set(model.tensors) == set(tensors)
    for name, array in tensors.items():
        np.testing.assert_array_equal(model.tensors[name], array)


def test_model_loads_without_mmap(model_path):
    model = load_model(model_path, use_mmap=False)
    assert model.graph == every_node_graph()


def test_model_tensors_read_only(model_path):
    model = load_model(model_path)
    weight = model.tensors["hidden.weight"]
    with pytest.raises(ValueError):
        weight[0, 0] = 0


def test_model_metadata_format(model_path):
    with read_container(model_path) as container:
        assert container.metadata["format"] == FORMAT_NAME
        assert container.metadata["format_version"] == FORMAT_VERSION
        assert json.loads(container.metadata["graph"])["timesteps"] == 3


@pytest.mark.parametrize("fraction", [0.0, 0.001, 0.3, 0.6, 0.999])
def test_model_truncated_file_rejected(model_path, fraction):
    data = model_path.read_bytes()
    model_path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(ModelFileError, match=str(model_path.name)):
        load_model(model_path)


def test_model_wrong_format_rejected(model_path):
    _rewrite(model_path, metadata={"format": "pytorch"})
    with pytest.raises(ModelFileError, match="not a reverb-edge model"):
        load_model(model_path)


def test_model_missing_format_rejected(tmp_path):
    path = tmp_path / "plain.safetensors"
    write_container(path, {"w": np.zeros(3, np.float32)}, {})
    with pytest.raises(ModelFileError, match="not a reverb-edge model"):
        load_model(path)


def test_model_future_version_rejected(model_path):
    _rewrite(model_path, metadata={"format_version": "99"})
    with pytest.raises(ModelFileError, match="version '99' is not supported"):
        load_model(model_path)


def test_model_invalid_graph_rejected(model_path):
    _rewrite(model_path, metadata={"graph": '{"nodes": 3}'})
    with pytest.raises(ModelFileError, match="invalid graph"):
        load_model(model_path)


def test_model_absurd_shape_in_graph_rejected(model_path):
    with read_container(model_path) as container:
        graph = json.loads(container.metadata["graph"])
    graph["nodes"][-1]["out_features"] = 2**40
    _rewrite(model_path, metadata={"graph": json.dumps(graph)})
    tracemalloc.start()
    with pytest.raises(ModelFileError, match="out_features must be in"):
        load_model(model_path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 16 * 2**20


def test_model_huge_channel_count_rejected_without_allocation(model_path):
    with read_container(model_path) as container:
        graph = json.loads(container.metadata["graph"])
    graph["nodes"][0]["out_channels"] = 2**20
    graph["nodes"][2]["in_channels"] = 2**20
    _rewrite(model_path, metadata={"graph": json.dumps(graph)})
    tracemalloc.start()
    with pytest.raises(ModelFileError):
        load_model(model_path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 64 * 2**20


def test_model_offsets_past_end_rejected(model_path):
    data = bytearray(model_path.read_bytes())
    (header_length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_length])
    header["hidden.weight"]["data_offsets"][1] += 10**6
    encoded = json.dumps(header).encode()
    encoded += b" " * ((8 - (8 + len(encoded)) % 8) % 8)
    model_path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + bytes(data[8 + header_length :]))
    with pytest.raises(ModelFileError):
        load_model(model_path)


def test_model_nan_constant_rejected(model_path):
    with read_container(model_path, use_mmap=False) as container:
        scale = np.array(container.tensors["grouped.scale"])
    scale[4] = np.nan
    _rewrite(model_path, tensors={"grouped.scale": scale})
    with pytest.raises(ModelFileError, match="'grouped.scale' contains NaN or infinity \\(first at flat index 4\\)"):
        load_model(model_path)


def test_model_wrong_tensor_shape_rejected(model_path):
    _rewrite(model_path, tensors={"hidden.bias": np.zeros(7, np.float32)})
    with pytest.raises(ModelFileError, match="'hidden.bias' is float32 \\(7,\\), but the graph needs float32 \\(33,\\)"):
        load_model(model_path)


def test_model_missing_tensor_rejected(tmp_path, rng):
    graph = mnist_like_graph()
    tensors = random_tensors(graph, rng)
    del tensors["fc.scale"]
    path = tmp_path / "m.reverb"
    write_container(path, tensors, {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "graph": graph.to_json()})
    with pytest.raises(ModelFileError, match="\\['fc.scale'\\] are missing"):
        load_model(path)


def test_model_extra_tensor_rejected(model_path):
    _rewrite(model_path, tensors={"stray": np.zeros(2, np.float32)})
    with pytest.raises(ModelFileError, match="\\['stray'\\] are not used"):
        load_model(model_path)


def test_model_padding_bits_set_rejected(model_path):
    with read_container(model_path, use_mmap=False) as container:
        weight = np.array(container.tensors["hidden.weight"])
    # hidden has 81 inputs: bits 81..127 of each row's last word are padding.
    weight[0, -1] |= np.uint64(1) << np.uint64(60)
    _rewrite(model_path, tensors={"hidden.weight": weight})
    with pytest.raises(ModelFileError, match="padding bits set past bit 81"):
        load_model(model_path)


def test_model_save_rejects_inconsistent_tensors(tmp_path, rng):
    graph = mnist_like_graph()
    tensors = random_tensors(graph, rng)
    tensors["conv1.bias"] = np.zeros(3, np.float32)
    path = tmp_path / "m.reverb"
    with pytest.raises(ModelFileError, match="conv1.bias"):
        save_model(path, graph, tensors)
    assert not path.exists()


def test_model_missing_file_rejected(tmp_path):
    with pytest.raises(ModelFileError, match="nothing.reverb"):
        load_model(tmp_path / "nothing.reverb")


def test_model_png_renamed_rejected(tmp_path):
    from PIL import Image

    path = tmp_path / "digit.png"
    Image.new("L", (28, 28)).save(path)
    renamed = path.rename(tmp_path / "digit.reverb")
    with pytest.raises(ModelFileError):
        load_model(renamed)


@pytest.mark.parametrize("offset", [-1, -2, -40])
def test_model_flipped_data_bit_rejected(model_path, offset):
    """A flipped bit in the tensor data, which every other check passes, fails the checksum with the fix."""
    raw = bytearray(model_path.read_bytes())
    raw[offset] ^= 0x10
    model_path.write_bytes(bytes(raw))
    with pytest.raises(ModelFileError, match="CRC-32 .* but the header records .*copy it again"):
        load_model(model_path)


def test_model_without_checksum_loads(model_path):
    """Files from before the checksum, or from other writers, load without one."""
    with read_container(model_path, use_mmap=False) as container:
        tensors = {name: np.array(array) for name, array in container.tensors.items()}
        metadata = {key: value for key, value in container.metadata.items() if key != CHECKSUM_KEY}
    write_container(model_path, tensors, metadata)
    assert load_model(model_path).graph == every_node_graph()


def test_model_malformed_checksum_rejected(model_path):
    _rewrite(model_path, metadata={CHECKSUM_KEY: "xyz"})
    with pytest.raises(ModelFileError, match="expected 8 hex digits"):
        load_model(model_path)
