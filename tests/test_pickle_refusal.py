"""Model folders whose weights are pickle files (``.bin``) are refused unless the user opts in.

Every loader of a folder (CheckpointLoader, VAELoader, ControlNetLoader, CaptionerLoader,
ClipLoader) refuses a folder holding only ``.bin`` weights in the default mode, with the
message single ``.ckpt`` files get (naming the folder and ``--allow-pickle``), loads it with
``--allow-pickle`` through ``torch.load(weights_only=True)``, and never runs code hidden in
such a file, in either mode.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from models.paths import ModelPaths
from models.services import Services
from nodes.base import CancelToken, Context, NodeInputError, RunSettings
from nodes.control import ControlNetLoader
from nodes.diffusion import CheckpointLoader, VAELoader
from nodes.vision import CaptionerLoader, ClipLoader

#: (loader, its input, the models/ sub-folder)
LOADERS: dict[str, tuple[Any, str, str]] = {
    "checkpoint": (CheckpointLoader, "ckpt_name", "checkpoints"),
    "vae": (VAELoader, "vae_name", "vae"),
    "controlnet": (ControlNetLoader, "control_net_name", "controlnet"),
    "captioner": (CaptionerLoader, "captioner_name", "captioners"),
    "clip": (ClipLoader, "clip_name", "clip"),
}


class RunsCode:
    """Unpickling this runs code: it writes the marker file (what a malicious .bin would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (exec, (f"open({str(self.marker)!r}, 'w').write('the pickle ran')",))


def to_pickle(folder: Path) -> None:
    """Replace every .safetensors file in ``folder`` with the same tensors as a pickle ``.bin``
    (transformers 5 saves safetensors only, whatever ``safe_serialization`` says)."""
    from safetensors.torch import load_file

    names = {"model.safetensors": "pytorch_model.bin"}
    for file in sorted(folder.rglob("*.safetensors")):
        target = file.with_name(names.get(file.name, file.stem + ".bin"))
        torch.save(load_file(str(file)), target)
        file.unlink()


@pytest.fixture(scope="module")
def pickle_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Each kind of model folder twice: with .bin weights, and with a .bin that runs code."""
    from diffusers import ControlNetModel

    from tests.fixtures.tiny_models import sd_pipeline, tiny_sd_components
    from tests.fixtures.tiny_vision import bert_tokenizer, save_tiny_blip, save_tiny_clip

    root = tmp_path_factory.mktemp("pickle-models")
    marker = root / "MARKER"
    components = tiny_sd_components()
    sd_pipeline(components).save_pretrained(root / "checkpoints" / "bin-sd", safe_serialization=False)
    components["vae"].save_pretrained(root / "vae" / "bin-vae", safe_serialization=False)
    controlnet = ControlNetModel.from_unet(
        components["unet"], conditioning_embedding_out_channels=(16, 16, 32, 32)
    )
    controlnet.save_pretrained(root / "controlnet" / "bin-cn", safe_serialization=False)
    save_tiny_blip(root / "captioners" / "bin-blip", bert_tokenizer(root / ".vocab"))
    save_tiny_clip(root / "clip" / "bin-clip")
    for kind in ("checkpoints", "vae", "controlnet", "captioners", "clip"):
        (good,) = (root / kind).iterdir()
        to_pickle(good)
        assert not list(good.rglob("*.safetensors")) and list(good.rglob("*.bin"))
        evil = root / kind / good.name.replace("bin-", "evil-")
        shutil.copytree(good, evil)
        for file in evil.rglob("*.bin"):
            torch.save({"weight": torch.zeros(1), "payload": RunsCode(marker)}, file)
    return root


def run_loader(root: Path, kind: str, name: str, allow_pickle: bool) -> dict[str, Any]:
    """Run ``kind``'s loader on model ``name`` of ``root``, pickle files allowed or not (as
    ``--allow-pickle`` sets it: the services' manager is made with it)."""
    cls, input_name, _ = LOADERS[kind]
    services = Services(paths=ModelPaths((root,)), allow_pickle=allow_pickle, device="cpu")
    settings = RunSettings(output_dir=root / "out", services=services)
    ctx = Context("n", cls.type, "r", 1, settings, CancelToken(), lambda event: None)
    return cls().run(ctx, **{input_name: name, **({"prediction": "auto"} if kind == "checkpoint" else {})})


def no_torch_advice(message: str) -> None:
    assert "weights_only=False" not in message.replace(" ", "")
    assert "`weights_only` set to `False`" not in message and "add_safe_globals" not in message


@pytest.mark.parametrize("kind", list(LOADERS))
def test_pickle_folders_are_refused_by_default_like_ckpt_files(pickle_root: Path, kind: str) -> None:
    folder = next((pickle_root / LOADERS[kind][2]).glob("bin-*"))
    with pytest.raises(NodeInputError) as err:
        run_loader(pickle_root, kind, folder.name, False)
    message = err.value.message
    assert err.value.input_name == LOADERS[kind][1]
    assert folder.name in message and "pickle" in message and "can run code" in message
    assert "--allow-pickle" in message and "weights_only=True" in message and ".safetensors" in message
    no_torch_advice(message)


@pytest.mark.parametrize("kind", list(LOADERS))
def test_pickle_folders_load_weights_only_with_the_opt_in(pickle_root: Path, kind: str, monkeypatch) -> None:
    """With --allow-pickle the folder loads, and every torch.load on the way is weights-only."""
    calls: list[Any] = []
    real_load = torch.load

    def spying_load(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spying_load)
    folder = next((pickle_root / LOADERS[kind][2]).glob("bin-*"))
    out = run_loader(pickle_root, kind, folder.name, True)
    assert out and calls and all(weights_only is True for weights_only in calls), calls
    handle = next(iter(out.values()))
    loaded = handle.checkpoint.get().unet if kind == "checkpoint" else handle.get()
    assert loaded is not None


@pytest.mark.parametrize("allow_pickle", [False, True])
@pytest.mark.parametrize("kind", list(LOADERS))
def test_code_in_a_pickle_never_runs(pickle_root: Path, kind: str, allow_pickle: bool) -> None:
    folder = next((pickle_root / LOADERS[kind][2]).glob("evil-*"))
    with pytest.raises(NodeInputError) as err:
        run_loader(pickle_root, kind, folder.name, allow_pickle)
    assert not (pickle_root / "MARKER").exists()
    assert err.value.input_name == LOADERS[kind][1] and folder.name in err.value.message
    assert ("more than tensors" if allow_pickle else "--allow-pickle") in err.value.message
    no_torch_advice(err.value.message)


def test_single_pickle_files_never_run_code_either(tmp_path: Path) -> None:
    from models.safety import UnsafeOrBrokenFile, load_state_dict

    marker = tmp_path / "MARKER"
    for suffix in (".ckpt", ".bin", ".pt"):
        path = tmp_path / f"evil{suffix}"
        torch.save({"weight": torch.zeros(1), "payload": RunsCode(marker)}, path)
        with pytest.raises(UnsafeOrBrokenFile) as err:
            load_state_dict(path, allow_pickle=True)
        assert "exec" in str(err.value) and "could not be loaded" in str(err.value)
        no_torch_advice(str(err.value))
    assert not marker.exists()


def test_a_pickle_beside_safetensors_is_never_read(tmp_path: Path) -> None:
    """A folder with safetensors weights loads them only (a stray .bin beside them is ignored)."""
    from models.safety import PickleRefused, check_weights_folder

    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    (tmp_path / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"")
    assert check_weights_folder(tmp_path, allow_pickle=False) is True
    # parts that are not loaded (a pipeline's safety checker) and hidden folders do not count
    for part in ("safety_checker", ".git/lfs"):
        (tmp_path / part).mkdir(parents=True)
        (tmp_path / part / "pytorch_model.bin").write_bytes(b"")
    assert check_weights_folder(tmp_path, allow_pickle=False, skip=["safety_checker"]) is True
    with pytest.raises(PickleRefused, match="safety_checker/pytorch_model.bin"):
        check_weights_folder(tmp_path, allow_pickle=False)
    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "diffusion_pytorch_model.bin").write_bytes(b"")
    assert check_weights_folder(tmp_path, allow_pickle=True) is None
