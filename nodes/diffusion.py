"""Stable Diffusion nodes: load a checkpoint, encode prompts, make and decode latents, sample.

torch, diffusers and transformers are imported inside ``run`` only, so listing and
validating nodes stays fast.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from nodes import types as T
from nodes.base import Context, Input, Node, NodeInputError, Output, RunSettings
from nodes.support import (
    CFG,
    PREVIEW,
    SAMPLER_NAMES,
    SEED,
    STEPS,
    checkpoint_for,
    embeddings_fingerprint,
    empty_latent,
    encode_prompt,
    file_state,
    find_model,
    lora_entry,
    manager_of,
    model_fingerprint,
    model_input,
    sampling_job,
    step_reporter,
)


class CheckpointLoader(Node):
    display_name = "Load Checkpoint"
    category = "loaders"
    description = "Load a Stable Diffusion checkpoint (SD 1.x, 2.x, XL; file or diffusers folder)."
    inputs = (
        model_input("ckpt_name", "checkpoints", "A file or diffusers folder in models/checkpoints."),
        Input(
            "prediction",
            T.STRING,
            default="auto",
            choices=("auto", "epsilon", "v_prediction"),
            accepts="constant",
            description="What the UNet predicts; auto reads it from the model.",
        ),
    )
    outputs = (Output("model", T.MODEL), Output("clip", T.CLIP), Output("vae", T.VAE))

    def fingerprint(self, inputs: Mapping[str, Any], settings: RunSettings) -> str | None:
        return model_fingerprint(settings, "checkpoints", inputs.get("ckpt_name"))

    def run(self, ctx: Context, ckpt_name: str, prediction: str) -> dict[str, Any]:
        from models.loading import CheckpointError, load_checkpoint
        from models.safety import PickleRefused, UnsafeOrBrokenFile
        from models.values import CheckpointRef, ClipRef, ModelRef, ModuleRef

        path = find_model(ctx, "checkpoints", "ckpt_name", ckpt_name)
        manager = manager_of(ctx)
        key = ("checkpoint", str(path.resolve()), file_state(path), prediction)

        def load() -> Any:
            loaded = load_checkpoint(
                path,
                device=manager.device,
                dtype=manager.dtype,
                allow_pickle=manager.allow_pickle,
                prediction=prediction,
            )
            manager.install_attention(loaded.unet)
            return loaded

        try:
            checkpoint = manager.get(key, load)
        except (CheckpointError, PickleRefused, UnsafeOrBrokenFile) as exc:
            raise NodeInputError("ckpt_name", str(exc)) from None
        ref = CheckpointRef(key, manager, load, checkpoint.family)
        vae = ModuleRef(key, manager, load, part="vae")
        return {"model": ModelRef(ref), "clip": ClipRef(ref), "vae": vae}


class LoraLoader(Node):
    display_name = "Load LoRA"
    category = "loaders"
    description = "Add a LoRA (kohya or diffusers format) to a model and its text encoder."
    inputs = (
        Input("model", T.MODEL),
        Input("clip", T.CLIP),
        model_input("lora_name", "loras", "A .safetensors LoRA in models/loras."),
        Input("strength_model", T.FLOAT, default=1.0, min=-10.0, max=10.0, step=0.05),
        Input("strength_clip", T.FLOAT, default=1.0, min=-10.0, max=10.0, step=0.05),
    )
    outputs = (Output("model", T.MODEL), Output("clip", T.CLIP))

    def fingerprint(self, inputs: Mapping[str, Any], settings: RunSettings) -> str | None:
        return model_fingerprint(settings, "loras", inputs.get("lora_name"))

    def run(
        self, ctx: Context, model: Any, clip: Any, lora_name: str, strength_model: float, strength_clip: float
    ) -> dict[str, Any]:
        from dataclasses import replace

        entry = lora_entry(ctx, lora_name, strength_model, strength_clip)
        loras = model.loras + (entry,)
        return {"model": replace(model, loras=loras), "clip": replace(clip, loras=loras)}


class VAELoader(Node):
    display_name = "Load VAE"
    category = "loaders"
    description = "Load a VAE to use instead of the checkpoint's own."
    inputs = (model_input("vae_name", "vae", "A file or diffusers folder in models/vae."),)
    outputs = (Output("vae", T.VAE),)

    def fingerprint(self, inputs: Mapping[str, Any], settings: RunSettings) -> str | None:
        return model_fingerprint(settings, "vae", inputs.get("vae_name"))

    def run(self, ctx: Context, vae_name: str) -> dict[str, Any]:
        from models.loading import CheckpointError, load_vae
        from models.safety import PickleRefused, UnsafeOrBrokenFile
        from models.values import ModuleRef

        path = find_model(ctx, "vae", "vae_name", vae_name)
        manager = manager_of(ctx)
        key = ("vae", str(path.resolve()), file_state(path))

        def load() -> Any:
            return load_vae(
                path, device=manager.device, dtype=manager.dtype, allow_pickle=manager.allow_pickle
            )

        try:
            manager.get(key, load)
        except (CheckpointError, PickleRefused, UnsafeOrBrokenFile) as exc:
            raise NodeInputError("vae_name", str(exc)) from None
        return {"vae": ModuleRef(key, manager, load)}


class CLIPTextEncode(Node):
    display_name = "CLIP Text Encode (Prompt)"
    category = "conditioning"
    description = "Turn a prompt into conditioning; (word:1.3) weights words, embeddings by name."
    inputs = (
        Input("clip", T.CLIP),
        Input("text", T.STRING, default="", multiline=True),
    )
    outputs = (Output("conditioning", T.CONDITIONING),)

    def fingerprint(self, inputs: Mapping[str, Any], settings: RunSettings) -> str | None:
        return embeddings_fingerprint(inputs, ("text",), settings)

    def run(self, ctx: Context, clip: Any, text: str) -> dict[str, Any]:
        return {"conditioning": (encode_prompt(ctx, clip, text),)}


class ConditioningCombine(Node):
    display_name = "Conditioning (Combine)"
    category = "conditioning"
    description = "Use two conditionings together (each where its region says, weighted by strength)."
    inputs = (Input("conditioning_a", T.CONDITIONING), Input("conditioning_b", T.CONDITIONING))
    outputs = (Output("conditioning", T.CONDITIONING),)

    def run(self, ctx: Context, conditioning_a: Any, conditioning_b: Any) -> dict[str, Any]:
        return {"conditioning": tuple(conditioning_a) + tuple(conditioning_b)}


class ConditioningRegion(Node):
    display_name = "Conditioning (Region)"
    category = "conditioning"
    description = "Apply a prompt only inside a box, e.g. 'a puppy' in the bottom left; combine with others."
    inputs = (
        Input("conditioning", T.CONDITIONING),
        Input(
            "x", T.FLOAT, default=0.0, min=0.0, max=1.0, step=0.01, description="Left edge (0..1 of width)."
        ),
        Input(
            "y", T.FLOAT, default=0.0, min=0.0, max=1.0, step=0.01, description="Top edge (0..1 of height)."
        ),
        Input("width", T.FLOAT, default=0.5, min=0.01, max=1.0, step=0.01),
        Input("height", T.FLOAT, default=0.5, min=0.01, max=1.0, step=0.01),
        Input("strength", T.FLOAT, default=1.0, min=0.0, max=10.0, step=0.05),
    )
    outputs = (Output("conditioning", T.CONDITIONING),)

    def run(
        self,
        ctx: Context,
        conditioning: Any,
        x: float,
        y: float,
        width: float,
        height: float,
        strength: float,
    ) -> dict[str, Any]:
        import torch

        if x + width > 1.0 + 1e-6:
            raise NodeInputError("width", f"x + width is {x + width:.2f}: the box leaves the image (max 1)")
        if y + height > 1.0 + 1e-6:
            raise NodeInputError(
                "height", f"y + height is {y + height:.2f}: the box leaves the image (max 1)"
            )
        grid = 64  # the box as a mask on a 64x64 grid, resized to the latent by the sampler
        region = torch.zeros(1, 1, grid, grid)
        left, top = round(x * grid), round(y * grid)
        right, bottom = max(left + 1, round((x + width) * grid)), max(top + 1, round((y + height) * grid))
        region[..., top:bottom, left:right] = 1.0
        return {"conditioning": tuple(c.with_(region=region, strength=strength) for c in conditioning)}


class ConditioningMask(Node):
    display_name = "Conditioning (Mask)"
    category = "conditioning"
    description = "Apply a prompt only where a mask is white (1); combine with others."
    inputs = (
        Input("conditioning", T.CONDITIONING),
        Input("mask", T.MASK),
        Input("strength", T.FLOAT, default=1.0, min=0.0, max=10.0, step=0.05),
    )
    outputs = (Output("conditioning", T.CONDITIONING),)

    def run(self, ctx: Context, conditioning: Any, mask: np.ndarray, strength: float) -> dict[str, Any]:
        import torch

        from nodes.image_inputs import as_mask

        region = torch.from_numpy(np.ascontiguousarray(as_mask("mask", mask)[:1]))[:, None]
        return {"conditioning": tuple(c.with_(region=region, strength=strength) for c in conditioning)}


class EmptyLatent(Node):
    display_name = "Empty Latent Image"
    category = "latent"
    description = "A blank latent for text-to-image, of the given size in pixels."
    inputs = (
        Input("width", T.INT, default=512, min=16, max=8192, step=8),
        Input("height", T.INT, default=512, min=16, max=8192, step=8),
        Input("batch_size", T.INT, default=1, min=1, max=64),
        Input(
            "vae",
            T.VAE,
            optional=True,
            description="Connect the VAE to size the latent for it (models that do not shrink by 8).",
        ),
    )
    outputs = (Output("latent", T.LATENT),)

    def run(self, ctx: Context, width: int, height: int, batch_size: int, vae: Any) -> dict[str, Any]:
        return {"latent": empty_latent(width, height, batch_size, vae, channels=4)}


def image_to_tensor(image: np.ndarray) -> Any:
    """IMAGE (b, h, w, 3) in [0, 1] to a torch tensor (b, 3, h, w) in [-1, 1]."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(image)).permute(0, 3, 1, 2) * 2.0 - 1.0


