"""Hypernetworks (HypernetworkLoader): A1111-style MLPs on the keys and values of the attention layers.

Oracle: diffusers' StableDiffusionPipeline with the same tiny model and seed, its UNet's ``to_k`` /
``to_v`` inputs changed by forward pre-hooks that this test writes from ComfyUI's formula
(``k + strength * mlp_k(k)``, ``v + strength * mlp_v(v)`` on every attn1/attn2 whose input width
has an MLP pair), computed with plain tensor operations from the file's raw weights. Our workflow
(CheckpointLoader, HypernetworkLoader, CLIPTextEncode, Sampler, VAEDecode) must draw the same image
to uint8 rounding.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.manager import ModelManager
from tests.helpers import as_uint8, link, run_graph

SIZE = 64  # 8 x 8 latents
STEPS = 3
PROMPT = "a red circle at the top left"
CORPUS = (
    Path(__file__).resolve().parent
    / "data"
    / "comfy"
    / "corpus"
    / "comfyui_examples"
    / "hypernetworks__hypernetwork_example.png"
)

#: Per width: (key MLP, value MLP) states as A1111 names them; ``norm`` adds LayerNorms after each linear.
State = dict[int, list[dict[str, torch.Tensor]]]


def random_state(widths: tuple[int, ...], seed: int, norm: bool = False) -> State:
    """A hypernetwork with layer structure (1, 2, 1): width -> 2 width -> width, random weights."""
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape: int, scale: float) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * scale

    state: State = {}
    for width in widths:
        pair = []
        for _ in range(2):
            mlp = {
                "linear.0.weight": randn(2 * width, width, scale=0.4),
                "linear.0.bias": randn(2 * width, scale=0.1),
            }
            second = "linear.3" if norm else "linear.2"  # A1111's indices: activation (and norm) between
            mlp[f"{second}.weight"] = randn(width, 2 * width, scale=0.4)
            mlp[f"{second}.bias"] = randn(width, scale=0.1)
            if norm:
                mlp["linear.2.weight"] = 1 + randn(2 * width, scale=0.1)
                mlp["linear.2.bias"] = randn(2 * width, scale=0.1)
                mlp["linear.5.weight"] = 1 + randn(width, scale=0.1)
                mlp["linear.5.bias"] = randn(width, scale=0.1)
            pair.append(mlp)
        state[width] = pair
    return state


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SD 1.x (attention widths 64 self, 32 text) and hypernetworks for it: relu as safetensors,
    tanh with LayerNorms as an A1111 ``.pt``, and files that are not hypernetworks."""
    from safetensors.torch import save_file

    from models.hypernetwork import save_safetensors
    from tests.fixtures.tiny_models import save_tiny_sd_folder

    base = tmp_path_factory.mktemp("hypernetwork")
    models = base / "models"
    save_tiny_sd_folder(models / "checkpoints" / "tiny-sd")
    folder = models / "hypernetworks"
    folder.mkdir(parents=True)
    save_safetensors(
        random_state((32, 64, 320), seed=1), {"activation_func": "relu"}, folder / "relu.safetensors"
    )
    a1111 = {
        **random_state((32, 64), seed=2, norm=True),
        "activation_func": "tanh",
        "is_layer_norm": True,
        "use_dropout": True,
        "layer_structure": [1, 2, 1],
        "name": "a1111",
        "step": 1000,
    }
    torch.save(a1111, folder / "a1111.pt")
    save_file({"weight": torch.zeros(2, 2)}, str(folder / "not-a-hypernetwork.safetensors"))
    save_safetensors(random_state((32,), seed=3), {"activation_func": "gelu"}, folder / "gelu.safetensors")
    save_safetensors(random_state((48,), seed=4), {}, folder / "other-model.safetensors")
    return base


@pytest.fixture(scope="module")
def manager() -> ModelManager:
    return ModelManager(device="cpu")


@pytest.fixture(scope="module")
def pickle_manager() -> ModelManager:
    return ModelManager(device="cpu", allow_pickle=True)


