"""Image decoding and preprocessing: documented conversions, refusals before decoding, stated preprocessing."""

import io
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from oneshot.data.images import (
    OMNIGLOT_ENVELOPE,
    InputWarning,
    Preprocessing,
    decode_image,
    domain_warning,
    image_files_in,
    stats_envelope,
)
from oneshot.errors import OneshotError

ROOT = Path(__file__).resolve().parent.parent
GREY = Preprocessing(size=28, channels=1, invert=True)


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def glyph(k: int, mode: str = "RGBA") -> Image.Image:
    """A black stroke on a transparent background; k picks one of several shapes."""
    im = Image.new(mode, (105, 105), (0, 0, 0, 0))
    d = ImageDraw.Draw(im)
    shapes = [
        [(10, 10), (90, 90)],
        [(10, 90), (90, 10)],
        [(50, 5), (50, 100)],
        [(5, 50), (100, 50)],
        [(10, 30), (90, 30)],
        [(30, 10), (30, 90)],
    ]
    d.line(shapes[k], fill=(0, 0, 0, 255), width=6)
    return im


def test_rgba_drawings_on_transparent_background_stay_distinct():
    arrays = [decode_image(png(glyph(k)), GREY).astype(np.float64).ravel() for k in range(6)]
    for a in arrays:  # composited on white, then inverted: mostly dark, the stroke bright (not an all-ink square)
        assert (a < 30).mean() > 0.7 and a.max() > 200
    unit = [a / np.linalg.norm(a) for a in arrays]
    cos = np.array([[u @ v for v in unit] for u in unit])
    assert cos[~np.eye(6, dtype=bool)].max() < 0.9


def test_sixteen_bit_grey_is_scaled_by_its_bit_depth_not_clipped():
    a = np.full((40, 40), 65535, np.uint16)
    a[10:30, 18:22] = 20000  # grey ink, far above 255
    out = decode_image(png(Image.fromarray(a)), Preprocessing(size=40, invert=False))
    assert out[0, 0, 0] == 255 and abs(int(out[0, 20, 20]) - round(20000 * 255 / 65535)) <= 2


def _png_claiming(width: int, height: int) -> bytes:
    raw = png(Image.new("L", (8, 8), 255))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return raw[:8] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + raw[33:]


@pytest.mark.parametrize("side", [20000, 100000])
def test_decompression_bomb_refused_in_one_line_before_decoding(side):
    with pytest.raises(OneshotError, match="megapixel") as exc:
        decode_image(_png_claiming(side, side), GREY, name="bomb.png")
    assert "\n" not in str(exc.value) and "bomb.png" in str(exc.value)


def _encoded(mode: str) -> bytes:
    """A white page with a black square, stored in ``mode`` (PNG, or TIFF where PNG cannot hold the mode)."""
    base = Image.new("RGB", (30, 20), (255, 255, 255))
    ImageDraw.Draw(base).rectangle([5, 5, 15, 15], fill=(0, 0, 0))
    buf = io.BytesIO()
    grey = np.asarray(base.convert("L"), np.float64) / 255
    if mode == "I;16":
        Image.fromarray((grey * 65535).astype(np.uint16)).save(buf, "PNG")
    elif mode == "I":
        Image.fromarray((grey * 65535).astype(np.int32), "I").save(buf, "TIFF")
    elif mode == "F":
        Image.fromarray(grey.astype(np.float32), "F").save(buf, "TIFF")
    elif mode == "CMYK":
        base.convert("CMYK").save(buf, "TIFF")
    elif mode == "P+transparency":
        p = base.convert("P")
        p.info["transparency"] = 255  # an unused index: nothing becomes transparent
        p.save(buf, "PNG", transparency=255)
    elif mode == "JPEG":
        base.save(buf, "JPEG", quality=95)
    else:
        base.convert(mode).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("mode", ["P", "P+transparency", "LA", "RGBA", "CMYK", "I;16", "I", "F", "1", "JPEG", "RGB", "L"])
def test_every_mode_converts_to_the_stated_shape(mode):
    data = _encoded(mode)
    for prep in (Preprocessing(size=16, channels=1, invert=False), Preprocessing(size=16, channels=3, invert=False)):
        out = decode_image(data, prep)
        assert out.shape == (prep.channels, 16, 16) and out.dtype == np.uint8
        assert out.max() > 200 and out.min() < 60  # white paper and a black square survive every conversion


def test_resize_policies_keep_or_ignore_aspect():
    wide = Image.new("L", (100, 50), 0)  # black, wide
    stretch = decode_image(png(wide), Preprocessing(size=20, invert=False, resize="stretch"))
    pad = decode_image(png(wide), Preprocessing(size=20, invert=False, resize="pad"))
    crop = decode_image(png(wide), Preprocessing(size=20, invert=False, resize="crop"))
    assert stretch.max() == 0 and crop.max() == 0
    assert (pad[0, :3] == 255).all() and (pad[0, 8:12] == 0).all()  # white bands above and below the image