def tensor_to_image(tensor: Any) -> np.ndarray:
    """Decoded (b, 3, h, w) in [-1, 1] to IMAGE, as the pipelines post-process it."""
    import torch

    return (tensor / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).to("cpu", dtype=torch.float32).numpy()


class VAEEncode(Node):
    display_name = "VAE Encode"
    category = "latent"
    description = "Encode images into latents (for image-to-image)."
    inputs = (Input("vae", T.VAE), Input("image", T.IMAGE))
    outputs = (Output("latent", T.LATENT),)

    def run(self, ctx: Context, vae: Any, image: np.ndarray) -> dict[str, Any]:
        return {"latent": encode_image(vae, image, "image")}


def encode_image(vae: Any, image: np.ndarray, input_name: str, scaled: bool = True) -> Any:
    """Encode IMAGE into a Latent holding the encoder's mean and spread (scaled for the UNet)."""
    import torch

    from models.values import Latent
    from nodes.image_inputs import as_image

    image = as_image(input_name, image)
    model = vae.get()
    scale = 2 ** (len(model.config.block_out_channels) - 1)
    if image.shape[1] % scale or image.shape[2] % scale:
        raise NodeInputError(input_name, f"width and height must be multiples of {scale}; resize it first")
    pixels = image_to_tensor(image).to(model.device, model.dtype)
    with torch.no_grad():
        dist = model.encode(pixels).latent_dist
    factor = float(model.config.scaling_factor) if scaled else 1.0
    # SD3 / Flux VAEs centre their latents: (x - shift_factor) * scaling_factor
    shift = float(getattr(model.config, "shift_factor", None) or 0.0) if scaled else 0.0
    mean = ((dist.mean - shift) * factor).to("cpu", torch.float32)
    std = (dist.std * factor).to("cpu", torch.float32)
    return Latent(mean, std=std)


