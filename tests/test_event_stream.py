"""Streaming classification: chunk sizes do not change the windows or their predictions."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from reverb_edge import Engine, InputError  # noqa: E402
from reverb_edge.converters import export_model  # noqa: E402
from reverb_edge.converters.model import ConvNetConfig, build_convnet  # noqa: E402
from reverb_edge.events import make_events  # noqa: E402
from reverb_edge.events.online import StreamClassifier  # noqa: E402


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    torch.manual_seed(8)
    config = ConvNetConfig(channels=(4, 4, 8), in_channels=2, image_size=34, timesteps=3, mean=0.0, std=1.0,
                           event_window_us=100_000)
    model = build_convnet(config)
    model.train()
    with torch.no_grad():
        model(torch.poisson(torch.full((8, 3, 2, 34, 34), 0.3)))
    model.eval()
    return Engine.load(export_model(model, tmp_path_factory.mktemp("stream") / "m.reverb"))


def _events(rng, count=3_000, duration=450_000):
    return make_events(rng.integers(0, 34, count), rng.integers(0, 34, count),
                       np.sort(rng.integers(0, duration, count)), rng.integers(0, 2, count))


def _run(engine, events, chunk, **options):
    classifier = StreamClassifier(engine, **options)
    predictions = []
    for start in range(0, len(events), chunk):
        predictions += classifier.feed(events[start:start + chunk])
    return predictions + classifier.flush()


@pytest.mark.parametrize("chunk", [1, 7, 256, 10_000])
def test_stream_chunk_size_invariant(engine, rng, chunk):
    events = _events(rng)
    reference = _run(engine, events, len(events))
    predictions = _run(engine, events, chunk)
    assert [(p.start_us, p.events, p.label) for p in predictions] == [(p.start_us, p.events, p.label) for p in reference]
    for got, expected in zip(predictions, reference):
        np.testing.assert_array_equal(got.scores, expected.scores)


def test_stream_windows_equal_predict_events(engine, rng):
    events = _events(rng)
    predictions = _run(engine, events, 500)
    first = int(events["t"][0])
    assert predictions[0].start_us == first
    assert len(predictions) == 5  # windows of 100 ms from the first event cover 450 ms
    assert sum(p.events for p in predictions) == len(events)
    for prediction in predictions:
        window = events[(events["t"] >= prediction.start_us) & (events["t"] < prediction.end_us)]
        np.testing.assert_array_equal(prediction.scores, engine.predict_events(window))


def test_stream_hop_overlaps_windows(engine, rng):
    events = _events(rng)
    predictions = _run(engine, events, 333, window_us=100_000, hop_us=50_000)
    starts = [p.start_us - predictions[0].start_us for p in predictions]
    assert starts[:4] == [0, 50_000, 100_000, 150_000]
    assert sum(p.events for p in predictions) > len(events)


def test_stream_rejects_unsorted_chunks(engine, rng):
    events = _events(rng)
    classifier = StreamClassifier(engine)
    classifier.feed(events[1000:1100])
    with pytest.raises(InputError, match="sorted by timestamp"):
        classifier.feed(events[:100])


def test_stream_empty_chunks(engine):
    classifier = StreamClassifier(engine)
    assert classifier.feed(make_events([], [], [], [])) == []
    assert classifier.flush() == []


def _dvs(*args):
    import json

    from click.testing import CliRunner

    from reverb_edge.cli import main

    result = CliRunner().invoke(main, ["dvs", *map(str, args)])
    payload = json.loads(result.stdout) if "--json" in args and result.exit_code == 0 else None
    return result, payload


def test_dvs_cli_on_real_nmnist_file(engine):
    from conftest import data_root

    recording = data_root() / "nmnist" / "Test" / "7" / "00001.bin"
    if not recording.is_file():
        pytest.skip(f"real N-MNIST recording not found: {recording}; set REVERB_DATA to the data folder")
    result, summary = _dvs(engine.model.path, "--source", recording, "--window", "100", "--json")
    assert result.exit_code == 0, result.output
    assert summary["windows"] == 4
    assert summary["events"] == 3330
    assert sum(p["events"] for p in summary["predictions"]) == 3330
    assert summary["events_per_second"] > 0
    assert summary["latency_ms"]["p90"] > 0


def test_dvs_cli_large_sensor_needs_fit(engine):
    from conftest import data_root

    recording = data_root() / "event-samples" / "prophesee_evt2_gen3_sparklers.raw"
    if not recording.is_file():
        pytest.skip(f"Prophesee sample not found: {recording}; set REVERB_DATA to the data folder")
    result, _ = _dvs(engine.model.path, "--source", recording)
    assert result.exit_code == 1
    assert "640×480" in result.output
    assert "--fit" in result.output
    result, summary = _dvs(engine.model.path, "--source", recording, "--fit", "--window", "20", "--json")
    assert result.exit_code == 0, result.output
    assert summary["windows"] == 5
    assert 0 < summary["events"] <= 521_252


def test_dvs_cli_text_output(engine, tmp_path, rng):
    events = _events(rng)
    path = tmp_path / "stream.npy"
    np.save(path, events)
    result, _ = _dvs(engine.model.path, "--source", path, "--realtime", "--window", "150")
    assert result.exit_code == 0, result.output
    assert "3 windows, 3000 events in" in result.output
    assert "events/s" in result.output
    # --realtime paces the 450 ms recording at its recorded speed.
    assert float(result.output.split(" events in ")[1].split(" s ")[0]) >= 0.4


def test_dvs_cli_missing_camera_package(engine):
    result, _ = _dvs(engine.model.path, "--source", "inivation")
    assert result.exit_code == 1
    assert "pip install dv-processing" in result.output


def test_dvs_cli_missing_source(engine):
    result, _ = _dvs(engine.model.path, "--source", "no-such-file.raw")
    assert result.exit_code == 1
    assert "neither a file nor a camera kind" in result.output


def test_three_events_in_ten_ms_window(engine):
    from reverb_edge.events import to_frames

    events = make_events([1, 3, 5], [2, 4, 6], [100, 350, 600], [1, 0, 1])
    frames = to_frames(events, (34, 34, 2), time_window=10_000)
    assert frames.shape == (1, 2, 34, 34)
    assert frames.dtype == np.float32
    assert frames.sum() == 3
    empty = to_frames(events[:0], (34, 34, 2), time_window=10_000)
    assert empty.shape == (0, 2, 34, 34)
    assert empty.dtype == np.float32

    classifier = StreamClassifier(engine, window_us=10_000)
    assert classifier.feed(events) == []
    (prediction,) = classifier.flush()
    assert prediction.events == 3
    assert (prediction.start_us, prediction.end_us) == (100, 10_100)
    assert prediction.scores.shape == (10,)


def test_stream_long_gap_does_not_stall(engine):
    classifier = StreamClassifier(engine, window_us=100_000, hop_us=10)
    first = classifier.feed(make_events([1], [1], [0], [1]))
    # A jump to Unix-epoch timestamps must skip the empty windows at once, not one hop at a time.
    later = classifier.feed(make_events([2, 3], [2, 3], [1_605_537_493_718_345, 1_605_537_493_900_000], [0, 1]))
    predictions = first + later + classifier.flush()
    assert sum(p.events for p in predictions) >= 3
    assert predictions[0].start_us == 0


def test_stream_rejects_outside_events_without_state_change(engine, rng):
    events = _events(rng)
    classifier = StreamClassifier(engine)
    with pytest.raises(InputError, match="outside the model's 34x34 sensor"):
        classifier.feed(make_events([40], [1], [0], [1]))
    reference = StreamClassifier(engine)
    got = classifier.feed(events) + classifier.flush()
    expected = reference.feed(events) + reference.flush()
    assert [(p.start_us, p.events) for p in got] == [(p.start_us, p.events) for p in expected]


def test_stream_feed_after_flush_rejected(engine, rng):
    events = _events(rng)
    classifier = StreamClassifier(engine)
    classifier.feed(events[:500])
    classifier.flush()
    with pytest.raises(InputError, match="stream has ended"):
        classifier.feed(events[500:])


@pytest.mark.parametrize("window", [0, float("nan"), float("inf"), 10**13])
def test_stream_rejects_bad_window(engine, window):
    with pytest.raises(InputError, match="window_us must be"):
        StreamClassifier(engine, window_us=window)


@pytest.mark.parametrize("value", ["nan", "inf", "0"])
def test_dvs_cli_rejects_bad_window(engine, tmp_path, rng, value):
    path = tmp_path / "stream.npy"
    np.save(path, _events(rng))
    result, _ = _dvs(engine.model.path, "--source", path, "--window", value)
    assert result.exit_code == 2
    assert "--window" in result.output


def test_dvs_cli_rejects_folder_source(engine, tmp_path):
    result, _ = _dvs(engine.model.path, "--source", tmp_path)
    assert result.exit_code == 1
    assert "is a folder" in result.output


def test_dvs_cli_image_model_names_fix(tmp_path, rng):
    path = tmp_path / "stream.npy"
    np.save(path, _events(rng))
    result, _ = _dvs("mnist", "--source", path)
    assert result.exit_code == 1
    assert "'nmnist'" in result.output


def test_dvs_cli_sensor_size_override(engine, tmp_path):
    events = make_events([1, 30], [2, 33], [0, 1_000], [1, 0])
    path = tmp_path / "small.npy"
    np.save(path, events)
    result, _ = _dvs(engine.model.path, "--source", path)
    assert result.exit_code == 1
    assert "--fit" in result.output
    result, summary = _dvs(engine.model.path, "--source", path, "--sensor-size", "34x34", "--json")
    assert result.exit_code == 0, result.output
    assert summary["events"] == 2
