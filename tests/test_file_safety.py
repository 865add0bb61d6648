"""Files on disk the studio reads and writes: symlinks, hidden names, image bombs, modes.

- A dangling symlink in the input folder never hangs an upload.
- LoadImage and SaveImage stay inside their folders even through symlinks, and refuse
  names with a part starting with a dot (such as the history folder ``.studio``).
- Image bombs (pictures that claim billions of pixels) are refused in plain words.
- Saved PNGs get the usual file mode (the process umask), not 0600.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nodes.base import CancelToken, Context, NodeInputError, RunSettings
from nodes.image_io import LoadImage, SaveImage

REPO = Path(__file__).resolve().parents[1]


def ctx_for(input_dir: Path, output_dir: Path, *, allow_absolute_paths: bool = False) -> Context:
    settings = RunSettings(
        output_dir=output_dir, input_dirs=(input_dir,), allow_absolute_paths=allow_absolute_paths
    )
    return Context("n", "T", "r", 7, settings, CancelToken(), lambda event: None)


def bomb_png(path: Path, width: int = 30000, height: int = 30000) -> Path:
    """A PNG a few hundred bytes long whose header claims ``width`` x ``height`` pixels."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    rows = zlib.compress(b"\0" * (width + 1) * 4)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    path.write_bytes(data)
    return path


def png(path: Path, size: tuple[int, int] = (4, 3)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (200, 30, 30)).save(path)
    return path


# --- 4. a dangling symlink named like the upload --------------------------------------------------


@pytest.mark.parametrize("what", ["upload", "bytes"])
def test_a_dangling_symlink_never_hangs_a_save(tmp_path: Path, what: str) -> None:
    folder = tmp_path / "input"
    folder.mkdir()
    missing = tmp_path / "nowhere" / "target.png"
    (folder / "photo.png").symlink_to(missing)
    source = png(tmp_path / "photo.png")
    script = (
        "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]);"
        "from server.inputs import save_upload, save_bytes;"
        "folder, source = Path(sys.argv[2]), Path(sys.argv[3]);"
        "saved = save_upload(folder, source) if sys.argv[4] == 'upload' else "
        "save_bytes(folder, source.read_bytes(), 'photo.png');"
        "print(saved.name)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(REPO), str(folder), str(source), what],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "photo_2.png"
    assert (folder / "photo.png").is_symlink() and not missing.exists()  # nothing written through it
    assert (folder / "photo_2.png").is_file() and not (folder / "photo_2.png").is_symlink()


def test_claiming_a_name_gives_up_after_bounded_tries(tmp_path: Path) -> None:
    (tmp_path / "taken.png").write_bytes(b"")
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "from server import inputs\n"
        "inputs.free_path = lambda folder, name: folder / name\n"  # every name it offers is taken
        "try:\n"
        "    inputs._claim(Path(sys.argv[2]), 'taken.png')\n"
        "except inputs.InputRefused as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(REPO), str(tmp_path)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert "free name" in done.stdout


# --- 9. symlinks and hidden names in the input and output folders ----------------------------------


@pytest.mark.parametrize("allow_absolute_paths", [False, True])
def test_load_image_refuses_symlinks_that_leave_the_input_folder(
    tmp_path: Path, allow_absolute_paths
) -> None:
    inputs, outside = tmp_path / "input", tmp_path / "private"
    secret = png(outside / "secret.png")
    inputs.mkdir()
    (inputs / "link.png").symlink_to(secret)
    (inputs / "linked-folder").symlink_to(outside, target_is_directory=True)
    ctx = ctx_for(inputs, tmp_path / "out", allow_absolute_paths=allow_absolute_paths)
    for name in ("link.png", "linked-folder/secret.png"):
        with pytest.raises(NodeInputError) as err:
            LoadImage().run(ctx, path=name)
        assert err.value.input_name == "path"
        assert "outside the input folder" in err.value.message and "inside it" in err.value.message
    # a link that stays inside the folder is fine
    png(inputs / "real.png")
    (inputs / "alias.png").symlink_to(inputs / "real.png")
    assert LoadImage().run(ctx, path="alias.png")["image"].shape == (1, 3, 4, 3)


@pytest.mark.parametrize("allow_absolute_paths", [False, True])
def test_load_image_refuses_hidden_names(tmp_path: Path, allow_absolute_paths) -> None:
    inputs = tmp_path / "input"
    png(inputs / ".hidden.png")
    png(inputs / ".studio" / "x.png")
    png(inputs / "a" / "b.png")
    ctx = ctx_for(inputs, tmp_path / "out", allow_absolute_paths=allow_absolute_paths)
    for name in (".hidden.png", ".studio/x.png", "a/../a/b.png"):
        with pytest.raises(NodeInputError) as err:
            LoadImage().run(ctx, path=name)
        assert err.value.input_name == "path" and "starting with a dot" in err.value.message
    assert LoadImage().run(ctx, path="a/b.png")["image"].shape == (1, 3, 4, 3)


def test_input_list_leaves_out_links_to_outside(tmp_path: Path) -> None:
    from server.inputs import list_images

    inputs = tmp_path / "input"
    png(inputs / "real.png")
    secret = png(tmp_path / "private" / "secret.png")
    (inputs / "link.png").symlink_to(secret)
    (inputs / "alias.png").symlink_to(inputs / "real.png")
    assert list_images([inputs]) == ["alias.png", "real.png"]


def test_save_image_never_writes_through_a_symlink_out_of_the_output_folder(tmp_path: Path) -> None:
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "link").symlink_to(elsewhere, target_is_directory=True)
    images = np.zeros((1, 2, 2, 3), np.float32)
    for absolute in (False, True):
        ctx = ctx_for(tmp_path, out, allow_absolute_paths=absolute)
        with pytest.raises(NodeInputError) as err:
            SaveImage().run(ctx, images=images, filename_prefix="link/x")
        assert err.value.input_name == "filename_prefix" and "outside the output folder" in err.value.message
    assert list(elsewhere.iterdir()) == []
    # an output folder that is itself a link (to a bigger disk) is the user's choice
    (tmp_path / "out-link").symlink_to(elsewhere, target_is_directory=True)
    ctx = ctx_for(tmp_path, tmp_path / "out-link")
    SaveImage().run(ctx, images=images, filename_prefix="sub/x")
    assert (elsewhere / "sub" / "x_00001.png").is_file()