class VAEDecode(Node):
    display_name = "VAE Decode"
    category = "latent"
    description = "Decode latents into images."
    inputs = (Input("vae", T.VAE), Input("latent", T.LATENT))
    outputs = (Output("image", T.IMAGE),)

    def run(self, ctx: Context, vae: Any, latent: Any) -> dict[str, Any]:
        import inspect

        import torch

        from nodes.limits import check_pixel_budget

        model = vae.get()
        scale = 2 ** (len(model.config.block_out_channels) - 1)
        batch, _, height, width = latent.samples.shape
        check_pixel_budget("latent", batch, height * scale, width * scale)
        latents = latent.samples.to(model.device, model.dtype) / float(model.config.scaling_factor)
        shift = getattr(model.config, "shift_factor", None)  # SD3 / Flux VAEs: x / scale + shift
        if shift:
            latents = latents + float(shift)
        images = []
        with torch.no_grad():
            if "num_frames" in inspect.signature(model.decode).parameters:  # a video VAE: frames together
                images.append(model.decode(latents, num_frames=batch, return_dict=False)[0])
            else:
                for row in latents.split(1):
                    ctx.check_cancelled()
                    images.append(model.decode(row, return_dict=False)[0])
        return {"image": tensor_to_image(torch.cat(images))}