def graph(hypernetworks: list[tuple[str, float]]) -> dict[str, Any]:
    nodes: dict[str, Any] = {
        "ck": {"type": "CheckpointLoader", "inputs": {"ckpt_name": "tiny-sd"}},
        "pos": {"type": "CLIPTextEncode", "inputs": {"clip": link("ck", "clip"), "text": PROMPT}},
        "neg": {"type": "CLIPTextEncode", "inputs": {"clip": link("ck", "clip"), "text": "blurry"}},
        "lat": {"type": "EmptyLatent", "inputs": {"width": SIZE, "height": SIZE, "vae": link("ck", "vae")}},
    }
    model = link("ck", "model")
    for index, (name, strength) in enumerate(hypernetworks):
        nodes[f"hn{index}"] = {
            "type": "HypernetworkLoader",
            "inputs": {"model": model, "hypernetwork_name": name, "strength": strength},
        }
        model = link(f"hn{index}", "model")
    nodes["s"] = {
        "type": "Sampler",
        "inputs": {
            "model": model,
            "positive": link("pos", "conditioning"),
            "negative": link("neg", "conditioning"),
            "latent": link("lat", "latent"),
            "seed": 42,
            "steps": STEPS,
            "cfg": 7.5,
            "sampler": "euler",
        },
    }
    nodes["d"] = {"type": "VAEDecode", "inputs": {"vae": link("ck", "vae"), "latent": link("s", "latent")}}
    nodes["show"] = {"type": "PreviewImage", "inputs": {"images": link("d", "image")}}
    return nodes


def drawn(nodes: dict[str, Any], root: Path, manager: ModelManager, extra_nodes: tuple = ()) -> np.ndarray:
    result = run_graph(nodes, root / "models", manager, work=root, extra_nodes=extra_nodes)
    assert result.status == "done", result.error
    return as_uint8(result.outputs["show"]["images"])


def failure(nodes: dict[str, Any], root: Path, manager: ModelManager) -> str:
    result = run_graph(nodes, root / "models", manager, work=root)
    assert result.status == "failed"
    return str(result.error)


def max_difference(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(int) - b.astype(int)).max())


# --------------------------------------------------------------------------- the oracle


def reference_mlp(
    state: dict[str, torch.Tensor], activation: Callable[[torch.Tensor], torch.Tensor], norm: bool
) -> Callable[[torch.Tensor], torch.Tensor]:
    """ComfyUI's MLP by hand: the ``.weight`` entries in layer order; a 2-d one is a linear layer, then the
    activation unless it is the last entry of all (with LayerNorms the last entry is a norm, so every
    linear is activated), then the next entry as a LayerNorm when ``norm``."""
    names = sorted(
        (k[: -len(".weight")] for k in state if k.endswith(".weight")), key=lambda n: int(n.split(".")[1])
    )

    def run(x: torch.Tensor) -> torch.Tensor:
        i = 0
        while i < len(names):
            w, b = state[names[i] + ".weight"], state[names[i] + ".bias"]
            x = x @ w.T + b
            if i != len(names) - 1:
                x = activation(x)
            if norm:
                i += 1
                nw, nb = state[names[i] + ".weight"], state[names[i] + ".bias"]
                x = F.layer_norm(x, (nw.shape[0],), nw, nb, eps=1e-5)
            i += 1
        return x

    return run