@pytest.mark.parametrize("prefix", [".studio/x", "a/.b/x", ".x", "a/.x"])
def test_save_image_refuses_hidden_names(tmp_path: Path, prefix: str) -> None:
    ctx = ctx_for(tmp_path, tmp_path / "out")
    with pytest.raises(NodeInputError) as err:
        SaveImage().run(ctx, images=np.zeros((1, 2, 2, 3), np.float32), filename_prefix=prefix)
    assert err.value.input_name == "filename_prefix" and "dot" in err.value.message
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.png"))


# --- 11. saved PNGs follow the umask ---------------------------------------------------------------


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_saved_pngs_follow_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    old = os.umask(umask)
    try:
        ctx = ctx_for(tmp_path, tmp_path / "out")
        SaveImage().run(ctx, images=np.zeros((1, 2, 2, 3), np.float32), filename_prefix="m")
    finally:
        os.umask(old)
    (saved,) = ctx.files
    assert Path(saved).stat().st_mode & 0o777 == mode
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["m_00001.png"]  # no temporary file left


# --- 8. image bombs --------------------------------------------------------------------------------


def test_load_image_refuses_a_bomb_in_plain_words(tmp_path: Path) -> None:
    bomb_png(tmp_path / "bomb.png")
    with pytest.raises(NodeInputError) as err:
        LoadImage().run(ctx_for(tmp_path, tmp_path / "out"), path="bomb.png")
    assert err.value.input_name == "path"
    assert "900,000,000 pixels" in err.value.message and "too large" in err.value.message


def test_load_image_refuses_the_bomb_warning_when_it_is_an_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 12x12 = 144: between the limit and twice it
    png(tmp_path / "big.png", (12, 12))
    ctx = ctx_for(tmp_path, tmp_path / "out")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(NodeInputError) as err:
            LoadImage().run(ctx, path="big.png")
    assert err.value.input_name == "path" and "144 pixels" in err.value.message


def test_load_image_keeps_to_the_pixel_budget(tmp_path: Path, monkeypatch) -> None:
    import nodes.limits

    monkeypatch.setattr(nodes.limits, "MAX_PIXELS", 100)
    png(tmp_path / "big.png", (12, 12))
    with pytest.raises(NodeInputError) as err:
        LoadImage().run(ctx_for(tmp_path, tmp_path / "out"), path="big.png")
    assert err.value.input_name == "path" and "12x12" in err.value.message


def test_upload_helpers_refuse_bombs(tmp_path: Path, monkeypatch) -> None:
    from server.inputs import InputRefused, save_bytes, save_upload

    bomb = bomb_png(tmp_path / "bomb.png")
    with pytest.raises(InputRefused, match="too large"):
        save_upload(tmp_path / "input", bomb)
    with pytest.raises(InputRefused, match="too large"):
        save_bytes(tmp_path / "input", bomb.read_bytes(), "m.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    big = png(tmp_path / "big.png", (12, 12))
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(InputRefused, match="too large"):
            save_upload(tmp_path / "input", big)
    assert not (tmp_path / "input").exists() or list((tmp_path / "input").iterdir()) == []