class InpaintEncode(Node):
    display_name = "VAE Encode (for Inpainting)"
    category = "latent/inpaint"
    description = (
        "Encode an image and a mask for inpainting: works with any model, and feeds 9-channel models."
    )
    inputs = (
        Input("vae", T.VAE),
        Input("image", T.IMAGE),
        Input("mask", T.MASK, description="White (1) where the image should be repainted."),
        Input(
            "grow_mask_by",
            T.INT,
            default=0,
            min=0,
            max=64,
            step=1,
            description="Widen the repainted region by about this many pixels, so the new part "
            "blends in at its edges (ComfyUI's VAEEncodeForInpaint grows it by 6). The image is "
            "still blanked under the mask as drawn.",
        ),
    )
    outputs = (Output("latent", T.LATENT),)

    @staticmethod
    def grow(hard: np.ndarray, pixels: int) -> np.ndarray:
        """A 0/1 MASK widened by a ``pixels`` x ``pixels`` square (as ComfyUI's grow: for an even
        size the square reaches one pixel further up and left than down and right)."""
        import torch
        import torch.nn.functional as F

        if pixels <= 1:
            return hard
        before = pixels // 2
        after = pixels - 1 - before
        tensor = F.pad(torch.from_numpy(np.ascontiguousarray(hard))[:, None], (before, after, before, after))
        return F.max_pool2d(tensor, kernel_size=pixels, stride=1)[:, 0].numpy()

    def run(
        self, ctx: Context, vae: Any, image: np.ndarray, mask: np.ndarray, grow_mask_by: int = 0
    ) -> dict[str, Any]:
        encoded, _, hard = encode_for_inpainting(vae, image, mask, "image")
        grown = self.grow(hard, grow_mask_by)
        return {"latent": encoded.with_(noise_mask=mask_to_latent(grown, encoded.samples.shape))}


def encode_for_inpainting(
    vae: Any, image: np.ndarray, mask: np.ndarray, image_input: str
) -> tuple[Any, np.ndarray, np.ndarray]:
    """What inpainting needs of an image and its mask: the image's Latent carrying the masked
    image's latents (for 9-channel UNets), the mask as given (b, H, W) and binarised at 0.5.

    Masked pixels become mid-gray (0 in the VAE's [-1, 1] range) before encoding, as the
    inpainting pipelines and ComfyUI do."""
    from nodes.image_inputs import as_mask

    mask = as_mask("mask", mask)
    if mask.shape[1:] != image.shape[1:3]:
        raise NodeInputError(
            "mask",
            f"is {mask.shape[2]}x{mask.shape[1]} but the image is "
            f"{image.shape[2]}x{image.shape[1]}; resize one of them",
        )
    hard = (mask >= 0.5).astype(np.float32)  # as the inpainting pipelines binarize it
    encoded = encode_image(vae, image, image_input)
    masked = encode_image(vae, image * (1.0 - hard)[..., None] + 0.5 * hard[..., None], image_input)
    return encoded.with_(masked_image=masked.samples, masked_image_std=masked.std), mask, hard


class InpaintModelConditioning(Node):
    display_name = "Inpaint Model Conditioning"
    category = "conditioning/inpaint"
    description = (
        "Prepare inpainting as ComfyUI's node of this name: the image's latent with the masked "
        "image and the mask for inpainting (9-channel) models, and the prompts passed on. With "
        "noise_mask on, any model repaints only the masked part; off, a 9-channel model still "
        "sees the mask while an ordinary model may change the whole picture (image-to-image)."
    )
    inputs = (
        Input("positive", T.CONDITIONING),
        Input("negative", T.CONDITIONING),
        Input("vae", T.VAE),
        Input("pixels", T.IMAGE),
        Input("mask", T.MASK, description="White (1) where the image should be repainted."),
        Input(
            "noise_mask",
            T.BOOLEAN,
            default=True,
            description="Keep the unmasked part while sampling (the mask as drawn, soft edges "
            "blend). Off: only an inpainting model's own mask input limits the change.",
        ),
    )
    outputs = (
        Output("positive", T.CONDITIONING),
        Output("negative", T.CONDITIONING),
        Output("latent", T.LATENT),
    )

    def run(
        self,
        ctx: Context,
        positive: Any,
        negative: Any,
        vae: Any,
        pixels: np.ndarray,
        mask: np.ndarray,
        noise_mask: bool = True,
    ) -> dict[str, Any]:
        # The studio carries the inpainting model's inputs on the latent (see GuidedModel), so the
        # prompts pass on unchanged; ComfyUI puts the same inputs on the conditionings.
        encoded, soft, hard = encode_for_inpainting(vae, pixels, mask, "pixels")
        shape = encoded.samples.shape
        latent = encoded.with_(
            inpaint_mask=mask_to_latent(hard, shape),
            noise_mask=mask_to_latent(soft, shape) if noise_mask else None,
        )
        return {"positive": positive, "negative": negative, "latent": latent}