def oracle(
    root: Path, patches: list[tuple[State, Callable[[torch.Tensor], torch.Tensor], bool, float]]
) -> np.ndarray:
    """The pipeline's image with each (state, activation, norm, strength) hypernetwork hooked in by hand."""
    from diffusers import StableDiffusionPipeline

    from models.sampling import make_scheduler

    pipe = StableDiffusionPipeline.from_pretrained(
        str(root / "models" / "checkpoints" / "tiny-sd"), local_files_only=True, safety_checker=None
    )
    pipe.scheduler = make_scheduler("euler", pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    hook_hypernetworks(pipe.unet, patches)
    out = pipe(
        prompt=PROMPT,
        negative_prompt="blurry",
        num_inference_steps=STEPS,
        guidance_scale=7.5,
        height=SIZE,
        width=SIZE,
        generator=torch.Generator().manual_seed(42),
        output_type="np",
    )
    return as_uint8(out.images)


def hook_hypernetworks(
    unet: Any, patches: list[tuple[State, Callable[[torch.Tensor], torch.Tensor], bool, float]]
) -> None:
    """Change the inputs of ``unet``'s attn1/attn2 ``to_k`` / ``to_v`` by hand (forward pre-hooks)."""
    from diffusers.models.attention_processor import Attention

    for name, module in unet.named_modules():
        if not (isinstance(module, Attention) and name.split(".")[-1] in ("attn1", "attn2")):
            continue
        for projection, index in ((module.to_k, 0), (module.to_v, 1)):
            width = projection.in_features
            chain = [
                (reference_mlp(state[width][index], act, norm), strength)
                for state, act, norm, strength in patches
                if width in state
            ]

            def hook(_: Any, args: tuple[torch.Tensor, ...], chain: list = chain) -> tuple[torch.Tensor, ...]:
                x = args[0]
                for mlp, strength in chain:
                    x = x + mlp(x) * strength
                return (x, *args[1:])

            projection.register_forward_pre_hook(hook)


def relu_state() -> State:
    return random_state((32, 64, 320), seed=1)


def a1111_state() -> State:
    return random_state((32, 64), seed=2, norm=True)


# --------------------------------------------------------------------------- against the oracle


def test_a_safetensors_hypernetwork_draws_what_comfyuis_formula_draws(
    root: Path, manager: ModelManager
) -> None:
    ours = drawn(graph([("relu.safetensors", 0.8)]), root, manager)
    theirs = oracle(root, [(relu_state(), torch.relu, False, 0.8)])
    assert max_difference(ours, theirs) <= 1  # uint8 rounding
    plain = oracle(root, [])
    assert max_difference(ours, plain) > 8, "the hypernetwork should change the picture visibly"


def test_strength_zero_is_the_model_itself_exactly(root: Path, manager: ModelManager) -> None:
    plain = drawn(graph([]), root, manager)
    assert np.array_equal(drawn(graph([("relu.safetensors", 0.0)]), root, manager), plain)
    assert max_difference(plain, oracle(root, [])) <= 1


def test_an_a1111_pickle_with_layer_norms_loads_with_the_opt_in(
    root: Path, pickle_manager: ModelManager
) -> None:
    ours = drawn(graph([("a1111.pt", 1.0)]), root, pickle_manager)
    theirs = oracle(root, [(a1111_state(), torch.tanh, True, 1.0)])
    assert max_difference(ours, theirs) <= 1


def test_chained_hypernetworks_apply_in_order(root: Path, pickle_manager: ModelManager) -> None:
    ours = drawn(graph([("relu.safetensors", 0.5), ("a1111.pt", -0.7)]), root, pickle_manager)
    theirs = oracle(root, [(relu_state(), torch.relu, False, 0.5), (a1111_state(), torch.tanh, True, -0.7)])
    assert max_difference(ours, theirs) <= 1


def test_a_hypernetwork_composes_with_an_ip_adapter(root: Path, manager: ModelManager) -> None:
    """HypernetworkLoader before IPAdapter: the text keys and values are bent, the image ones are the
    adapter's own; the same as the IP-Adapter pipeline with the hooks."""
    import shutil

    from tests import test_ip_adapter as ip
    from tests.fixtures.tiny_clip_vision import EMBED_DIM, save_comfy_clip_vision, tiny_vision_tower
    from tests.fixtures.tiny_ip_adapter import save_adapter, standard_adapter

    models = root / "models"
    save_comfy_clip_vision(tiny_vision_tower(), models / "clip_vision" / "tiny-vision.safetensors")
    save_adapter(
        standard_adapter(pipeline_unet(root), EMBED_DIM, seed=1),
        models / "ipadapter" / "ip-adapter_sd15.safetensors",
    )
    (root / "inputs").mkdir(exist_ok=True)
    try:
        side = ip.TOWER["image_size"]
        shapes = ip.Image.open(ip.REPO / "workflows" / "assets" / "shapes.png").convert("RGB")
        shapes.resize((side, side), ip.Image.BICUBIC).save(root / "inputs" / ip.PICTURES[0])
        shapes.save(root / "inputs" / ip.PICTURES[1])
        nodes = ip.graph("tiny-sd", [{"file": "ip-adapter_sd15.safetensors", "weight": 0.8}])
        nodes["hn"] = {
            "type": "HypernetworkLoader",
            "inputs": {
                "model": link("ck", "model"),
                "hypernetwork_name": "relu.safetensors",
                "strength": 0.8,
            },
        }
        nodes["ipa0"]["inputs"]["model"] = link("hn", "model")
        ours = drawn(nodes, root, manager, (ip.StackImages,))
        pipe = ip.oracle(root, "StableDiffusionPipeline", "tiny-sd", ["ip-adapter_sd15.safetensors"], [0.8])
        hook_hypernetworks(pipe.unet, [(relu_state(), torch.relu, False, 0.8)])
        assert max_difference(ours, ip.oracle_draw(pipe, [ip.picture(root, 0)])) <= 1
        alone = ip.graph("tiny-sd", [{"file": "ip-adapter_sd15.safetensors", "weight": 0.8}])
        without = drawn(alone, root, manager, (ip.StackImages,))
        assert max_difference(ours, without) > 8
    finally:
        for folder in ("clip_vision", "ipadapter"):
            shutil.rmtree(models / folder)


def pipeline_unet(root: Path) -> Any:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_pretrained(str(root / "models" / "checkpoints" / "tiny-sd" / "unet"))


# --------------------------------------------------------------------------- the shared UNet


def test_the_cached_unet_is_never_changed(root: Path, manager: ModelManager) -> None:
    """The view wraps the view's projections only; the UNet keeps its modules, processors and weights,
    and a plain run after a hypernetwork run draws the plain picture."""
    from models.hypernetwork import HyperProjection, attention_layers, hypernetwork_view, load_hypernetwork

    before = drawn(graph([]), root, manager)
    drawn(graph([("relu.safetensors", 1.0)]), root, manager)
    assert np.array_equal(drawn(graph([]), root, manager), before)

    unet = pipeline_unet(root)
    weights = {k: v.clone() for k, v in unet.state_dict().items()}
    processors = dict(unet.attn_processors)
    hn = load_hypernetwork(root / "models" / "hypernetworks" / "relu.safetensors")
    view = hypernetwork_view(unet, [(hn, 1.0)], "cpu", torch.float32)
    assert all(isinstance(m.to_k, HyperProjection) for _, m in attention_layers(view))
    assert all(isinstance(m.to_k, torch.nn.Linear) for _, m in attention_layers(unet))
    assert unet.attn_processors == processors
    assert all(torch.equal(weights[k], v) for k, v in unet.state_dict().items())
    shared = dict(view.named_parameters())
    assert (
        shared["mid_block.attentions.0.transformer_blocks.0.attn1.to_q.weight"]
        is dict(unet.named_parameters())["mid_block.attentions.0.transformer_blocks.0.attn1.to_q.weight"]
    ), "the view shares the weights"
    assert hypernetwork_view(unet, [(hn, 0.0)], "cpu", torch.float32) is unet


# --------------------------------------------------------------------------- refusals


def test_a_pickle_is_refused_without_the_opt_in(root: Path, manager: ModelManager) -> None:
    message = failure(graph([("a1111.pt", 1.0)]), root, manager)
    assert "hypernetwork_name" in message and "pickle" in message and "--allow-pickle" in message
    assert "weights_only=True" in message and ".safetensors" in message


def test_code_in_a_hypernetwork_pickle_never_runs(tmp_path: Path) -> None:
    """With the opt-in the file is read weights-only: a pickle that would run code is refused unread."""
    from models.hypernetwork import load_hypernetwork
    from models.safety import UnsafeOrBrokenFile
    from tests.test_pickle_refusal import RunsCode

    marker = tmp_path / "MARKER"
    torch.save({32: [{}, {}], "payload": RunsCode(marker)}, tmp_path / "evil.pt")
    with pytest.raises(UnsafeOrBrokenFile, match="more than tensors"):
        load_hypernetwork(tmp_path / "evil.pt", allow_pickle=True)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("file", "words"),
    [
        ("not-a-hypernetwork.safetensors", ["not a hypernetwork", "width"]),
        ("gelu.safetensors", ["'gelu'", "not supported", "relu"]),
        ("other-model.safetensors", ["48", "match none", "another model"]),
    ],
)
def test_files_that_are_not_usable_hypernetworks_are_refused(
    root: Path, manager: ModelManager, file: str, words: list[str]
) -> None:
    message = failure(graph([(file, 1.0)]), root, manager)
    assert "hypernetwork_name" in message
    for word in words:
        assert word in message


def test_a_wrong_shape_is_refused_in_words() -> None:
    from models.hypernetwork import HypernetworkError, hypernetwork_from

    state = random_state((32,), seed=5)
    state[32][1]["linear.2.weight"], state[32][1]["linear.2.bias"] = torch.zeros(16, 64), torch.zeros(16)
    with pytest.raises(HypernetworkError, match="gives 16 features, not 32"):
        hypernetwork_from(state, {}, "bad.safetensors")


# --------------------------------------------------------------------------- ComfyUI import


def test_comfyuis_hypernetwork_example_imports_as_our_node() -> None:
    from cli.comfy import convert
    from comfy_import.files import read_file

    result = convert(read_file(CORPUS), CORPUS.name)
    assert result.complete and result.warnings == []
    nodes = result.workflow["nodes"]
    assert nodes["10"]["type"] == "HypernetworkLoader"
    assert nodes["10"]["inputs"] == {
        "model": link("4", "model"),
        "hypernetwork_name": "dantionMarbleStatues_10.pt",
        "strength": 1,
    }
    assert nodes["3"]["inputs"]["model"] == link("10", "model")
