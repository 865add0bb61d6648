"""What node packs share: model folders and the model manager of a run, fingerprints of model
files, prompt encoding with embeddings, progress reporting, and the inputs every sampler declares.

The model folders and the manager are the run's services (``ctx.services``, see
models/services.py), handed in by whoever runs the workflow; nothing here reaches for them.

Packs import these from here, not from one another: a pack is a set of nodes, not a library.
torch and the model code are imported inside the functions only, so listing and validating
nodes stays fast.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from models.paths import ModelPaths
from models.services import Services
from nodes import types as T
from nodes.base import Context, Input, NodeInputError, RunSettings

#: The samplers the Sampler nodes offer (models/sampling.py runs them).
SAMPLER_NAMES = (
    "euler",
    "heun",
    "euler_ancestral",
    "ddim",
    "ddpm",
    "dpmpp_2m",
    "dpmpp_2m_karras",
    "unipc",
    "lcm",
    "pndm",
)
#: Seeds stay below 2**53 so they survive a round trip through JavaScript (and JSON).
SEED_MAX = 2**53 - 1

#: Inputs every sampling node has, declared once.
SEED = Input("seed", T.INT, default=0, min=0, max=SEED_MAX)
STEPS = Input("steps", T.INT, default=20, min=1, max=1000)
CFG = Input("cfg", T.FLOAT, default=7.5, min=0.0, max=100.0, step=0.1)
PREVIEW = Input(
    "preview",
    T.BOOLEAN,
    default=True,
    accepts="constant",
    description="Send a rough preview of the latents after each step.",
)


def model_paths(ctx: Context) -> ModelPaths:
    """The model folders of the run (its services' paths)."""
    return ctx.services.paths


def model_choices(kind: str) -> Callable[[Services], list[str]]:
    """A choices function listing the models of ``kind`` in the services' folders, read afresh
    each time (files come and go)."""

    def choices(services: Services) -> list[str]:
        return services.paths.list(kind)

    choices.__qualname__ = choices.__name__ = f"{kind}_choices"
    return choices


def model_input(name: str, kind: str, description: str) -> Input:
    """A loader's input naming a model file or folder of ``kind``, chosen from those on disk."""
    return Input(name, T.STRING, choices=model_choices(kind), accepts="constant", description=description)


def find_model(
    ctx: Context, kind: str, input_name: str, name: str, where: str = "", what: str = "the file"
) -> Path:
    """The path of model ``name`` of ``kind`` in the run's model folders, or a NodeInputError on
    ``input_name`` saying where to put it (``where``: the folders in words, ``models/<kind>`` by
    default)."""
    path = model_paths(ctx).find(kind, name)
    if path is None:
        raise NodeInputError(input_name, f"{name!r} is not in {where or 'models/' + kind}; put {what} there")
    return path


def file_state(path: Path) -> str:
    """Size and modification time of a file (newest time and count of a folder's files)."""
    if path.is_dir():
        stamps = [p.stat().st_mtime_ns for p in path.rglob("*") if p.is_file()]
        return f"dir:{max(stamps, default=0)}:{len(stamps)}"
    stat = path.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def model_fingerprint(settings: RunSettings, kind: str, name: Any) -> str:
    """A loader's fingerprint: the size and time of the model it names (in the run's model
    folders), so an edited file reloads."""
    path = settings.services.paths.find(kind, str(name or ""))
    return file_state(path) if path is not None else "missing"


def manager_of(ctx: Context) -> Any:
    """The run's model manager (its services', shared by every run handed the same services)."""
    return ctx.services.models()


def checkpoint_for(ref: Any, ctx: Context) -> Any:
    """The checkpoint a MODEL or CLIP stands for: its checkpoint with the models merged into it
    (ModelMerge*/CLIPMerge*, in order: see models/merge.py), then its LoRAs fused. Each result is
    shared in the manager under a key of everything that made it; the cached originals are
    never changed."""
    from models.loading import with_loras
    from models.merge import merged_checkpoint, merged_key

    manager = manager_of(ctx)

    def after_merges(model: Any) -> Any:
        merges = getattr(model, "merges", ())
        if not merges:
            return model.checkpoint.get()
        so_far = model.with_(merges=merges[:-1], loras=())
        other, step = merges[-1]
        return manager.get(
            merged_key(model),
            lambda: merged_checkpoint(after_merges(so_far), checkpoint_for(other, ctx), step),
        )

    if not ref.loras:
        return after_merges(ref)
    loras = [
        (Path(path), unet_strength, clip_strength) for path, unet_strength, clip_strength, _ in ref.loras
    ]
    key = (merged_key(ref), "loras", ref.loras)
    return manager.get(key, lambda: with_loras(after_merges(ref), loras, manager.allow_pickle))


def lora_entry(
    ctx: Context, lora_name: str, strength_model: float, strength_clip: float
) -> tuple[str, float, float, str]:
    """The ``loras`` entry of a MODEL or CLIP for a LoRA file (LoraLoader's; LoraLoaderModelOnly's
    with no text part): its path, strengths and file state, checked to be loadable."""
    from models.safety import check_weights_file

    path = find_model(ctx, "loras", "lora_name", lora_name)
    try:
        check_weights_file(path, manager_of(ctx).allow_pickle)
    except Exception as exc:  # noqa: BLE001 - PickleRefused, said in plain words
        raise NodeInputError("lora_name", str(exc)) from None
    return (str(path.resolve()), float(strength_model), float(strength_clip), file_state(path))


def latent_preview(latents: Any) -> np.ndarray:
    """A quick look at latents: the first three channels, stretched to [0, 1]."""
    first = latents[:1, :3].float()
    low, high = first.amin(), first.amax()
    picture = ((first - low) / (high - low + 1e-6)).permute(0, 2, 3, 1).numpy()
    if picture.shape[-1] < 3:
        picture = np.repeat(picture[..., :1], 3, axis=-1)
    return picture.astype(np.float32)


def step_reporter(ctx: Context, preview: bool = False) -> Any:
    """A sampler callback: progress (which also checks cancellation) and, if asked, a latent preview."""

    def on_step(step: int, total: int, latents: Any) -> None:
        ctx.progress(step, total)
        if preview:
            ctx.preview(latent_preview(latents.to("cpu")))

    return on_step


def sampling_job(ctx: Context, model: Any, positive: Any, negative: Any, latent: Any, **settings: Any) -> Any:
    """A SampleJob for ``model`` on this run's device, with its ModelSamplingDiscrete overrides
    applied; ``settings`` are the job's sampling fields (seed, steps, cfg, sampler, ...) and
    ``preview``."""
    from models.sampling import SampleJob
    from models.schedules import scheduler_config

    checkpoint = checkpoint_for(model, ctx)
    manager = manager_of(ctx)
    preview = settings.pop("preview", False)
    if getattr(model, "skip_layers", None) is not None:  # SD3.5 skip-layer guidance (nodes/dit.py)
        settings["extra"] = {**settings.get("extra", {}), "skip_layers": model.skip_layers}
    if getattr(model, "image_prompts", ()):  # IP-Adapter image prompts (nodes/ip_adapter.py)
        settings["extra"] = {**settings.get("extra", {}), "image_prompts": model.image_prompts}
    if getattr(model, "attend_excite", None) is not None:  # Attend-and-Excite (nodes/attend_excite.py)
        settings["extra"] = {**settings.get("extra", {}), "attend_excite": model.attend_excite}
    if getattr(model, "differential", None) is not None:  # DifferentialDiffusion (nodes/diffusion.py)
        settings["extra"] = {**settings.get("extra", {}), "differential_diffusion": model.differential}
    if getattr(model, "hypernetworks", ()):  # HypernetworkLoader (nodes/model_ops.py)
        patches = tuple((patch.weights(), patch.strength) for patch in model.hypernetworks)
        settings["extra"] = {**settings.get("extra", {}), "hypernetworks": patches}
    return SampleJob(
        unet=checkpoint.unet,
        scheduler_config=scheduler_config(checkpoint.scheduler_config, model.sampling),
        positive=positive,
        negative=negative,
        latent=latent,
        family=checkpoint.family,
        vae_scale=checkpoint.vae_scale,
        device=manager.device,
        dtype=manager.dtype,
        on_step=step_reporter(ctx, preview),
        **settings,
    )


def empty_latent(width: int, height: int, batch_size: int, vae: Any, channels: int) -> Any:
    """A blank Latent for a picture of ``width`` x ``height``: ``channels`` at 1/8 of the size, or the
    channels and scale of ``vae`` when one is connected (EmptyLatent, EmptySD3LatentImage)."""
    import torch

    from models.values import Latent
    from nodes.limits import check_pixel_budget

    check_pixel_budget("batch_size", batch_size, height, width)  # what VAEDecode will make of it
    scale = 8
    if vae is not None:
        model = vae.get()
        scale = 2 ** (len(model.config.block_out_channels) - 1)
        channels = int(model.config.latent_channels)
    if width % scale or height % scale:
        raise NodeInputError(
            "width" if width % scale else "height", f"must be a multiple of {scale} for this VAE"
        )
    return Latent(torch.zeros(batch_size, channels, height // scale, width // scale))


# --- prompts ---------------------------------------------------------------------------------------


def embedding_files(paths: ModelPaths) -> dict[str, Path]:
    """Embeddings in ``paths`` by name (file name without suffix)."""
    from models.embeddings import SUFFIXES

    files = {}
    for name in paths.list("embeddings"):
        path = paths.find("embeddings", name)
        if path is not None and path.suffix in SUFFIXES:
            files.setdefault(path.stem, path)
    return files


def bundled_embeddings(clip: Any) -> dict[str, Any]:
    """The embeddings that the LoRAs applied to ``clip`` bundle (``bundle_emb.NAME.*``), by name; a
    later LoRA's before an earlier one's."""
    from models.embeddings import Bundled, bundled_names

    found: dict[str, Any] = {}
    for entry in clip.loras:
        path = Path(entry[0])
        found.update({name: Bundled(path, name) for name in bundled_names(path)})
    return found


def embedding_state(source: Any) -> str:
    """file_state of an embedding's file, or of the LoRA file that bundles it."""
    return file_state(source if isinstance(source, Path) else source.path)


def embeddings_fingerprint(
    inputs: Mapping[str, Any], text_inputs: tuple[str, ...], settings: RunSettings
) -> str | None:
    """The state of the embedding files that the prompts in ``text_inputs`` name (a prompt node's
    fingerprint: a retrained embedding is a new result); None when a text is not known yet."""
    from models.embeddings import find_names

    texts = [inputs.get(name) for name in text_inputs]
    if not all(isinstance(text, str) for text in texts):
        return None
    files = embedding_files(settings.services.paths)
    names = sorted({n for text in texts for n in find_names(text, files)})
    return ",".join(f"{n}:{file_state(files[n])}" for n in names) or None


def prompt_encoders(ctx: Context, clip: Any, texts: list[str], input_name: str) -> tuple[Any, ...]:
    """(checkpoint, tokenizers, encoders, texts) for ``clip``, with the embeddings the texts name
    added to copies of the tokenizers and encoders, and the texts expanded for them; a bad or
    refused embedding file is an error of ``input_name``."""
    from models.embeddings import EmbeddingError, expand, find_names, with_embeddings
    from models.merge import model_key
    from models.safety import PickleRefused

    checkpoint = checkpoint_for(clip, ctx)
    manager = manager_of(ctx)
    tokenizers, encoders = checkpoint.tokenizers, checkpoint.text_encoders
    # a LoRA's bundled embeddings before the embeddings folder's files of the same name
    files = embedding_files(model_paths(ctx)) | bundled_embeddings(clip)
    names = sorted({n for text in texts for n in find_names(text, files)})
    if names:
        used = {n: files[n] for n in names}
        key = (
            model_key(clip),  # the checkpoint with its merges and LoRAs
            "embeddings",
            tuple((n, embedding_state(p)) for n, p in used.items()),
        )
        try:
            tokenizers, encoders, expansions = manager.get(
                key, lambda: with_embeddings(tokenizers, encoders, used, manager.allow_pickle)
            )
        except (EmbeddingError, PickleRefused) as exc:
            raise NodeInputError(input_name, str(exc)) from None
        texts = [expand(text, expansions) for text in texts]
    return checkpoint, tokenizers, encoders, texts


def encode_prompt(ctx: Context, clip: Any, text: str, input_name: str = "text") -> Any:
    """The conditioning (a ``Cond``) of one prompt for every encoder of ``clip``: what
    CLIPTextEncode gives; ``(word:1.3)`` weights words, embeddings are used by name."""
    from models.prompts import LayerError, encode_texts
    from models.values import Cond

    checkpoint, tokenizers, encoders, (text,) = prompt_encoders(ctx, clip, [text], input_name)
    try:
        embeds, pooled = encode_texts(
            checkpoint.family,
            tokenizers,
            encoders,
            [text] * len(encoders),
            layer=clip.layer,
            device=manager_of(ctx).device,
            roles=checkpoint.extra.get("encoders"),
        )
    except LayerError as exc:
        raise NodeInputError("clip", f"its stop_at_clip_layer {exc}") from None
    return Cond(embeds, pooled=pooled)