class SetLatentNoiseMask(Node):
    category = "latent/inpaint"
    description = "Let the sampler change only the masked part (inpainting with any model)."
    inputs = (Input("latent", T.LATENT), Input("mask", T.MASK))
    outputs = (Output("latent", T.LATENT),)

    def run(self, ctx: Context, latent: Any, mask: np.ndarray) -> dict[str, Any]:
        return {"latent": latent.with_(noise_mask=mask_to_latent(mask, latent.samples.shape))}


class DifferentialDiffusion(Node):
    display_name = "Differential Diffusion"
    category = "latent/inpaint"
    description = (
        "Read a soft noise mask as how much each place may change: a place of value 1 is repainted "
        "from the first step, 0.3 only in the last 30% of the steps, 0 never, so soft mask edges "
        "blend gradually (ComfyUI's node of this name). For ordinary models with a noise mask "
        "(SetLatentNoiseMask, InpaintModelConditioning); a 9-channel inpainting model repaints "
        "its mask itself, and this changes nothing there."
    )
    inputs = (
        Input("model", T.MODEL),
        Input(
            "strength",
            T.FLOAT,
            default=1.0,
            min=0.0,
            max=1.0,
            step=0.01,
            description="Below 1 mixes the step-by-step mask with the soft mask as drawn.",
        ),
    )
    outputs = (Output("model", T.MODEL),)

    def run(self, ctx: Context, model: Any, strength: float = 1.0) -> dict[str, Any]:
        return {"model": model.with_(differential=float(strength))}


def mask_to_latent(mask: np.ndarray, shape: tuple[int, ...]) -> Any:
    """MASK (b, H, W) to (b, 1, h, w) at the latent size, as the inpaint pipeline does."""
    import torch
    import torch.nn.functional as F

    tensor = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[:, None]
    tensor = F.interpolate(tensor, size=tuple(shape[-2:]))
    if tensor.shape[0] == 1 and shape[0] > 1:
        tensor = tensor.repeat(shape[0], 1, 1, 1)
    return tensor


class Sampler(Node):
    display_name = "KSampler (Sampler)"
    category = "sampling"
    description = "Denoise a latent with a model and prompts; denoise below 1 keeps part of the input."
    inputs = (
        Input("model", T.MODEL),
        Input("positive", T.CONDITIONING),
        Input("negative", T.CONDITIONING),
        Input("latent", T.LATENT),
        SEED,
        STEPS,
        CFG,
        Input("sampler", T.STRING, default="dpmpp_2m_karras", choices=SAMPLER_NAMES),
        Input("denoise", T.FLOAT, default=1.0, min=0.0, max=1.0, step=0.01),
        PREVIEW,
    )
    outputs = (Output("latent", T.LATENT),)

    def run(
        self,
        ctx: Context,
        model: Any,
        positive: Any,
        negative: Any,
        latent: Any,
        seed: int,
        steps: int,
        cfg: float,
        sampler: str,
        denoise: float,
        preview: bool,
    ) -> dict[str, Any]:
        from models.sampling import sample

        job = sampling_job(
            ctx,
            model,
            positive,
            negative,
            latent,
            seed=seed,
            steps=steps,
            cfg=cfg,
            sampler=sampler,
            denoise=denoise,
            preview=preview,
        )
        try:
            samples = sample(job, ctx.check_cancelled)
        except ValueError as exc:  # the flow sampler names the input to blame (sampler, model...)
            raise NodeInputError(getattr(exc, "input_name", "latent"), str(exc)) from None
        return {"latent": latent.with_(samples=samples, std=None)}