def test_preprocessing_dict_keeps_old_checkpoints_and_fingerprints_identical():
    assert Preprocessing().to_dict() == {"size": 28, "channels": 1, "invert": True}
    assert Preprocessing(resize="crop").to_dict()["resize"] == "crop"
    from oneshot.modalities import fingerprint_id
    from oneshot.modalities.image import ImageEmbedder

    # The ids galleries built before this change recorded (computed with the previous code).
    assert (
        fingerprint_id(ImageEmbedder(ROOT / "src/oneshot/weights/protonet_conv4_vinyals.safetensors").fingerprint)
        == "0f7f1525b4ce9941"
    )
    assert (
        fingerprint_id(ImageEmbedder(ROOT / "src/oneshot/weights/protonet_conv4_lake.safetensors").fingerprint)
        == "027b41b3b5d25d04"
    )


@pytest.mark.parametrize(
    "bad",
    [
        {"size": 4, "channels": 1, "invert": True},
        {"size": -5, "channels": 1, "invert": True},
        {"size": 28, "channels": 2, "invert": True},
        {"size": 28, "channels": 1},
        {"size": "28", "channels": 1, "invert": True},
        [28],
        {"size": 28, "channels": 1, "invert": True, "resize": "zoom"},
    ],
)
def test_malformed_preprocessing_is_a_clear_error(bad):
    with pytest.raises(OneshotError):
        Preprocessing.from_dict(bad)


def test_folders_are_read_by_content_not_suffix(tmp_path):
    (tmp_path / "photo").write_bytes(png(glyph(0)))  # an image without a suffix
    (tmp_path / "notes.png").write_text("not an image")
    assert [p.name for p in image_files_in(tmp_path)] == ["photo"]
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.jpg").write_text("text")
    (bad / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(OneshotError, match="no file in .* is a readable image: a.jpg .*; b.png"):
        image_files_in(bad)


def test_extreme_upscale_warns():
    with pytest.warns(InputWarning, match="upscaled"):
        decode_image(png(Image.new("L", (3, 3), 0)), Preprocessing(size=64, invert=False))


def test_domain_warning_flags_inputs_unlike_training(vinyals_test):
    omniglot = vinyals_test.images[:64].numpy()
    assert domain_warning(omniglot, OMNIGLOT_ENVELOPE, "omniglot") is None
    # White strokes on black, inverted by the Omniglot preprocessing: a bright page.
    assert "look unlike" in domain_warning(255 - omniglot, OMNIGLOT_ENVELOPE, "omniglot")
    photo = np.random.default_rng(0).integers(60, 200, (4, 1, 28, 28), dtype=np.uint8)
    assert domain_warning(photo, OMNIGLOT_ENVELOPE, "omniglot") is not None


def test_omniglot_envelope_constant_matches_the_data(vinyals_train):
    env = stats_envelope(vinyals_train.images.numpy())
    assert env["images"] == OMNIGLOT_ENVELOPE["images"]
    np.testing.assert_allclose(env["low"], OMNIGLOT_ENVELOPE["low"], atol=1e-4)
    np.testing.assert_allclose(env["high"], OMNIGLOT_ENVELOPE["high"], atol=1e-4)


def test_gallery_embedder_warns_for_a_photograph(tmp_path):
    from oneshot.modalities.image import ImageEmbedder

    emb = ImageEmbedder(ROOT / "src/oneshot/weights/protonet_conv4_vinyals.safetensors")
    rng = np.random.default_rng(0)
    photo = png(Image.fromarray(rng.integers(40, 220, (112, 92), dtype=np.uint8)))
    with pytest.warns(InputWarning, match="look unlike"):
        emb.embed([photo], ["face.png"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", InputWarning)
        emb.embed([png(glyph(k).convert("RGBA")) for k in range(3)], ["a", "b", "c"])


def _samples() -> list[bytes]:
    im = glyph(1)
    out = [png(im), png(im.convert("P")), png(Image.fromarray((np.arange(400).reshape(20, 20) * 150).astype(np.uint16)))]
    for fmt in ("JPEG", "GIF", "BMP", "TIFF", "WEBP"):
        buf = io.BytesIO()
        im.convert("RGB").save(buf, fmt)
        out.append(buf.getvalue())
    return out


SAMPLES = _samples()


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    which=st.integers(0, len(SAMPLES) - 1),
    cut=st.floats(0, 1),
    flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=6),
    prep=st.sampled_from([GREY, Preprocessing(size=16, channels=3, invert=False, resize="pad")]),
)
def test_fuzzed_images_decode_or_fail_in_one_line(which, cut, flips, prep):
    data = bytearray(SAMPLES[which])
    for pos, value in flips:
        data[int(pos * (len(data) - 1))] = value
    data = bytes(data[: max(1, int(cut * len(data)))] if cut < 0.98 else data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InputWarning)
            out = decode_image(data, prep, name="fuzz")
    except OneshotError as exc:
        assert "\n" not in str(exc) and "fuzz" in str(exc)
    else:
        assert out.shape == (prep.channels, prep.size, prep.size) and out.dtype == np.uint8
