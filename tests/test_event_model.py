"""DVS models: event encoding in the model file, engine vs PyTorch on real N-MNIST recordings."""

import json

import numpy as np
import pytest

from conftest import data_root

torch = pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402

from reverb_edge import Engine, InputError  # noqa: E402
from reverb_edge.cli import main  # noqa: E402
from reverb_edge.converters import export_model  # noqa: E402
from reverb_edge.converters.model import ConvNetConfig, build_convnet, save_checkpoint  # noqa: E402
from reverb_edge.converters.parity import torch_scores  # noqa: E402
from reverb_edge.events import make_events  # noqa: E402

# Engine and PyTorch sum float32 values in different orders; see test_reparam.py.
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def nmnist_dir():
    folder = data_root() / "nmnist"
    if not (folder / "index.csv").is_file():
        pytest.skip(f"real N-MNIST recordings not found in {folder}; set REVERB_DATA to the data folder")
    return folder


@pytest.fixture(scope="module")
def dvs_model(tmp_path_factory):
    torch.manual_seed(7)
    config = ConvNetConfig(channels=(8, 8, 16), in_channels=2, image_size=34, timesteps=4, mean=0.0, std=1.0,
                           event_window_us=300_000)
    model = build_convnet(config)
    model.train()
    with torch.no_grad():
        model(torch.poisson(torch.full((16, 4, 2, 34, 34), 0.3)))
    model.eval()
    folder = tmp_path_factory.mktemp("dvs")
    save_checkpoint(folder / "dvs.pt", model, config)
    return model, export_model(model, folder / "dvs.reverb"), folder / "dvs.pt"


def test_event_encoding_stored_in_file(dvs_model):
    _, path, _ = dvs_model
    encoding = Engine.load(path).input_spec.events
    assert encoding.sensor_size == (34, 34, 2)
    assert encoding.n_time_bins == 4
    assert encoding.window_us == 300_000


def test_predict_events_matches_torch(dvs_model, rng):
    model, path, _ = dvs_model
    engine = Engine.load(path)
    count = 2_000
    events = make_events(rng.integers(0, 34, count), rng.integers(0, 34, count),
                         np.sort(rng.integers(0, 300_000, count)), rng.integers(0, 2, count))
    frames = engine.events_to_frames(events)
    assert frames.shape == (4, 2, 34, 34)
    assert frames.sum() == count
    expected = torch_scores(model, frames[None])[0]
    np.testing.assert_allclose(engine.predict_events(events), expected, rtol=TOLERANCE, atol=TOLERANCE)


def test_image_model_rejects_events(tmp_path, rng):
    model = build_convnet(ConvNetConfig(channels=(4, 4, 8)))
    engine = Engine.load(export_model(model, tmp_path / "image.reverb"))
    with pytest.raises(InputError, match="takes images, not events"):
        engine.predict_events(make_events([1], [1], [0], [1]))


def test_eval_nmnist_real_recordings_with_torch(dvs_model, nmnist_dir):
    _, path, checkpoint = dvs_model
    result = CliRunner().invoke(main, ["eval", str(path), "--dataset", "nmnist", "--data", str(nmnist_dir),
                                       "--limit", "30", "--torch", str(checkpoint), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["n"] == 30
    assert summary["agreement_with_torch"] == 1.0
    assert summary["max_abs_logit_difference"] < 1e-3


@pytest.mark.parametrize("backend", ["numba", "reference"])
def test_event_driven_first_layer_equals_frame_path(dvs_model, rng, backend):
    _, path, _ = dvs_model
    engine = Engine.load(path, backend=backend)
    count = 3_000
    events = make_events(rng.integers(0, 34, count), rng.integers(0, 34, count),
                         np.sort(rng.integers(0, 300_000, count)), rng.integers(0, 2, count))
    from_events = engine.predict_events(events, event_driven=True)
    from_frames = engine.predict_events(events, event_driven=False)
    np.testing.assert_allclose(from_events, from_frames, rtol=TOLERANCE, atol=TOLERANCE)


def test_event_driven_on_real_recordings(dvs_model, nmnist_dir):
    from reverb_edge.events.nmnist import load_nmnist

    _, path, _ = dvs_model
    engine = Engine.load(path)
    recordings, _ = load_nmnist(nmnist_dir, "test", limit=10)
    for events in recordings:
        # Event counts times ±1.0 sum exactly in float32, so both paths give the same bits.
        np.testing.assert_array_equal(
            engine.predict_events(events, event_driven=True), engine.predict_events(events, event_driven=False)
        )
    # The scatter path counts every event as an input of the first layer. The default frame path
    # counts the non-zero pixels of the frames, where the events at one pixel and time bin merge.
    first = engine.graph.nodes[0].name
    engine.reset_stats()
    for events in recordings:
        engine.predict_events(events, event_driven=True)
    assert engine.stats[first].input_events == sum(len(e) for e in recordings)
    assert engine.stats[first].timesteps == engine.timesteps * len(recordings)
    engine.reset_stats()
    for events in recordings:
        engine.predict_events(events)
    assert engine.stats[first].input_events == sum(np.count_nonzero(engine.events_to_frames(e)) for e in recordings)
    assert engine.stats[first].timesteps == engine.timesteps * len(recordings)


def test_event_driven_rejected_for_float_first_layer(tmp_path, rng):
    config = ConvNetConfig(channels=(4, 4, 8), in_channels=2, image_size=34, timesteps=2, mean=0.0, std=1.0,
                           event_window_us=100_000, full_precision_first=True)
    engine = Engine.load(export_model(build_convnet(config), tmp_path / "float_first.reverb"))
    events = make_events([1, 2], [3, 4], [0, 10], [0, 1])
    with pytest.raises(InputError, match="cannot take events directly"):
        engine.predict_events(events, event_driven=True)
    assert engine.predict_events(events).shape == (10,)
