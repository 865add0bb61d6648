"""The routes the studio's page uses: input folder, library, validation, import, models, previews.

Each route keeps the rules of the rest of /api (token, other sites, JSON errors, body
limits); node descriptions carry the names ComfyUI users search for; job summaries
carry the workflow's name, prompt and seeds.
"""

from __future__ import annotations

import io
import json
import os
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image, PngImagePlugin

from graph.executor import Executor
from models.checkpoint_info import checkpoint_info
from models.paths import ModelPaths
from models.services import Services
from nodes.base import RunSettings, words_of
from nodes.registry import Registry
from server.api import api_router
from server.folders import StudioFolders
from server.history import History
from server.jobs import JobQueue
from server.model_info import ModelCatalog
from server.previews import PreviewStore
from tests.test_api import finish, wait_progress
from tests.test_file_safety import bomb_png
from tests.test_jobs import WAIT, noise_flow, sleep_flow

REPO = Path(__file__).resolve().parents[1]
COMFY = REPO / "tests" / "data" / "comfy"
TOKEN = "s3cret-token"


@pytest.fixture
def folders(tmp_path: Path) -> StudioFolders:
    return StudioFolders(
        input_dir=tmp_path / "input", library_dir=tmp_path / "library", examples_dir=REPO / "workflows"
    )


