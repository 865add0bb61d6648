"""The training loop shared by both kinds: noise prediction on the concept's pictures (SD's own
objective, on latents of the frozen VAE), DreamBooth's prior loss on class pictures when asked,
and only the LoRA layers or the new token rows learning. Batches and noise depend only on the seed
and the step, so a run is repeatable."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from models.embeddings import BUNDLE_PREFIX
from training.concept.config import ConceptConfig, ConceptError, ConceptResult, StepReport, check_config
from training.concept.data import Example, check_pictures, read_examples, shifted
from training.concept.lora_file import (
    TEXT_TARGETS,
    UNET_TARGET_SETS,
    add_lora,
    kohya_state,
    lora_metadata,
)
from training.concept.prior import class_examples
from training.concept.tokens import NewTokens, add_tokens, check_token, expand_token, names_token

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@dataclass
class Encoded:
    """Pictures as latent distributions (mean, std) and captions as token ids."""

    mean: torch.Tensor  # (n, c, h, w)
    std: torch.Tensor
    ids: torch.Tensor  # (n, 77)


def train_concept(
    config: ConceptConfig,
    on_step: Callable[[StepReport], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> ConceptResult:
    """Train the concept and write ``config.out``; see :class:`ConceptConfig`. When ``should_stop()``
    turns true or ``max_minutes`` pass, what was learnt so far is saved and ``stopped`` is True.
    ``config.threads`` holds only while it trains: a studio worker that runs other jobs after it
    gets its own thread count back."""
    check_config(config)
    check_pictures(Path(config.images))
    threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(int(config.threads))
    try:
        return _train(config, on_step, should_stop)
    finally:
        torch.set_num_threads(threads)


def _train(
    config: ConceptConfig,
    on_step: Callable[[StepReport], None] | None,
    should_stop: Callable[[], bool] | None,
) -> ConceptResult:
    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    checkpoint = _load(config, device)
    resolution = config.resolution or int(checkpoint.unet.config.sample_size) * checkpoint.vae_scale
    examples = read_examples(Path(config.images), resolution, config.token)
    tokenizer, encoder, unet = checkpoint.tokenizers[0], checkpoint.text_encoders[0], checkpoint.unet

    torch.manual_seed(config.seed)
    new_tokens: NewTokens | None = None
    if config.kind == "embedding":
        new_tokens = add_tokens(tokenizer, encoder, config.token, config.vectors, config.init_word)
        if not any(names_token(e.caption, config.token) for e in examples):
            raise ConceptError(
                f"no caption names the token {config.token!r}: put it in the captions (e.g. 'a photo of "
                f"{config.token}') or leave pictures without a caption"
            )
        captions = [expand_token(e.caption, config.token, new_tokens.expansion) for e in examples]
        params = [new_tokens.rows.vectors]
    else:
        captions = [e.caption for e in examples]
        params = add_lora(unet, UNET_TARGET_SETS[config.targets], config.rank)
        if config.train_text_encoder:
            params += add_lora(encoder, TEXT_TARGETS, config.rank)
        if config.pivotal:
            new_tokens = _pivotal_tokens(config, tokenizer, encoder, examples)
            captions = [expand_token(c, config.token, new_tokens.expansion) for c in captions]
    if config.shift and config.shift * 4 > resolution:
        raise ConceptError(f"shift {config.shift} is too large for {resolution}-pixel pictures")
    moved = shifted([replace(e, caption=c) for e, c in zip(examples, captions, strict=True)], config.shift)
    instance = _encode(checkpoint, moved, [e.caption for e in moved], tokenizer, device)
    prior = None
    if config.prior_preservation:
        prior_examples = class_examples(config, checkpoint, resolution, device)
        prior = _encode(checkpoint, prior_examples, [e.caption for e in prior_examples], tokenizer, device)

    from diffusers import DDPMScheduler

    noise_scheduler = DDPMScheduler.from_config(checkpoint.scheduler_config)
    decay = 0.0 if config.kind == "embedding" else 1e-2
    groups: list[dict[str, Any]] = [{"params": params}]
    if config.pivotal and new_tokens is not None:
        groups.append(
            {"params": [new_tokens.rows.vectors], "lr": config.token_learning_rate, "weight_decay": 0.0}
        )
    optimizer = torch.optim.AdamW(groups, lr=config.lr, weight_decay=decay)
    project, protected = None, {}
    if config.protect:
        project, directions = _protection(config, unet, encoder, tokenizer, device)
        protected = {"protected_directions": str(directions)}
    text_trains = config.kind == "embedding" or config.train_text_encoder or config.pivotal
    unet.train()
    encoder.train(text_trains)
    cached: dict[int, torch.Tensor] = {}

    def hidden_states(ids: torch.Tensor) -> torch.Tensor:
        if text_trains:
            return encoder(ids.to(device))[0]
        key = hash(ids.numpy().tobytes())
        if key not in cached:
            with torch.no_grad():
                cached[key] = encoder(ids.to(device))[0]
        return cached[key]

    base_rows: dict[bytes, torch.Tensor] = {}  # one per class caption

    def base_prediction(noisy: torch.Tensor, timesteps: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """What the model predicted before training (LoRA layers off; class captions never name the
        new rows), the target of ``prior_target="base"``."""
        with torch.no_grad(), _adapters_off(unet, encoder):
            for row in ids:
                if row.numpy().tobytes() not in base_rows:
                    base_rows[row.numpy().tobytes()] = encoder(row[None].to(device))[0][0]
            hidden = torch.stack([base_rows[row.numpy().tobytes()] for row in ids])
            return unet(noisy.to(device), timesteps.to(device), hidden).sample.float()

    scaling = float(checkpoint.vae.config.scaling_factor)
    weights = timestep_weights(config.timestep_bias, int(noise_scheduler.config.num_train_timesteps))
    losses: list[float] = []
    start = time.monotonic()
    stopped = False
    for step in range(config.steps):
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
        rng = np.random.default_rng([config.seed, step])
        parts = [_draw(instance, config.batch, rng)]
        if prior is not None:
            parts.append(_draw(prior, config.batch, rng))
        mean = torch.cat([p[0] for p in parts])
        std = torch.cat([p[1] for p in parts])
        ids = torch.cat([p[2] for p in parts])
        latents = (mean + std * torch.randn(mean.shape, generator=generator)) * scaling
        noise = torch.randn(latents.shape, generator=generator)
        if weights is None:
            timesteps = torch.randint(
                0, noise_scheduler.config.num_train_timesteps, (len(latents),), generator=generator
            )
        else:
            timesteps = torch.multinomial(weights, len(latents), replacement=True, generator=generator)
        noisy = noise_scheduler.add_noise(latents, noise, timesteps)
        if noise_scheduler.config.prediction_type == "v_prediction":
            target = noise_scheduler.get_velocity(latents, noise, timesteps)
        else:
            target = noise
        target = target.to(device)
        if prior is not None and config.prior_target == "base":
            b = config.batch
            target = torch.cat([target[:b], base_prediction(noisy[b:], timesteps[b:], ids[b:])])
        hidden = hidden_states(ids)
        prediction = unet(noisy.to(device), timesteps.to(device), hidden).sample
        errors = F.mse_loss(prediction.float(), target, reduction="none").mean(dim=(1, 2, 3))
        if config.snr_gamma is not None:
            errors = errors * _min_snr_weights(noise_scheduler, timesteps, config.snr_gamma).to(errors.device)
        loss = errors[: config.batch].mean()
        if prior is not None:
            loss = loss + config.prior_weight * errors[config.batch :].mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if project is not None:
            project()
        losses.append(float(loss.detach()))
        seconds = time.monotonic() - start
        if on_step is not None:
            on_step(StepReport(step + 1, config.steps, losses[-1], seconds))
        if step + 1 < config.steps and (
            (should_stop is not None and should_stop())
            or (config.max_minutes is not None and seconds > config.max_minutes * 60)
        ):
            stopped = True
            break
    unet.eval()
    encoder.eval()
    metadata = config.settings() | {"steps_done": str(len(losses)), "family": checkpoint.family} | protected
    embedding_path = None
    if new_tokens is not None:
        new_tokens.write_back(encoder)
        rows = {"emb_params": new_tokens.vectors()}
        row_metadata = metadata | {"token": config.token, "vectors": str(config.vectors)}
        if config.kind == "embedding":
            path = _save(rows, row_metadata, Path(config.out))
            return ConceptResult(path, len(losses), tuple(losses), time.monotonic() - start, stopped)
        if config.embedding_out is not None:  # also a file of its own, for tools that read no bundles
            embedding_path = _save(rows, row_metadata | {"kind": "embedding"}, Path(config.embedding_out))
    tensors = kohya_state(unet, "lora_unet_", config.rank)
    if config.train_text_encoder:
        tensors |= kohya_state(encoder, "lora_te_text_model_", config.rank)
    if new_tokens is not None:  # pivotal rows bundled as A1111 does: the LoRA teaches prompts the word
        tensors[f"{BUNDLE_PREFIX}{config.token}.emb_params"] = new_tokens.vectors()
        metadata |= {"vectors": str(config.vectors)}
    metadata |= {"trigger": config.token} | lora_metadata(config.rank, checkpoint.family)
    path = _save(tensors, metadata, Path(config.out))
    return ConceptResult(path, len(losses), tuple(losses), time.monotonic() - start, stopped, embedding_path)


def _pivotal_tokens(
    config: ConceptConfig, tokenizer: Any, encoder: Any, examples: list[Example]
) -> NewTokens:
    """Pivotal tuning's new rows for the trigger word, which the captions must name."""
    check_token(tokenizer, config.token, config.vectors)
    if not any(names_token(e.caption, config.token) for e in examples):
        raise ConceptError(
            f"no caption names the token {config.token!r}: pivotal tuning learns that word's rows, so put "
            f"it in the captions (e.g. 'a photo of {config.token}')"
        )
    return add_tokens(tokenizer, encoder, config.token, config.vectors, config.init_word)


