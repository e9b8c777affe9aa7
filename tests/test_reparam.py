"""Re-parameterization: folded constants give the same spikes as PyTorch, and bad layers are rejected."""

import hashlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from reverb_edge import ConversionError, Engine  # noqa: E402
from reverb_edge.converters import LIF, BinaryConv2d, BinaryLinear, ReverbNet, Residual, export_model  # noqa: E402
from reverb_edge.converters.model import ConvNetConfig, build_convnet, save_checkpoint  # noqa: E402
from reverb_edge.converters.parity import torch_scores  # noqa: E402

# Both sides compute in float32 but sum in different orders. Membrane potentials agree to
# about 1e-6 relative, so spikes and logits are compared with this tolerance.
TOLERANCE = 1e-4


def _spec(channels, size, classes):
    return {"shape": [channels, size, size], "mean": [0.0] * channels, "std": [1.0] * channels,
            "invert": False, "labels": [str(i) for i in range(classes)]}


def _torch_spikes(model, x):
    """Return {module path: LIF output (T, B, ...)} from forward hooks."""
    captured = {}

    def hook(name):
        def record(module, inputs, output):
            captured[name] = output.detach().view(model.timesteps, -1, *output.shape[1:]).numpy()
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if isinstance(m, LIF)]
    with torch.no_grad():
        logits = model(torch.from_numpy(x)).numpy()
    for handle in handles:
        handle.remove()
    return captured, logits


def _compare(model, tmp_path, rng, samples=4):
    model.eval()
    path = export_model(model, tmp_path / "model.reverb")
    engine = Engine.load(path)
    x = rng.normal(size=(samples, *engine.input_spec.shape)).astype(np.float32)
    spikes, logits = _torch_spikes(model, x)
    for i in range(samples):
        trace = engine.trace(x[i])
        for name, torch_spikes in spikes.items():
            np.testing.assert_allclose(trace[name], torch_spikes[:, i], rtol=TOLERANCE, atol=TOLERANCE, err_msg=name)
        np.testing.assert_allclose(engine.predict(x[i]), logits[i], rtol=TOLERANCE, atol=TOLERANCE)
    return engine, spikes


def test_depthwise_bias_batchnorm_negative_gamma(tmp_path, rng):
    torch.manual_seed(0)
    channels = 6
    conv = BinaryConv2d(channels, channels, 3, padding=1, groups=channels, bias=True)
    batchnorm = nn.BatchNorm2d(channels, eps=1e-3)
    with torch.no_grad():
        conv.bias.copy_(torch.tensor([0.3, -0.2, 0.1, 0.0, 0.5, -0.4]))
        conv.alpha.copy_(torch.tensor([0.5, 1.0, 0.7, 0.2, 1.3, 0.9]))
        batchnorm.weight.copy_(torch.tensor([-1.2, 0.8, -0.5, 0.0, 1.5, 0.0]))
        batchnorm.bias.copy_(torch.tensor([0.4, -0.1, 0.9, 0.7, 0.2, -0.3]))
        batchnorm.running_mean.copy_(torch.tensor([0.5, -0.3, 0.2, 1.0, -0.7, 0.1]))
        batchnorm.running_var.copy_(torch.tensor([0.9, 1.5, 0.4, 2.0, 0.6, 1.1]))
    layers = nn.Sequential(conv, batchnorm, LIF(tau=0.25, threshold=0.5), nn.Flatten(), BinaryLinear(channels * 36, 3))
    engine, spikes = _compare(ReverbNet(layers, 3, _spec(channels, 6, 3)), tmp_path, rng)

    fired = spikes["layers.2"] > 0
    assert fired[..., [0, 2], :, :].any(), "negative-gamma channels never fired, so the test proves nothing"
    # gamma = 0 channels see only beta: 0.7 fires at every position and timestep, -0.3 never does.
    assert fired[:, :, 3].all()
    assert not fired[:, :, 5].any()
    scale = engine.model.tensors["layers.0.scale"]
    assert (scale >= 0).all()
    assert scale[3] == 0
    assert scale[5] == 0


def test_amplitude_without_batchnorm(tmp_path, rng):
    torch.manual_seed(1)
    conv = BinaryConv2d(3, 5, 3, padding=1, bias=True)
    with torch.no_grad():
        conv.alpha.copy_(torch.tensor([0.2, -0.3, 0.15, 0.25, 0.0]))
        conv.bias.uniform_(-0.2, 0.6)
    layers = nn.Sequential(conv, LIF(tau=0.5, threshold=0.3), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(5 * 16, 4))
    engine, spikes = _compare(ReverbNet(layers, 4, _spec(3, 8, 4)), tmp_path, rng)
    assert (spikes["layers.1"] > 0).any()
    assert engine.graph.nodes[-1].weight_format == "float32"