class InstructPix2Pix(Node):
    display_name = "InstructPix2Pix"
    category = "sampling/edit"
    description = "Edit an image by an instruction ('make the circle blue') with an InstructPix2Pix model."
    inputs = (
        Input("model", T.MODEL),
        Input("positive", T.CONDITIONING, description="The instruction, encoded."),
        Input("negative", T.CONDITIONING),
        Input("vae", T.VAE),
        Input("image", T.IMAGE),
        SEED,
        STEPS,
        Input(
            "cfg",
            T.FLOAT,
            default=7.5,
            min=0.0,
            max=100.0,
            step=0.1,
            description="How much to follow the text.",
        ),
        Input(
            "image_cfg",
            T.FLOAT,
            default=1.5,
            min=0.0,
            max=100.0,
            step=0.05,
            description="How much to stay close to the image.",
        ),
        Input("sampler", T.STRING, default="euler_ancestral", choices=SAMPLER_NAMES),
    )
    outputs = (Output("latent", T.LATENT),)

    def run(
        self,
        ctx: Context,
        model: Any,
        positive: Any,
        negative: Any,
        vae: Any,
        image: np.ndarray,
        seed: int,
        steps: int,
        cfg: float,
        image_cfg: float,
        sampler: str,
    ) -> dict[str, Any]:
        from models.sampling import EditJob, sample_edit
        from models.values import Latent

        checkpoint = checkpoint_for(model, ctx)
        manager = manager_of(ctx)
        if int(checkpoint.unet.config.in_channels) != 8:
            raise NodeInputError(
                "model",
                "is not an instruction-editing model (its UNet takes "
                f"{checkpoint.unet.config.in_channels} channels, InstructPix2Pix takes 8)",
            )
        source = encode_image(vae, image, "image", scaled=False).samples  # the mode, as the pipeline uses

        job = EditJob(
            unet=checkpoint.unet,
            scheduler_config=checkpoint.scheduler_config,
            positive=positive,
            negative=negative,
            image_latents=source,
            seed=seed,
            steps=steps,
            text_cfg=cfg,
            image_cfg=image_cfg,
            sampler=sampler,
            device=manager.device,
            dtype=manager.dtype,
            on_step=step_reporter(ctx),
        )
        try:
            return {"latent": Latent(sample_edit(job, ctx.check_cancelled))}
        except ValueError as exc:
            raise NodeInputError("positive", str(exc)) from None


class InstructPixToPixConditioning(Node):
    display_name = "InstructPix2Pix Conditioning"
    category = "conditioning/instructpix2pix"
    description = (
        "Give both prompts the picture an instruction-editing (InstructPix2Pix) model should edit, as "
        "ComfyUI's node of this name: any sampler then feeds it to the model beside the latent, which "
        "starts empty (the latent output, the picture's size). A prompt that did not pass through here "
        "shows the model no picture (DualCFGGuider's negative, for image guidance). Sides that are not "
        "a multiple of 8 px are cut about the centre."
    )
    inputs = (
        Input("positive", T.CONDITIONING, description="The instruction, encoded."),
        Input("negative", T.CONDITIONING),
        Input("vae", T.VAE),
        Input("pixels", T.IMAGE, description="The picture to edit."),
    )
    outputs = (
        Output("positive", T.CONDITIONING),
        Output("negative", T.CONDITIONING),
        Output("latent", T.LATENT, description="An empty latent of the picture's size, to sample into."),
    )

    def run(self, ctx: Context, positive: Any, negative: Any, vae: Any, pixels: np.ndarray) -> dict[str, Any]:
        import torch

        from models.values import Latent
        from nodes.image_inputs import as_image

        image = as_image("pixels", pixels)
        scale = 2 ** (len(vae.get().config.block_out_channels) - 1)
        height, width = (image.shape[1] // scale) * scale, (image.shape[2] // scale) * scale
        if not height or not width:
            raise NodeInputError("pixels", f"is smaller than {scale} px on a side; give a larger picture")
        top, left = (image.shape[1] % scale) // 2, (image.shape[2] % scale) // 2
        image = image[:, top : top + height, left : left + width]
        source = encode_image(vae, image, "pixels", scaled=False).samples  # the mode, as the pipeline uses

        def with_picture(conditioning: Any) -> tuple[Any, ...]:
            return tuple(cond.with_(concat_image=source) for cond in conditioning)

        return {
            "positive": with_picture(positive),
            "negative": with_picture(negative),
            "latent": Latent(torch.zeros_like(source)),
        }


NODES = (
    CheckpointLoader,
    LoraLoader,
    VAELoader,
    CLIPTextEncode,
    ConditioningCombine,
    ConditioningRegion,
    ConditioningMask,
    EmptyLatent,
    VAEEncode,
    VAEDecode,
    InpaintEncode,
    InpaintModelConditioning,
    SetLatentNoiseMask,
    DifferentialDiffusion,
    InstructPix2Pix,
    InstructPixToPixConditioning,
    Sampler,
)