@contextmanager
def _adapters_off(*models: Any) -> Iterator[None]:
    """The models as they were before training: their peft LoRA layers switched off for a while."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for model in models for m in model.modules() if isinstance(m, BaseTunerLayer)]
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield
    finally:
        for layer in layers:
            layer.enable_adapters(True)


#: ``timestep_bias``: this share of the timesteps (the least noisy for "earlier", the noisiest for
#: "later") is drawn this many times as often as the others, as diffusers' SDXL training script does.
BIAS_PORTION = 0.25
BIAS_MULTIPLIER = 3.0


def timestep_weights(bias: str, count: int) -> torch.Tensor | None:
    """Sampling weights over the ``count`` training timesteps; None for uniform ("none").

    "earlier" favours the little-noise steps, where a picture's fine detail is learnt (a small
    concept's exact outline); "later" the very noisy ones, where layout and coarse shape are."""
    if bias == "none":
        return None
    weights = torch.ones(count)
    portion = int(BIAS_PORTION * count)
    if bias == "earlier":
        weights[:portion] *= BIAS_MULTIPLIER
    else:
        weights[count - portion :] *= BIAS_MULTIPLIER
    return weights / weights.sum()


def _min_snr_weights(scheduler: Any, timesteps: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma weights (Hang et al. 2023), as diffusers' training scripts compute them."""
    from diffusers.training_utils import compute_snr

    snr = compute_snr(scheduler, timesteps)
    clipped = torch.clamp(snr, max=gamma)
    return clipped / (snr + 1) if scheduler.config.prediction_type == "v_prediction" else clipped / snr


def _load(config: ConceptConfig, device: str) -> Any:
    from models.loading import CheckpointError, load_checkpoint

    try:
        checkpoint = load_checkpoint(Path(config.checkpoint), device=device, allow_pickle=config.allow_pickle)
    except (CheckpointError, OSError, ValueError) as exc:
        raise ConceptError(f"cannot load the checkpoint {Path(config.checkpoint).name}: {exc}") from None
    if checkpoint.family not in ("sd1", "sd2"):
        raise ConceptError(
            f"{Path(config.checkpoint).name} is an {checkpoint.family} model: "
            "concept training needs SD 1.x or 2.x"
        )
    return checkpoint


def _protection(
    config: ConceptConfig, unet: Any, encoder: Any, tokenizer: Any, device: str
) -> tuple[Any, int]:
    """``config.protect``'s constraint on the UNet's cross-attention LoRA layers (training.concept.protect):
    the protected prompts' states as the UNet reads them, from the encoder before any training."""
    from training.concept.protect import protection, with_empty

    def encode(prompts: list[str]) -> torch.Tensor:
        ids = _token_ids(tokenizer, prompts)
        chunks = [ids[i : i + 64] for i in range(0, len(ids), 64)]
        return torch.cat([encoder(chunk.to(device))[0].float().cpu() for chunk in chunks])

    return protection(unet, encode, with_empty(config.protect), config.protect_share)


def _encode(
    checkpoint: Any, examples: list[Example], captions: list[str], tokenizer: Any, device: str
) -> Encoded:
    pixels = torch.from_numpy(np.stack([e.pixels for e in examples])).to(device)
    with torch.no_grad():
        dist = checkpoint.vae.encode(pixels).latent_dist
    return Encoded(dist.mean.float().cpu(), dist.std.float().cpu(), _token_ids(tokenizer, captions))


def _token_ids(tokenizer: Any, texts: list[str]) -> torch.Tensor:
    """(len(texts), model_max_length): the texts' token ids, padded to the encoder's length as the
    studio encodes prompts."""
    return tokenizer(
        texts,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids


def _draw(
    data: Encoded, batch: int, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``batch`` items: without repeats when there are enough, else with."""
    count = len(data.ids)
    index = torch.from_numpy(rng.choice(count, size=batch, replace=count < batch))
    return data.mean[index], data.std[index], data.ids[index]


def _save(tensors: dict[str, torch.Tensor], metadata: dict[str, str], out: Path) -> Path:
    from safetensors.torch import save_file

    if out.exists():
        raise ConceptError(f"{out} appeared while training: the result was not written over it")
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        tmp.chmod(0o644)  # safetensors writes 0600; a model file is for every user of the folder
        tmp.replace(out)
    except Exception as exc:  # noqa: BLE001 - OSError or safetensors' own error (a full disk, say)
        tmp.unlink(missing_ok=True)
        raise ConceptError(f"the trained file could not be written to {out}: {exc}") from None
    return out