@pytest.fixture
def out(tmp_path: Path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


@pytest.fixture
def jobs(registry: Registry, out: Path, folders: StudioFolders) -> Iterator[JobQueue]:
    history = History(out.parent / "state" / "history.sqlite3")
    # as the studio runs: LoadImage reads the input folder, then the examples' (assets/...)
    input_dirs = (folders.input_dir, folders.examples_dir)
    settings = lambda: RunSettings(output_dir=out, input_dirs=input_dirs)  # noqa: E731
    queue = JobQueue(Executor(registry), registry, settings, history)
    yield queue
    queue.close(timeout=WAIT)
    history.close()


def make_client(jobs: JobQueue, folders: StudioFolders | None, token: str | None = None) -> TestClient:
    app = FastAPI()
    app.include_router(api_router(jobs, token=token, folders=folders))
    return TestClient(app)


@pytest.fixture
def client(jobs: JobQueue, folders: StudioFolders) -> Iterator[TestClient]:
    with make_client(jobs, folders) as test_client:
        yield test_client


def uploaded(files: list[str]) -> list[str]:
    """The pictures listed from the input folder, without the examples' assets."""
    return [name for name in files if not name.startswith("assets/")]


def png_bytes(size: tuple[int, int] = (4, 3), texts: dict[str, str] | None = None) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key, value in (texts or {}).items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def example(name: str) -> dict[str, Any]:
    return json.loads((REPO / "workflows" / f"{name}.json").read_text())


def error_of(answer: Any, status: int) -> str:
    assert answer.status_code == status, (answer.status_code, answer.text[:300])
    body = answer.json()
    assert set(body) == {"error"}, body
    return body["error"]


# --- node names people search for ------------------------------------------------------------------


def test_nodes_carry_the_names_comfyui_users_search_for(client: TestClient) -> None:
    nodes = {node["type"]: node for node in client.get("/api/nodes").json()}
    assert all(node["display_name"].strip() for node in nodes.values())
    assert nodes["Sampler"]["display_name"] == "KSampler (Sampler)"
    assert "KSampler" in nodes["Sampler"]["aliases"]
    assert nodes["SamplerAdvanced"]["display_name"] == "KSampler Advanced"
    assert {"KSamplerAdvanced", "KSampler (Advanced)"} <= set(nodes["SamplerAdvanced"]["aliases"])
    assert nodes["CheckpointLoader"]["display_name"] == "Load Checkpoint"
    assert {"CheckpointLoaderSimple", "Load Checkpoint"} <= set(nodes["CheckpointLoader"]["aliases"])
    assert not any("DEPRECATED" in alias for alias in nodes["CheckpointLoader"]["aliases"])
    assert nodes["VAEDecode"]["display_name"] == "VAE Decode"
    assert "VAE Decode (Tiled)" in nodes["VAEDecode"]["aliases"]
    assert nodes["CLIPTextEncode"]["display_name"] == "CLIP Text Encode (Prompt)"
    assert "CLIP Text Encode (Prompt)" in nodes["CLIPTextEncode"]["aliases"]
    assert nodes["EmptyLatent"]["display_name"] == "Empty Latent Image"
    assert "EmptyLatentImage" in nodes["EmptyLatent"]["aliases"]
    assert nodes["ControlNetApply"]["display_name"] == "Apply ControlNet"
    assert nodes["LoraLoader"]["display_name"] == "Load LoRA"
    for node in nodes.values():  # aliases are sorted, never the type itself
        assert node["aliases"] == sorted(set(node["aliases"])) and node["type"] not in node["aliases"]
    assert nodes["Sleep"]["display_name"] == "Sleep" and nodes["Sleep"]["aliases"] == []


def test_sockets_carry_the_declared_colours(client: TestClient) -> None:
    from nodes import types as T

    colors = client.get("/api/sockets").json()["colors"]
    assert colors == T.COLORS
    nodes = client.get("/api/nodes").json()
    used = {spec["type"] for node in nodes for spec in node["inputs"] + node["outputs"]}
    assert used - {"*"} <= set(colors), "a socket type the page would draw grey"


@pytest.mark.parametrize(
    ("type_name", "words"),
    [
        ("VAEDecode", "VAE Decode"),
        ("CLIPTextEncode", "CLIP Text Encode"),
        ("CLIPTextEncodeSDXL", "CLIP Text Encode SDXL"),
        ("ModelMergeSD1", "Model Merge SD1"),
        ("SDTurboScheduler", "SD Turbo Scheduler"),
        ("ImageScaleBy", "Image Scale By"),
        ("Int", "Int"),
    ],
)
def test_a_type_without_a_display_name_reads_as_words(type_name: str, words: str) -> None:
    assert words_of(type_name) == words


def test_load_image_offers_the_pictures_in_the_input_folder(
    client: TestClient, folders: StudioFolders
) -> None:
    folders.input_dir.mkdir()
    (folders.input_dir / "cat.png").write_bytes(png_bytes())
    (folders.input_dir / "notes.txt").write_text("not a picture")
    (node,) = [n for n in client.get("/api/nodes").json() if n["type"] == "LoadImage"]
    (path,) = node["inputs"]
    assert uploaded(path["choices"]) == ["cat.png"] and path["file_list"] is True
    assert "assets/shapes.png" in path["choices"]  # what the examples load


# --- the input folder ------------------------------------------------------------------------------


def test_uploads_are_saved_checked_and_never_over_a_file(client: TestClient, folders: StudioFolders) -> None:
    assert uploaded(client.get("/api/inputs").json()["files"]) == []
    first = client.post("/api/inputs", params={"name": "cat.png"}, content=png_bytes())
    assert first.status_code == 201 and first.json() == {"name": "cat.png"}
    again = client.post("/api/inputs", params={"name": "cat.png"}, content=png_bytes((5, 5)))
    assert again.status_code == 201 and again.json() == {"name": "cat_2.png"}
    assert uploaded(client.get("/api/inputs").json()["files"]) == ["cat.png", "cat_2.png"]
    with Image.open(folders.input_dir / "cat.png") as kept:
        assert kept.size == (4, 3)  # the first upload was not replaced
    served = client.get("/api/inputs/cat_2.png")
    assert served.status_code == 200 and served.content == (folders.input_dir / "cat_2.png").read_bytes()
    assert served.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in served.headers["content-security-policy"]


def test_uploads_that_are_not_pictures_are_refused(
    client: TestClient, folders: StudioFolders, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "not an image" in error_of(client.post("/api/inputs?name=x.png", content=b"<html>"), 400)
    assert "empty" in error_of(client.post("/api/inputs?name=x.png", content=b""), 400)
    assert "too large" in error_of(
        client.post("/api/inputs?name=bomb.png", content=bomb_png(tmp_path / "b.png").read_bytes()), 400
    )
    for name in (".hidden.png", "a/b.png", "..", "x.exe", "x.svg", " "):
        error_of(client.post("/api/inputs", params={"name": name}, content=png_bytes()), 400)
    error_of(client.post("/api/inputs", content=png_bytes()), 400)  # no name
    monkeypatch.setattr("server.page_api.MAX_UPLOAD_BYTES", 100)
    assert "larger than" in error_of(
        client.post("/api/inputs?name=big.png", content=png_bytes((64, 64))), 413
    )
    assert not folders.input_dir.exists() or list(folders.input_dir.iterdir()) == []


def test_input_pictures_are_served_from_the_input_folder_only(
    client: TestClient, folders: StudioFolders, tmp_path: Path
) -> None:
    folders.input_dir.mkdir()
    (folders.input_dir / "sub").mkdir()
    (folders.input_dir / "sub" / "dog.png").write_bytes(png_bytes())
    (folders.input_dir / ".hidden.png").write_bytes(png_bytes())
    (folders.input_dir / "workflow.json").write_text("{}")
    secret = tmp_path / "secret.png"
    secret.write_bytes(png_bytes())
    (folders.input_dir / "link.png").symlink_to(secret)
    assert client.get("/api/inputs/sub/dog.png").status_code == 200
    shapes = client.get("/api/inputs/assets/shapes.png")  # the examples' pictures, as LoadImage reads them
    assert shapes.content == (REPO / "workflows" / "assets" / "shapes.png").read_bytes()
    assert "'..'" in error_of(client.get("/api/inputs/sub/..%2F..%2Fsecret.png"), 400)
    error_of(client.get("/api/inputs/.hidden.png"), 403)
    assert "outside the input folder" in error_of(client.get("/api/inputs/link.png"), 403)
    assert "only pictures" in error_of(client.get("/api/inputs/workflow.json"), 403)
    assert "input folder" in error_of(client.get("/api/inputs/missing.png"), 404)


def test_without_folders_the_page_routes_say_so(jobs: JobQueue) -> None:
    with make_client(jobs, None) as bare:
        assert "no input folder" in error_of(bare.get("/api/inputs"), 404)
        assert "no input folder" in error_of(bare.post("/api/inputs?name=a.png", content=png_bytes()), 404)
        assert "no workflow library" in error_of(bare.get("/api/library"), 404)
        assert "no workflow library" in error_of(bare.put("/api/library/x", json={"workflow": {}}), 404)
        assert "no examples folder" in error_of(bare.get("/api/examples/txt2img"), 404)
        assert bare.get("/api/models").status_code == 200  # these need no folder
        assert bare.post("/api/validate", json={"workflow": noise_flow("x")}).json()["valid"] is True


# --- the workflow library ------------------------------------------------------------------------


def test_library_saves_lists_renames_and_deletes(client: TestClient, folders: StudioFolders) -> None:
    listed = client.get("/api/library").json()
    assert listed["workflows"] == []
    assert {"name": "txt2img", "description": example("txt2img")["metadata"]["description"]} in listed[
        "examples"
    ]
    flow = {**noise_flow("saved"), "metadata": {"name": "Noise", "studio": {"viewport": {"x": 1}}}}
    created = client.put("/api/library/My noise (v2)", json={"workflow": flow})
    assert created.status_code == 201 and created.json() == {"name": "My noise (v2)", "replaced": False}
    assert client.get("/api/library/My noise (v2)").json() == flow
    taken = client.put("/api/library/My noise (v2)", json={"workflow": noise_flow("other")})
    assert "exists" in error_of(taken, 409)
    assert client.get("/api/library/My noise (v2)").json() == flow
    replaced = client.put(
        "/api/library/My noise (v2)", json={"workflow": json.dumps(noise_flow("new")), "overwrite": True}
    )
    assert replaced.status_code == 200 and replaced.json()["replaced"] is True
    assert client.get("/api/library/My noise (v2)").json() == noise_flow("new")
    time.sleep(0.02)
    assert client.put("/api/library/second", json={"workflow": noise_flow("b")}).status_code == 201
    names = [entry["name"] for entry in client.get("/api/library").json()["workflows"]]
    assert names == ["second", "My noise (v2)"]  # the most recently changed first
    assert "exists" in error_of(client.post("/api/library/second/rename", json={"to": "My noise (v2)"}), 409)
    assert client.post("/api/library/second/rename", json={"to": "third"}).json() == {"name": "third"}
    assert "no workflow named" in error_of(client.post("/api/library/second/rename", json={"to": "x"}), 404)
    assert client.get("/api/library/third").json() == noise_flow("b")
    assert client.delete("/api/library/third").status_code == 200
    error_of(client.delete("/api/library/third"), 404)
    error_of(client.get("/api/library/third"), 404)
    assert sorted(p.name for p in folders.library_dir.iterdir()) == [
        "My noise (v2).json"
    ]  # nothing left over


def test_library_keeps_unfinished_graphs_but_only_workflow_files(client: TestClient) -> None:
    unfinished = {
        "version": 1,
        "nodes": {
            "k": {"type": "KSampler", "inputs": {"steps": 3}},  # a type this studio lacks
            "s": {"type": "Sampler", "inputs": {"model": {"node": "gone", "output": "model"}}},
        },
    }
    assert client.put("/api/library/draft", json={"workflow": unfinished}).status_code == 201
    assert client.get("/api/library/draft").json() == unfinished
    newer = {"version": 2, "nodes": {}}
    assert "newer studio" in error_of(client.put("/api/library/x", json={"workflow": newer}), 400)
    odd_key = {"version": 1, "nodes": {"a": {"type": "Int", "inputs": {}, "colour": "red"}}}
    assert "not a workflow file" in error_of(client.put("/api/library/x", json={"workflow": odd_key}), 400)
    error_of(client.put("/api/library/x", json={"workflow": "not json"}), 400)
    error_of(client.put("/api/library/x", json={"workflow": [1, 2]}), 400)
    error_of(client.put("/api/library/x", json={"workflow": unfinished, "overwrite": "yes"}), 400)
    error_of(client.put("/api/library/x", json={"workflow": unfinished, "extra": 1}), 400)
    error_of(client.put("/api/library/x", json={"flow": unfinished}), 400)
    assert client.get("/api/library").json()["workflows"][0]["name"] == "draft"


@pytest.mark.parametrize("name", [".hidden", " lead", "a*b", "x" * 101, "a\\b", "-dash", "name%0A"])
def test_library_names_are_plain(client: TestClient, name: str) -> None:
    message = error_of(client.put(f"/api/library/{name}", json={"workflow": noise_flow("x")}), 400)
    assert "not a usable workflow name" in message
    error_of(client.get(f"/api/library/{name}"), 400)


def test_examples_are_served_by_name(client: TestClient) -> None:
    assert client.get("/api/examples/txt2img").json() == example("txt2img")
    assert "no example named" in error_of(client.get("/api/examples/nothing"), 404)
    error_of(client.get("/api/examples/..%2Fpyproject"), 404)  # a slash never reaches the route


def test_library_changes_keep_the_rules(jobs: JobQueue, folders: StudioFolders) -> None:
    with make_client(jobs, folders, token=TOKEN) as guarded:
        assert guarded.get("/api/library").status_code == 401
        assert guarded.get("/api/models").status_code == 401
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        evil = {**bearer, "Origin": "https://evil.example"}
        refused = guarded.put("/api/library/x", json={"workflow": noise_flow("x")}, headers=evil)
        assert "other sites" in error_of(refused, 403)
        assert guarded.post("/api/inputs?name=a.png", content=png_bytes(), headers=evil).status_code == 403
        assert (
            guarded.put("/api/library/x", json={"workflow": noise_flow("x")}, headers=bearer).status_code
            == 201
        )


# --- validation and import -------------------------------------------------------------------------


def test_validate_answers_every_issue(client: TestClient) -> None:
    assert client.post("/api/validate", json={"workflow": noise_flow("ok")}).json() == {
        "valid": True,
        "issues": [],
    }
    broken = noise_flow("x")
    broken["nodes"]["noise"]["inputs"]["size"] = "big"
    answer = client.post("/api/validate", json={"workflow": json.dumps(broken)}).json()
    assert answer["valid"] is False
    (issue,) = answer["issues"]
    assert issue["node_id"] == "noise" and issue["input"] == "size" and "text" in issue
    error_of(client.post("/api/validate", json={"flow": broken}), 400)
    error_of(client.post("/api/validate", content=b"{nope"), 400)


def test_import_recognises_studio_files_and_pictures(client: TestClient) -> None:
    flow = example("txt2img")
    answer = client.post("/api/import?name=txt2img.json", content=json.dumps(flow).encode()).json()
    assert answer["workflow"] == flow and answer["format"] == "studio" and answer["complete"] is True
    assert answer["seed"] is None and answer["unconverted"] == [] and "txt2img.json" in answer["message"]
    picture = png_bytes(texts={"workflow": json.dumps(flow), "run_seed": "1234"})
    answer = client.post("/api/import?name=shot.png", content=picture).json()
    assert answer["format"] == "studio-png" and answer["seed"] == 1234 and answer["workflow"] == flow
    assert "1234" in answer["message"]
    unfinished = {"version": 1, "nodes": {"k": {"type": "Nope", "inputs": {}}}}
    assert (
        client.post("/api/import", content=json.dumps(unfinished).encode()).json()["workflow"] == unfinished
    )


@pytest.mark.parametrize(
    ("file", "kind"), [("default_ui.json", "comfyui-ui"), ("default_api.json", "comfyui-api")]
)
def test_import_converts_comfyui_workflows(client: TestClient, file: str, kind: str) -> None:
    answer = client.post(f"/api/import?name={file}", content=(COMFY / file).read_bytes()).json()
    assert answer["format"] == kind and answer["complete"] is True and answer["unconverted"] == []
    types = sorted(node["type"] for node in answer["workflow"]["nodes"].values())
    assert types == sorted(
        [
            "CheckpointLoader",
            "CLIPTextEncode",
            "CLIPTextEncode",
            "EmptyLatent",
            "Sampler",
            "VAEDecode",
            "SaveImage",
        ]
    )
    assert (
        answer["message"].startswith(f"{file}: this is a ComfyUI workflow") and "7 of 7" in answer["message"]
    )


def test_import_of_a_comfyui_png_and_a_partial_conversion(client: TestClient) -> None:
    picture = png_bytes(texts={"prompt": (COMFY / "default_api.json").read_text()})
    answer = client.post("/api/import?name=comfy.png", content=picture).json()
    assert answer["format"] == "comfyui-png" and answer["complete"] is True
    partial = client.post("/api/import?name=custom.json", content=(COMFY / "custom_api.json").read_bytes())
    assert partial.status_code == 200
    answer = partial.json()
    assert answer["complete"] is False and answer["format"] == "comfyui-api"
    assert {(item["node"], item["type"]) for item in answer["unconverted"]} >= {
        ("11", "Image Comparer (rgthree)")
    }
    assert all(item["reason"] for item in answer["unconverted"])
    assert "not converted: " in answer["message"] and "Image Comparer (rgthree)" in answer["message"]
    assert "Sampler" in {
        node["type"] for node in answer["workflow"]["nodes"].values()
    }  # what converted opens


def test_import_refuses_what_holds_no_workflow(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "no workflow" in error_of(client.post("/api/import?name=plain.png", content=png_bytes()), 400)
    assert "neither" in error_of(client.post("/api/import?name=x.bin", content=b"\xff\xfe\x00junk"), 400)
    assert "empty" in error_of(client.post("/api/import?name=x.json", content=b""), 400)
    newer = json.dumps({"version": 9, "nodes": {}}).encode()
    assert "newer studio" in error_of(client.post("/api/import?name=new.json", content=newer), 400)
    assert "version" in error_of(client.post("/api/import?name=x.json", content=b'{"a": 1}'), 400)
    broken = png_bytes(texts={"prompt": "{not json"})
    assert "ComfyUI workflow that cannot be read" in error_of(
        client.post("/api/import?name=b.png", content=broken), 400
    )
    monkeypatch.setattr("server.answers.MAX_BODY_BYTES", 10)
    error_of(client.post("/api/import?name=big.json", content=b"{" + b" " * 100 + b"}"), 413)


# --- models -------------------------------------------------------------------------------------------


def test_models_lists_checkpoints_with_family_and_size(client: TestClient) -> None:
    answer = client.get("/api/models").json()
    found = {c["name"]: c for c in answer["checkpoints"]}
    assert found["toy-sd"] == {"name": "toy-sd", "family": "toy", "width": 32, "height": 32, "in_channels": 4}
    assert found["toy-ip2p"]["in_channels"] == 8
    # the default makes pictures from text: toy-sd, though toy-ip2p comes first by name
    assert answer["defaults"] == {"ckpt_name": "toy-sd", "width": 32, "height": 32}


def write_config_folder(folder: Path, unet: dict[str, Any], vae_blocks: int, second_encoder: bool) -> Path:
    (folder / "unet").mkdir(parents=True)
    (folder / "vae").mkdir()
    index = {"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"]}
    if second_encoder:
        index["text_encoder_2"] = ["transformers", "CLIPTextModelWithProjection"]
    (folder / "model_index.json").write_text(json.dumps(index))
    (folder / "unet" / "config.json").write_text(json.dumps({"in_channels": 4, **unet}))
    (folder / "vae" / "config.json").write_text(json.dumps({"block_out_channels": [128] * vae_blocks}))
    return folder


def write_header_only(path: Path, shapes: dict[str, list[int]]) -> Path:
    """A safetensors file's header (names and shapes) without the tensors: all that is read."""
    header = {
        name: {"dtype": "F16", "shape": shape, "data_offsets": [0, 0]} for name, shape in shapes.items()
    }
    text = json.dumps({"__metadata__": {"format": "pt"}, **header}).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text)
    return path


def test_checkpoint_families_and_native_sizes_come_from_configs_and_headers(tmp_path: Path) -> None:
    root = tmp_path / "models" / "checkpoints"
    sd15 = write_config_folder(root / "sd15", {"sample_size": 64, "cross_attention_dim": 768}, 4, False)
    sd2 = write_config_folder(root / "sd21", {"sample_size": 96, "cross_attention_dim": 1024}, 4, False)
    sdxl = write_config_folder(root / "xl", {"sample_size": 128, "cross_attention_dim": 2048}, 4, True)
    ldm = "model.diffusion_model."
    cross = "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
    single = write_header_only(
        root / "one.safetensors",
        {f"{ldm}input_blocks.0.0.weight": [320, 9, 3, 3], f"{ldm}{cross}": [320, 768]},
    )
    xl_single = write_header_only(
        root / "xl-one.safetensors",
        {
            f"{ldm}input_blocks.0.0.weight": [320, 4, 3, 3],
            f"{ldm}{cross}": [640, 2048],
            f"{ldm}label_emb.0.0.weight": [1280, 2816],
        },
    )
    (root / "broken.safetensors").write_bytes(b"\xff" * 20)
    (root / "old.ckpt").write_bytes(b"pickle")
    assert checkpoint_info(sd15).family == "sd1" and checkpoint_info(sd15).width == 512
    assert (checkpoint_info(sd2).family, checkpoint_info(sd2).height) == ("sd2", 768)
    assert (checkpoint_info(sdxl).family, checkpoint_info(sdxl).width) == ("sdxl", 1024)
    assert checkpoint_info(single) == checkpoint_info(single).__class__("sd1", 512, 512, 9)
    assert (checkpoint_info(xl_single).family, checkpoint_info(xl_single).width) == ("sdxl", 1024)
    for unreadable in ("broken.safetensors", "old.ckpt"):
        assert (checkpoint_info(root / unreadable).family, checkpoint_info(root / unreadable).width) == (
            "unknown",
            512,
        )
    services = Services(paths=ModelPaths((tmp_path / "models",)))
    catalog = ModelCatalog()
    answer = catalog.answer(services)
    assert [c["name"] for c in answer["checkpoints"]] == [
        "broken.safetensors",
        "old.ckpt",
        "one.safetensors",
        "sd15",
        "sd21",
        "xl",
        "xl-one.safetensors",
    ]
    assert answer["defaults"] == {"ckpt_name": "broken.safetensors", "width": 512, "height": 512}
    # a changed config is read again; an unchanged one comes from the cache
    config = sd15 / "unet" / "config.json"
    config.write_text(json.dumps({"in_channels": 4, "sample_size": 96, "cross_attention_dim": 768}))
    os.utime(config, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    again = {c["name"]: c for c in catalog.answer(services)["checkpoints"]}
    assert again["sd15"]["width"] == 768


def test_models_without_checkpoints_default_to_512(tmp_path: Path) -> None:
    answer = ModelCatalog().answer(Services(paths=ModelPaths((tmp_path,))))
    assert answer == {"checkpoints": [], "defaults": {"ckpt_name": None, "width": 512, "height": 512}}


# --- previews -----------------------------------------------------------------------------------------


def preview_flow(batch: int = 2) -> dict[str, Any]:
    return {
        "version": 1,
        "nodes": {
            "img": {"type": "EmptyImage", "inputs": {"width": 8, "height": 6, "batch_size": batch}},
            "show": {"type": "PreviewImage", "inputs": {"images": {"node": "img", "output": "image"}}},
        },
    }


def test_preview_images_are_kept_per_node_and_picture(client: TestClient) -> None:
    job_id = client.post("/api/jobs", json={"workflow": preview_flow()}).json()["id"]
    assert finish(client, job_id)["status"] == "done"
    first = client.get(f"/api/jobs/{job_id}/preview", params={"node": "show"})
    assert first.status_code == 200 and first.headers["content-type"] == "image/png"
    assert first.headers["cache-control"] == "no-store"
    assert first.headers["x-preview-node"] == "show" and first.headers["x-preview-count"] == "2"
    with Image.open(io.BytesIO(first.content)) as picture:
        assert picture.size == (8, 6)
    second = client.get(f"/api/jobs/{job_id}/preview", params={"node": "show", "index": 1})
    assert second.status_code == 200
    assert client.get(f"/api/jobs/{job_id}/preview").headers["x-preview-node"] == "show"  # the latest
    assert "index from 0 to 1" in error_of(client.get(f"/api/jobs/{job_id}/preview?node=show&index=2"), 404)
    assert "no preview of node 'img'" in error_of(client.get(f"/api/jobs/{job_id}/preview?node=img"), 404)
    assert "no job" in error_of(client.get("/api/jobs/nope/preview"), 404)
    # run again: the PreviewImage comes from the cache, and its pictures still come with this job
    again = client.post("/api/jobs", json={"workflow": preview_flow()}).json()["id"]
    assert finish(client, again)["nodes_cached"] == 1  # served whole: its input is not even looked at
    events = client.get(f"/api/jobs/{again}/events").json()
    kinds = [entry["event"] for entry in events]
    assert kinds[-3:] == ["run_finished", "node_preview", "job_finished"]
    assert client.get(f"/api/jobs/{again}/preview?node=show&index=1").status_code == 200


def test_a_job_without_previews_answers_404(client: TestClient) -> None:
    job_id = client.post("/api/jobs", json={"workflow": noise_flow("plain")}).json()["id"]
    finish(client, job_id)
    assert "has no preview" in error_of(client.get(f"/api/jobs/{job_id}/preview"), 404)


def test_the_preview_store_is_bounded() -> None:
    store = PreviewStore(max_bytes=100, max_jobs=3)
    for n in range(5):
        store.put(f"job{n}", "a", [b"x" * 10])
    assert store.get("job0") is None and store.get("job1") is None and store.get("job4") == ("a", [b"x" * 10])
    store.put("job4", "b", [b"y" * 45, b"z" * 45])  # over the bytes: older jobs go first
    assert store.get("job2") is None and store.get("job3") is None
    assert store.get("job4", "a") == ("a", [b"x" * 10]) and store.size == 100
    store.put("job4", "c", [b"w" * 60])  # then this job's older nodes
    assert store.get("job4", "a") is None and store.get("job4", "b") is None and store.size == 60
    store.put("job4", "c", [b"v" * 80, b"u" * 80])  # a batch over the bound keeps its first picture
    assert store.get("job4") == ("c", [b"v" * 80]) and store.size == 80


def test_a_sampler_sends_its_preview_up_to_the_last_step(client: TestClient, jobs: JobQueue) -> None:
    """The bundled toy model: a live preview at every step, the last one included."""
    flow = example("txt2img")
    flow["nodes"]["s"]["inputs"].update(steps=3, preview=True)
    job_id = client.post("/api/jobs", json={"workflow": flow, "source": "ui"}).json()["id"]
    jobs.wait(job_id, 10 * WAIT)  # the first load of the model (and of torch) may take a while
    done = finish(client, job_id)
    assert done["status"] == "done" and done["source"] == "ui"
    events = client.get(f"/api/jobs/{job_id}/events").json()
    steps = [e["step"] for e in events if e["event"] == "node_progress" and e["node_id"] == "s"]
    previews = [i for i, e in enumerate(events) if e["event"] == "node_preview" and e["node_id"] == "s"]
    assert steps == [1, 2, 3] and len(previews) == 3
    last_step = max(i for i, e in enumerate(events) if e["event"] == "node_progress")
    assert previews[-1] > last_step  # the preview of the last step comes after it
    answer = client.get(f"/api/jobs/{job_id}/preview", params={"node": "s"})
    assert answer.status_code == 200 and answer.headers["x-preview-count"] == "1"
    (saved,) = [e for e in events if e["event"] == "node_finished" and e["node_id"] == "save"]
    assert saved["files"] == done["outputs"] == ["txt2img_00001.png"]  # relative to the output folder
    assert client.get(f"/api/files/{saved['files'][0]}").status_code == 200


# --- summaries ------------------------------------------------------------------------------------------


def labelled_flow(prompt: str) -> dict[str, Any]:
    return {
        "version": 1,
        "nodes": {
            "empty": {"type": "String", "inputs": {"value": "   "}},
            "text": {"type": "String", "inputs": {"value": prompt}},
            "noise": {"type": "NoiseFromSeed", "inputs": {"seed": 77, "size": 2}},
            "noise2": {"type": "NoiseFromSeed", "inputs": {"seed": 5, "size": 2}},
            "show": {"type": "ShowValue", "inputs": {"value": {"node": "text", "output": "value"}}},
            "save": {"type": "PreviewImage", "inputs": {"images": {"node": "noise", "output": "image"}}},
            "slow": {"type": "Sleep", "inputs": {"steps": 2000, "seconds_per_step": 0.005}},
            "wait": {"type": "ShowValue", "inputs": {"value": {"node": "slow", "output": "value"}}},
        },
        "metadata": {"name": "Label test"},
    }


def test_summaries_carry_name_prompt_and_seeds(client: TestClient) -> None:
    long_prompt = "a red circle " * 40
    job_id = client.post("/api/jobs", json={"workflow": labelled_flow(long_prompt), "source": "ui"}).json()[
        "id"
    ]
    wait_progress(client, job_id)
    (running,) = client.get("/api/queue").json()["running"]
    assert running["name"] == "Label test" and running["seeds"] == {"noise": 77, "noise2": 5}
    assert len(running["prompt"]) <= 300 and running["prompt"].endswith("circle…")
    assert running["prompt"].startswith("a red circle a red circle")
    client.post(f"/api/jobs/{job_id}/cancel")
    ended = finish(client, job_id)
    assert (ended["name"], ended["seeds"], ended["prompt"]) == (
        running["name"],
        running["seeds"],
        running["prompt"],
    )
    (listed,) = client.get("/api/history").json()["jobs"]
    assert (listed["name"], listed["seeds"], listed["prompt"], listed["source"]) == (
        "Label test",
        {"noise": 77, "noise2": 5},
        running["prompt"],
        "ui",
    )
    plain = client.post("/api/jobs", json={"workflow": sleep_flow(steps=1)}).json()["id"]
    finish(client, plain)
    row = client.get(f"/api/jobs/{plain}").json()
    assert (row["name"], row["prompt"], row["seeds"], row["source"]) == (None, None, {}, "api")


def test_a_muted_prompt_is_not_the_jobs_prompt(registry: Registry) -> None:
    from server.summaries import workflow_labels

    flow = labelled_flow("shown")
    flow["nodes"] = {
        "muted": {"type": "String", "inputs": {"value": "hidden"}, "mode": "mute"},
        **flow["nodes"],
    }
    assert workflow_labels(flow, registry)["prompt"] == "shown"
    assert workflow_labels(json.dumps(flow), registry)["name"] == "Label test"
    assert workflow_labels("not json", registry) == {"name": None, "prompt": None, "seeds": {}}


def test_a_job_source_is_api_or_ui(client: TestClient) -> None:
    assert "source must be" in error_of(
        client.post("/api/jobs", json={"workflow": noise_flow("x"), "source": "x"}), 400
    )
