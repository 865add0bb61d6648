"""Attend-and-Excite (Chefer et al., 2023): nudge the latents so that every subject word of the prompt
gets a strong cross-attention peak, during the first denoising steps.

It follows diffusers' ``StableDiffusionAttendAndExcitePipeline`` step for step, so that with the same
model, seed and settings the pictures are the same (the tests hold it to that):

- before step ``i`` (``i`` < ``max_iter_to_alter``), a forward pass *with gradients* of the latents runs
  the UNet on the subject prompt alone, and records the cross-attention probabilities of the layers
  working at the chosen resolution (``attention_res``: 16x16 on SD at 512 px);
- the maps are averaged over those layers and heads, the text tokens' part (without the start token and
  the last token) is multiplied by 100 and soft-maxed again, each subject token's map is smoothed by a
  3x3 Gaussian (sigma 0.5) and its maximum taken;
- the loss is ``max over subjects of max(0, 1 - peak)``: the most neglected subject;
- the latents move down its gradient by ``scale_factor * sqrt(linspace(1, 0.5, steps)[i])``;
- at the steps named in ``thresholds`` (``{0: 0.05, 10: 0.5, 20: 0.8}``), while the loss is above
  ``1 - threshold`` the update repeats (iterative refinement, at most 20 times).

Where the latents live. The pipeline runs its gradient pass on the scheduler's latents as they are; for
the variance-preserving schedulers (DDIM, DPM-Solver, UniPC, PNDM, LCM) those are the model's input. For
Euler-like schedulers (sigma space) the studio feeds the UNet what the denoising pass feeds it
(``scheduler.scale_model_input``) and updates in that space, the scheduler equivalent of the same step,
where the pipeline would show the UNet unscaled latents.

Attention processors. The cached UNet is shared (by later runs, and by other runs at the same time), so it
is never changed: the run works on a *view* of it (``models.ip_adapter.weight_sharing_view``: new module
objects over the same weight tensors) whose cross-attention layers get a :class:`RecordingProcessor`
wrapping the processor they had. Outside the gradient pass, and in the gradient pass on layers of other
resolutions, it calls that processor (our Triton kernel where installed; the kernel steps aside by itself
when autograd needs a backward, ``kernels.attention.unsupported_reason``, so SDPA runs there).
Self-attention keeps its processor untouched. Only the recorded layers compute attention explicitly, as
the pipeline does, because their probabilities are needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

#: The pipeline's defaults.
DEFAULT_THRESHOLDS: tuple[tuple[int, float], ...] = ((0, 0.05), (10, 0.5), (20, 0.8))
MAX_ITER_TO_ALTER = 25
SCALE_FACTOR = 20.0
MAX_REFINEMENT_STEPS = 20
#: ``Cond.extra`` key: the token ids (without start and end tokens) of the prompt whose subjects are
#: excited, set by the AttendAndExcite node on the conditioning it encodes; the sampler finds the subject
#: prompt among the positive conditionings by it.
PROMPT_TOKENS = "attend_excite_prompt"


class ExciteError(ValueError):
    """Attend-and-Excite cannot run as asked; ``input_name`` is the sampler input to look at."""

    def __init__(self, message: str, input_name: str = "model") -> None:
        super().__init__(message)
        self.input_name = input_name


@dataclass(frozen=True)
class ExciteSettings:
    """What the AttendAndExcite node asks for (carried on ``ModelRef.attend_excite``)."""

    #: Positions of the subject tokens in the prompt's 77 (1 is the first word, 0 the start token).
    indices: tuple[int, ...]
    #: The subject prompt's token ids, without start and end: recognises its conditioning.
    prompt_ids: tuple[int, ...]
    max_iter_to_alter: int = MAX_ITER_TO_ALTER
    scale_factor: float = SCALE_FACTOR
    thresholds: tuple[tuple[int, float], ...] = DEFAULT_THRESHOLDS
    #: Height of the attention maps to read (their width follows the picture's shape); 0: automatic.
    attention_res: int = 0
    max_refinement_steps: int = MAX_REFINEMENT_STEPS


# --------------------------------------------------------------------------- where the maps are


def cross_attention_sizes(unet: Any, height: int, width: int) -> list[tuple[int, int]]:
    """The (h, w) grids the UNet's cross-attention layers work at for a latent of ``height`` x ``width``,
    highest resolution first (each down block but the last halves the grid, rounding up)."""
    config = unet.config
    down = list(config.down_block_types)
    up = list(config.up_block_types)
    sizes = [(height, width)]
    for _ in down[1:]:
        h, w = sizes[-1]
        sizes.append((math.ceil(h / 2), math.ceil(w / 2)))
    levels = {k for k, kind in enumerate(down) if "CrossAttn" in kind}
    levels |= {len(up) - 1 - j for j, kind in enumerate(up) if "CrossAttn" in kind}
    if "CrossAttn" in str(getattr(config, "mid_block_type", "") or ""):
        levels.add(len(down) - 1)
    return [sizes[k] for k in sorted(levels)]


def attention_grid(unet: Any, height: int, width: int, attention_res: int) -> tuple[int, int]:
    """The grid whose maps are read: the one ``attention_res`` high, or with 0 the pipeline's choice
    (a quarter of the latent: 16x16 for SD at 512 px) when the UNet has cross-attention there, else its
    highest-resolution cross-attention grid (8x8 on the toy model's 8x8 latents)."""
    sizes = cross_attention_sizes(unet, height, width)
    if not sizes:
        raise ExciteError("this UNet has no cross-attention layers: Attend-and-Excite has nothing to read")
    if attention_res:
        for size in sizes:
            if size[0] == attention_res:
                return size
        listed = ", ".join(f"{h}x{w}" for h, w in sizes)
        raise ExciteError(
            f"Attend-and-Excite's attention_res {attention_res} does not fit this picture: its "
            f"cross-attention maps are {listed}; choose one of those heights or 0 (automatic)"
        )
    quarter = math.ceil(height / 4)
    for size in sizes:
        if size[0] == quarter:
            return size
    return sizes[0]


@dataclass
class Recorder:
    """The cross-attention probabilities of one gradient pass at one grid, by place in the UNet."""

    grid: tuple[int, int]
    recording: bool = False
    maps: dict[str, list[torch.Tensor]] = field(default_factory=dict)

    def start(self) -> None:
        self.maps = {"down": [], "mid": [], "up": []}
        self.recording = True

    def stop(self) -> None:
        self.recording = False

    def average(self) -> torch.Tensor:
        """(h, w, tokens): the recorded maps averaged over layers and heads, as the pipeline's
        ``AttentionStore.aggregate_attention`` (up, down, mid) does."""
        import torch

        h, w = self.grid
        parts = [
            m.reshape(-1, h, w, m.shape[-1]) for place in ("up", "down", "mid") for m in self.maps[place]
        ]
        if not parts:
            raise ExciteError(
                f"no cross-attention layer worked at {h}x{w} in the gradient pass; "
                "choose another attention_res"
            )
        stacked = torch.cat(parts, dim=0)
        return stacked.sum(0) / stacked.shape[0]


class RecordingProcessor:
    """A cross-attention layer's processor for the run: the layer's own ``inner`` processor, except in
    the gradient pass on layers at the recorder's grid, where attention is computed explicitly (as
    diffusers' ``AttnProcessor`` does) and its probabilities recorded."""

    def __init__(self, inner: Any, recorder: Recorder, place: str) -> None:
        self.inner, self.recorder, self.place = inner, recorder, place

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        import torch

        recorder = self.recorder
        cells = hidden_states.shape[1] if hidden_states.ndim == 3 else math.prod(hidden_states.shape[2:])
        if (
            recorder.recording
            and encoder_hidden_states is not None
            and torch.is_grad_enabled()
            and cells == math.prod(recorder.grid)
        ):
            return self.recorded(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)

    def recorded(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        temb: torch.Tensor | None,
    ) -> torch.Tensor:
        from models.explicit_attention import explicit_attention

        maps = self.recorder.maps[self.place]

        def keep(probs: torch.Tensor) -> torch.Tensor:
            maps.append(probs)
            return probs

        return explicit_attention(attn, hidden_states, encoder_hidden_states, attention_mask, temb, keep)


def recording_view(unet: Any, recorder: Recorder) -> Any:
    """A view of ``unet`` (weights shared, modules new) whose cross-attention layers record into
    ``recorder``; ``unet`` itself keeps its processors."""
    from models.ip_adapter import weight_sharing_view

    view = weight_sharing_view(unet)
    chosen = {}
    for name, processor in view.attn_processors.items():
        place = name.split(".")[0].split("_")[0]  # down_blocks / mid_block / up_blocks
        module = view.get_submodule(name.rsplit(".processor", 1)[0])
        if getattr(module, "is_cross_attention", False) and place in ("down", "mid", "up"):
            processor = RecordingProcessor(processor, recorder, place)
        chosen[name] = processor
    view.set_attn_processor(chosen)
    return view


# --------------------------------------------------------------------------- the loss


def gaussian_kernel(size: int = 3, sigma: float = 0.5) -> torch.Tensor:
    """(1, 1, size, size): the pipeline's ``GaussianSmoothing`` kernel, its exact formula included
    (``exp(-((x - mean) / (2 sigma))^2)``, normalised to sum 1)."""
    import torch

    grids = torch.meshgrid([torch.arange(size, dtype=torch.float32)] * 2, indexing="ij")
    kernel = 1
    for grid in grids:
        mean = (size - 1) / 2
        kernel = kernel * (
            1 / (sigma * math.sqrt(2 * math.pi)) * torch.exp(-(((grid - mean) / (2 * sigma)) ** 2))
        )
    kernel = kernel / torch.sum(kernel)
    return kernel.view(1, 1, size, size)


def subject_peaks(maps: torch.Tensor, indices: Sequence[int]) -> list[torch.Tensor]:
    """Each subject token's attention peak: the text tokens' maps (start and last token dropped) times
    100, soft-maxed over the tokens, smoothed, and their maximum."""
    import torch.nn.functional as F

    text = F.softmax(maps[:, :, 1:-1] * 100, dim=-1)
    kernel = gaussian_kernel().to(maps.device, maps.dtype)
    peaks = []
    for index in indices:
        image = text[:, :, index - 1][None, None]
        smoothed = F.conv2d(F.pad(image, (1, 1, 1, 1), mode="reflect"), kernel)
        peaks.append(smoothed.max())
    return peaks


def excite_loss(peaks: Sequence[torch.Tensor]) -> torch.Tensor | float:
    """The most neglected subject's shortfall: ``max(0, 1 - peak)`` at its largest (0 when all reach 1)."""
    return max(max(0, 1.0 - peak) for peak in peaks)


# --------------------------------------------------------------------------- the latent update


def step_sizes(scale_factor: float, count: int) -> list[float]:
    """The pipeline's step size per step: ``scale_factor * sqrt(linspace(1, 0.5, count))``."""
    import numpy as np

    return [float(s) for s in scale_factor * np.sqrt(np.linspace(1.0, 0.5, count))]


class Exciter:
    """Attend-and-Excite for one sampling run: ``exciter(index, latents, stepper)`` returns the latents
    to denoise at step ``index``, moved toward the subjects' attention peaks while the settings say so.

    ``model`` is the run's ``models.sampling.GuidedModel``; the subject prompt is the positive
    conditioning marked with ``Cond.extra[PROMPT_TOKENS]`` equal to the settings' ``prompt_ids``.
    """

    def __init__(self, settings: ExciteSettings, model: Any) -> None:
        job = model.job
        if job.family not in ("sd1", "sd2"):
            raise ExciteError(
                f"Attend-and-Excite works with SD 1.x and 2.x models; this is a {job.family} model"
            )
        if model.unet is not job.unet:
            raise ExciteError("Attend-and-Excite cannot be combined with IP-Adapter image prompts yet")
        marked = [c for c in job.positive if tuple(c.extra.get(PROMPT_TOKENS, ())) == settings.prompt_ids]
        if not marked:
            raise ExciteError(
                "the positive conditioning is not the AttendAndExcite node's: connect that node's "
                "conditioning output to the sampler's positive input (its subjects are tokens of that "
                "prompt)",
                "positive",
            )
        self.settings, self.model = settings, model
        self.embeds = marked[0].embeds.to(model.device, model.dtype)
        if self.embeds.shape[1] > 77:
            raise ExciteError("Attend-and-Excite needs a prompt of at most 75 tokens", "positive")
        self.row = list(model.conds).index(marked[0]) * model.batch  # its first row in the model's batch
        height, width = (int(s) for s in job.latent.samples.shape[-2:])
        self.recorder = Recorder(attention_grid(job.unet, height, width, settings.attention_res))
        self.unet = recording_view(job.unet, recorder=self.recorder)
        self.thresholds = dict(settings.thresholds)

    def __call__(self, index: int, latents: torch.Tensor, stepper: Any) -> torch.Tensor:
        import torch

        settings = self.settings
        if index >= settings.max_iter_to_alter and index not in self.thresholds:
            return latents
        t, scale, total = self._level(index, stepper)
        step = step_sizes(settings.scale_factor, total)[index]
        moved = []
        for item in range(latents.shape[0]):
            x = latents[item : item + 1] * scale if scale != 1.0 else latents[item : item + 1]
            with torch.enable_grad():
                x = x.detach().requires_grad_(True)
                loss = self.loss(x, t, item)
                threshold = self.thresholds.get(index)
                if threshold is not None and loss > 1.0 - threshold:
                    loss, x = self.refine(x, t, item, loss, threshold, step)
                if index < settings.max_iter_to_alter and loss != 0:
                    x = self.update(x, loss, step)
            moved.append(x.detach())
        out = torch.cat(moved)
        return out / scale if scale != 1.0 else out

    def _level(self, index: int, stepper: Any) -> tuple[Any, float, int]:
        """(UNet timestep, model input / latents, step count) for ``index`` of the stepper's schedule."""
        import torch

        scheduler = getattr(stepper, "scheduler", None)
        if scheduler is not None:
            t = stepper.timesteps[index]
            ones = torch.ones(1, device=self.model.device, dtype=self.model.dtype)
            scale = float(scheduler.scale_model_input(ones, t)[0])
            return t, scale, len(stepper.timesteps)
        from models.schedules import model_levels  # custom sampling: sigma space

        sigmas = stepper.kstepper.sigmas
        sigma = float(sigmas[index])
        table = model_levels(self.model.job.scheduler_config)
        t = torch.tensor(table.timestep(sigma), dtype=torch.float32, device=self.model.device)
        return t, 1.0 / (sigma**2 + 1) ** 0.5, len(sigmas) - 1

    def loss(self, x: torch.Tensor, t: Any, item: int) -> torch.Tensor | float:
        """One gradient pass of the subject prompt; the loss of its recorded maps."""
        model = self.model
        row = self.row + item
        model_input = x
        if model.extra_inputs is not None:  # a 9-channel inpainting UNet's mask and masked image
            import torch

            model_input = torch.cat([x, model.extra_inputs[item : item + 1]], dim=1)
        labels = model.class_labels[row : row + 1] if model.class_labels is not None else None
        self.recorder.start()
        try:
            self.unet(
                model_input,
                t,
                encoder_hidden_states=self.embeds,
                class_labels=labels,
                cross_attention_kwargs=model.job.cross_attention_kwargs,
                return_dict=False,
            )
        finally:
            self.recorder.stop()
        return excite_loss(subject_peaks(self.recorder.average(), self.settings.indices))

    @staticmethod
    def update(x: torch.Tensor, loss: Any, step: float) -> torch.Tensor:
        import torch

        grad = torch.autograd.grad(loss.requires_grad_(True), [x], retain_graph=True)[0]
        return x - step * grad

    def refine(
        self, x: torch.Tensor, t: Any, item: int, loss: Any, threshold: float, step: float
    ) -> tuple[Any, torch.Tensor]:
        """The paper's iterative refinement: update until every subject's peak reaches ``threshold``
        (at most ``max_refinement_steps`` times), then the loss at the refined latents."""
        target = max(0.0, 1.0 - threshold)
        iteration = 0
        while loss > target:
            iteration += 1
            x = x.clone().detach().requires_grad_(True)
            loss = self.loss(x, t, item)
            if loss != 0:
                x = self.update(x, loss, step)
            if iteration >= self.settings.max_refinement_steps:
                break
        x = x.clone().detach().requires_grad_(True)
        return self.loss(x, t, item), x


# --------------------------------------------------------------------------- reading the node's inputs


def parse_thresholds(text: str) -> tuple[tuple[int, float], ...]:
    """ "0: 0.05, 10: 0.5, 20: 0.8" -> ((0, 0.05), (10, 0.5), (20, 0.8)); empty: no refinement.
    Raises ValueError with what is wrong."""
    pairs = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        step, sep, value = part.partition(":")
        try:
            if not sep:
                raise ValueError
            pair = (int(step.strip()), float(value.strip()))
        except ValueError:
            raise ValueError(
                f"{part!r}: write steps with thresholds, like '0: 0.05, 10: 0.5, 20: 0.8'"
            ) from None
        if pair[0] < 0 or not 0.0 <= pair[1] <= 1.0:
            raise ValueError(f"{part!r}: the step must be 0 or more and the threshold between 0 and 1")
        pairs.append(pair)
    return tuple(sorted(dict(pairs).items()))


def token_names(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """The prompt's tokens as words (CLIP's end-of-word mark dropped), for messages."""
    return [t.replace("</w>", "") for t in tokenizer.convert_ids_to_tokens(list(ids))]


def find_subjects(tokenizer: Any, ids: Sequence[int], subjects: str) -> tuple[int, ...]:
    """Positions (1 = the first word; the start token is 0) of the subjects in the prompt's token ids
    ``ids`` (without start and end): words are found as their own tokens (every token of a word that
    splits into several), first occurrence; whole numbers are positions as they are. Raises ValueError
    naming the prompt's tokens when a word is not there."""
    positions: list[int] = []
    if not ids:
        raise ValueError(
            "the prompt is empty: write the prompt, then name its subjects, e.g. 'circle, square'"
        )
    names = token_names(tokenizer, ids)
    listed = ", ".join(f"{i + 1}: {n}" for i, n in enumerate(names))
    parts = [p.strip() for p in subjects.split(",") if p.strip()]
    if not parts:
        raise ValueError(
            f"name the subjects to excite, e.g. 'circle, square'; the prompt's tokens are {listed}"
        )
    for part in parts:
        if part.isdigit():
            position = int(part)
            if not 1 <= position <= len(ids):
                raise ValueError(f"token {position} is not in the prompt; its tokens are {listed}")
            positions.append(position)
            continue
        word = list(tokenizer(part, add_special_tokens=False).input_ids)
        found = next(
            (i for i in range(len(ids) - len(word) + 1) if word and list(ids[i : i + len(word)]) == word),
            None,
        )
        if found is None:
            raise ValueError(f"{part!r} is not a word of the prompt; its tokens are {listed}")
        positions += [found + 1 + k for k in range(len(word))]
    return tuple(dict.fromkeys(positions))