def test_full_precision_first_and_last(tmp_path, rng):
    torch.manual_seed(2)
    model = build_convnet(ConvNetConfig(channels=(4, 6, 8), full_precision_first=True, full_precision_last=True, timesteps=3))
    model.train()
    with torch.no_grad():
        model(torch.randn(16, 1, 28, 28))
    engine, _ = _compare(model, tmp_path, rng, samples=2)
    formats = [node.weight_format for node in engine.graph.nodes if hasattr(node, "weight_format")]
    assert formats == ["float32", "binary", "binary", "float32"]


def test_residual_block_with_same_padding(tmp_path, rng):
    torch.manual_seed(3)
    body = nn.Sequential(
        BinaryConv2d(4, 4, 2, padding="same", bias=False), nn.BatchNorm2d(4), LIF(),
    )
    layers = nn.Sequential(
        BinaryConv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), LIF(),
        Residual(body),
        nn.MaxPool2d(2), nn.Flatten(), BinaryLinear(4 * 9, 3),
    )
    model = ReverbNet(layers, 2, _spec(2, 6, 3))
    model.train()
    with torch.no_grad():
        model(torch.randn(8, 2, 6, 6))
    engine, _ = _compare(model, tmp_path, rng)
    types = [node.type_name for node in engine.graph.nodes]
    assert "Add" in types
    even_conv = engine.graph.nodes[2]
    assert even_conv.padding == (0, 1, 0, 1)


def test_zero_weight_counts_as_plus_one(tmp_path, rng):
    conv = BinaryConv2d(1, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.alpha.copy_(torch.tensor([1.0, -1.0]))
    layers = nn.Sequential(conv, LIF(tau=0.0, threshold=0.5), nn.Flatten(), BinaryLinear(2 * 4, 2))
    _compare(ReverbNet(layers, 1, _spec(1, 2, 2)), tmp_path, rng)


@pytest.mark.parametrize(
    "extra, position, fragment",
    [
        (nn.ReLU(), 1, "'layers.1' \\(ReLU\\) cannot run exactly"),
        (nn.MaxPool2d(2, ceil_mode=True), 2, "ceil_mode=True"),
        (nn.AvgPool2d(2, count_include_pad=False), 2, "count_include_pad=False"),
        (nn.BatchNorm2d(4), 2, "does not directly follow a convolution"),
    ],
)
def test_unsupported_layer_rejected(extra, position, fragment, tmp_path):
    layers = [BinaryConv2d(1, 4, 3, padding=1), LIF(), nn.Flatten(), BinaryLinear(4 * 64, 2)]
    layers.insert(position, extra)
    model = ReverbNet(nn.Sequential(*layers), 2, _spec(1, 8, 2))
    with pytest.raises(ConversionError, match=fragment):
        export_model(model, tmp_path / "m.reverb")
    assert not (tmp_path / "m.reverb").exists()


def test_reflect_padding_rejected(tmp_path):
    layers = nn.Sequential(BinaryConv2d(1, 2, 3, padding=1), LIF(), nn.Flatten(), BinaryLinear(2 * 16, 2))
    layers[0].padding_mode = "reflect"
    with pytest.raises(ConversionError, match="padding_mode='reflect'"):
        export_model(ReverbNet(layers, 1, _spec(1, 4, 2)), tmp_path / "m.reverb")


def test_batchnorm_without_running_stats_rejected(tmp_path):
    layers = nn.Sequential(BinaryConv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2, track_running_stats=False), LIF(),
                           nn.Flatten(), BinaryLinear(2 * 16, 2))
    with pytest.raises(ConversionError, match="track_running_stats=False"):
        export_model(ReverbNet(layers, 1, _spec(1, 4, 2)), tmp_path / "m.reverb")


def test_convert_leaves_checkpoint_unchanged(tmp_path):
    from reverb_edge.converters.convert import convert_source

    torch.manual_seed(4)
    config = ConvNetConfig(channels=(4, 4, 8))
    checkpoint = tmp_path / "net.pt"
    save_checkpoint(checkpoint, build_convnet(config), config)
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    convert_source(str(checkpoint), tmp_path / "net.reverb")
    assert hashlib.sha256(checkpoint.read_bytes()).hexdigest() == digest
    assert Engine.load(tmp_path / "net.reverb").timesteps == config.timesteps


