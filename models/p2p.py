"""Prompt-to-prompt editing (Hertz et al., 2022) through attention processors.

The source and the edited image are denoised side by side from the same noise. While
they are, the edited image's cross-attention maps are taken from the source image's:

- word swap ("replace"): the maps of the source prompt's tokens, position by position
  (the prompts must have the same number of tokens);
- refinement ("refine"): the maps of the tokens the two prompts share, aligned by
  matching the token sequences; added words keep their own maps;
- reweighting ("reweight"): the edited prompt's own maps with chosen words' attention
  scaled up or down.

Self-attention maps are shared too for the first steps, which keeps the layout. The
processors compute attention explicitly (they need the maps), so they stay installed
for the edit only; the fast kernels come back afterwards.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from models.sampling import _embeds, _randn, _step_kwargs, make_scheduler
from models.values import Cond

if TYPE_CHECKING:
    import torch

MODES = ("replace", "refine", "reweight")


class EditError(ValueError):
    pass


@dataclass
class Controller:
    """What the processors need to know: the step, the plan, the token maps."""

    total_steps: int
    cross_steps: float  # fraction of steps in which cross-attention is shared
    self_steps: float  # fraction of steps in which self-attention is shared
    mode: str
    mapper: torch.Tensor | None = None  # target token -> source token (refine)
    keep_own: torch.Tensor | None = None  # (tokens,) 1 where the target keeps its own map (refine)
    weights: torch.Tensor | None = None  # (tokens,) attention scale per target token (reweight)
    step: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def sharing_cross(self) -> bool:
        return self.step < self.cross_steps * self.total_steps

    def sharing_self(self) -> bool:
        return self.step < self.self_steps * self.total_steps


class P2PAttnProcessor:
    """Explicit attention whose maps the :class:`Controller` edits.

    The batch holds four rows: [uncond source, uncond edit, cond source, cond edit].
    """

    def __init__(self, controller: Controller, cross: bool) -> None:
        self.controller = controller
        self.cross = cross

    def __call__(
        self,
        attn: Any,
        hidden_states: Any,
        encoder_hidden_states: Any = None,
        attention_mask: Any = None,
        temb: Any = None,
        **kwargs: Any,
    ) -> Any:
        from models.explicit_attention import explicit_attention

        batch = hidden_states.shape[0]
        return explicit_attention(
            attn,
            hidden_states,
            encoder_hidden_states,
            None,  # the studio's prompts carry no attention mask
            temb,
            lambda probs: self.edit(probs, batch, attn.heads),
        )

    def edit(self, probs: torch.Tensor, batch: int, heads: int) -> torch.Tensor:
        import torch

        c = self.controller
        if batch % 2:
            return probs
        maps = probs.view(batch, heads, *probs.shape[1:])
        half = batch // 2
        conditional = maps[half:]  # [source, edit] for the conditional half (and uncond left alone)
        source, target = conditional[0], conditional[1]
        if self.cross:
            if c.mode == "reweight" and c.weights is not None:
                target = target * c.weights.to(target.device, target.dtype)
            if c.sharing_cross():
                if c.mode == "replace":
                    target = source
                elif c.mode == "refine" and c.mapper is not None and c.keep_own is not None:
                    moved = source[..., c.mapper.to(source.device)]
                    keep = c.keep_own.to(source.device, source.dtype)
                    target = moved * (1 - keep) + target * keep
        elif c.sharing_self():
            target = source
        edited = torch.stack([source, target])
        return torch.cat([maps[:half], edited]).view_as(probs)


def token_ids(tokenizer: Any, prompt: str) -> list[int]:
    return tokenizer(
        prompt, padding="max_length", max_length=tokenizer.model_max_length, truncation=True
    ).input_ids


def plan_tokens(
    tokenizer: Any, source: str, target: str, mode: str, reweight: dict[str, float]
) -> dict[str, Any]:
    """Token maps for the controller: word swap needs equal lengths; refine aligns tokens."""
    import torch

    src, tgt = token_ids(tokenizer, source), token_ids(tokenizer, target)
    length = len(tgt)
    out: dict[str, Any] = {}
    if mode == "replace":
        src_words = tokenizer(source, add_special_tokens=False).input_ids
        tgt_words = tokenizer(target, add_special_tokens=False).input_ids
        if len(src_words) != len(tgt_words):
            raise EditError(
                f"word swap needs prompts of the same length in tokens ({len(src_words)} and "
                f"{len(tgt_words)}); use mode 'refine' to add or remove words"
            )
    if mode == "refine":
        mapper = torch.arange(length)
        keep = torch.ones(length)
        matcher = difflib.SequenceMatcher(a=src, b=tgt, autojunk=False)
        for block in matcher.get_matching_blocks():
            for offset in range(block.size):
                mapper[block.b + offset] = block.a + offset
                keep[block.b + offset] = 0.0
        out.update(mapper=mapper, keep_own=keep)
    if reweight:
        weights = torch.ones(length)
        for word, scale in reweight.items():
            word_ids = tokenizer(word, add_special_tokens=False).input_ids
            found = False
            for start in range(len(tgt) - len(word_ids) + 1):
                if word_ids and tgt[start : start + len(word_ids)] == word_ids:
                    weights[start : start + len(word_ids)] = scale
                    found = True
            if not found:
                raise EditError(f"the word {word!r} to reweight is not in the edited prompt")
        out["weights"] = weights
    return out


@dataclass
class P2PJob:
    unet: Any
    scheduler_config: dict[str, Any]
    source: Cond
    target: Cond
    negative: Cond
    shape: tuple[int, ...]  # latent shape of one image
    seed: int
    steps: int
    cfg: float
    sampler: str
    controller: Controller
    device: str = "cpu"
    dtype: Any = None
    on_step: Callable[[int, int, torch.Tensor], None] | None = None


def sample_p2p(job: P2PJob, check_cancelled: Callable[[], None] = lambda: None) -> torch.Tensor:
    """Latents (2, c, h, w): the source image and the edited one, from the same noise."""
    import torch

    device, dtype = job.device, job.dtype or torch.float32
    scheduler = make_scheduler(job.sampler, job.scheduler_config)
    scheduler.set_timesteps(job.steps, device=device)
    generator = torch.Generator("cpu").manual_seed(int(job.seed))
    noise = _randn(job.shape, generator, device, dtype)
    latents = torch.cat([noise, noise]) * scheduler.init_noise_sigma
    conds: Sequence[Cond] = [job.negative, job.negative, job.source, job.target]
    embeds = _embeds(conds, 1, device, dtype)
    step_kwargs = _step_kwargs(scheduler, generator)
    originals = job.unet.attn_processors
    processors = {
        name: P2PAttnProcessor(job.controller, cross=name.endswith("attn2.processor")) for name in originals
    }
    job.unet.set_attn_processor(processors)
    try:
        total = len(scheduler.timesteps)
        for index, t in enumerate(scheduler.timesteps):
            check_cancelled()
            job.controller.step = index
            model_input = scheduler.scale_model_input(torch.cat([latents] * 2), t)
            with torch.no_grad():
                pred = job.unet(model_input, t, encoder_hidden_states=embeds, return_dict=False)[0]
            uncond, cond = pred.chunk(2)
            pred = uncond + job.cfg * (cond - uncond)
            latents = scheduler.step(pred, t, latents, **step_kwargs, return_dict=False)[0]
            if job.on_step is not None:
                job.on_step(index + 1, total, latents)
    finally:
        job.unet.set_attn_processor(originals)
    return latents.to("cpu", torch.float32)