def test_torch_scores_match_engine_convnet(tmp_path, rng):
    torch.manual_seed(5)
    model = build_convnet(ConvNetConfig(channels=(8, 8, 16)))
    model.train()
    with torch.no_grad():
        model(torch.randn(32, 1, 28, 28))
    model.eval()
    engine = Engine.load(export_model(model, tmp_path / "m.reverb"))
    x = rng.normal(size=(6, 1, 28, 28)).astype(np.float32)
    np.testing.assert_allclose(engine.predict_batch(x), torch_scores(model, x), rtol=TOLERANCE, atol=TOLERANCE)


def test_frame_sequence_input_matches_engine(tmp_path, rng):
    torch.manual_seed(6)
    model = build_convnet(ConvNetConfig(channels=(4, 6, 8), in_channels=2, image_size=12, timesteps=3, mean=0.0, std=1.0))
    model.train()
    with torch.no_grad():
        model(torch.rand(8, 3, 2, 12, 12))
    model.eval()
    engine = Engine.load(export_model(model, tmp_path / "m.reverb"))
    frames = (rng.random((4, 3, 2, 12, 12)) < 0.2).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(frames)).numpy()
    for i in range(len(frames)):
        np.testing.assert_allclose(engine.predict_frames(frames[i]), expected[i], rtol=TOLERANCE, atol=TOLERANCE)


def test_frame_sequence_wrong_length_rejected():
    model = build_convnet(ConvNetConfig(channels=(4, 4, 4), in_channels=2, image_size=12, timesteps=3, mean=0.0, std=1.0))
    with pytest.raises(ValueError, match="2 frames per sample, but the network runs 3 timesteps"):
        model(torch.rand(1, 2, 2, 12, 12))


def test_subclass_with_own_forward_rejected(tmp_path):
    class ScaledConv(nn.Conv2d):
        def forward(self, x):
            return 2 * super().forward(x)

    layers = nn.Sequential(ScaledConv(1, 2, 3, padding=1), LIF(), nn.Flatten(), BinaryLinear(2 * 16, 2))
    with pytest.raises(ConversionError, match="'layers.0' \\(ScaledConv\\).*not subclasses"):
        export_model(ReverbNet(layers, 1, _spec(1, 4, 2)), tmp_path / "m.reverb")


def test_convert_output_equal_to_source_rejected(tmp_path):
    from reverb_edge.converters.convert import convert_source

    config = ConvNetConfig(channels=(4, 4, 8))
    checkpoint = tmp_path / "net.pt"
    save_checkpoint(checkpoint, build_convnet(config), config)
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    with pytest.raises(ConversionError, match="is the source checkpoint"):
        convert_source(str(checkpoint), checkpoint)
    assert hashlib.sha256(checkpoint.read_bytes()).hexdigest() == digest


@pytest.mark.parametrize(
    "damage, fragment",
    [
        (lambda p: p.pop("arch"), "damaged reverb-edge checkpoint: KeyError"),
        (lambda p: p["arch"].update(bogus=1), "unknown ConvNetConfig fields"),
        (lambda p: p["state_dict"].pop("layers.12.alpha"), "Missing key"),
        (lambda p: p.update(arch=None), "damaged reverb-edge checkpoint"),
    ],
)
def test_damaged_checkpoint_rejected(tmp_path, damage, fragment):
    from reverb_edge.converters.model import load_checkpoint

    config = ConvNetConfig(channels=(4, 4, 8))
    checkpoint = tmp_path / "net.pt"
    save_checkpoint(checkpoint, build_convnet(config), config)
    payload = torch.load(checkpoint, weights_only=True)
    damage(payload)
    torch.save(payload, checkpoint)
    with pytest.raises(ConversionError, match=fragment):
        load_checkpoint(checkpoint)


def test_foreign_file_rejected_as_checkpoint(tmp_path):
    from reverb_edge.converters.model import load_checkpoint

    foreign = tmp_path / "notes.pt"
    foreign.write_text("hello")
    with pytest.raises(ConversionError, match="is not a reverb-edge checkpoint"):
        load_checkpoint(foreign)


def test_convert_module_from_current_folder(tmp_path, monkeypatch):
    from reverb_edge.converters.convert import convert_source

    (tmp_path / "user_models_for_test.py").write_text(
        "from reverb_edge.converters import ConvNetConfig, build_convnet\n"
        "def small():\n"
        "    return build_convnet(ConvNetConfig(channels=(4, 4, 8)))\n"
        "def broken():\n"
        "    raise RuntimeError('no weights here')\n"
    )
    monkeypatch.chdir(tmp_path)
    convert_source("user_models_for_test:small", tmp_path / "small.reverb")
    assert Engine.load(tmp_path / "small.reverb").timesteps == 2
    with pytest.raises(ConversionError, match="RuntimeError: no weights here"):
        convert_source("user_models_for_test:broken", tmp_path / "broken.reverb")
    assert not (tmp_path / "broken.reverb").exists()
