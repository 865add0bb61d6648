"""Training the bundled toy models on the procedural toy world (:mod:`toyworld`).

- what every script shares: :mod:`training.seeding` (seeds per step), :mod:`training.toy_data` (the
  toy-world data stream), :mod:`training.run_folder` (resumable state, settings, loss log),
  :mod:`training.loop` (the loop, EMA, learning rate, time budget, Ctrl-C) and :mod:`training.script`
  (common arguments, step-time measurement, safe exports)
- :mod:`training.vae`: a small AutoencoderKL (32 px pictures, 8x8x4 latents)
- :mod:`training.sd`: an SD-style text-to-image model (a small CLIP text encoder and UNet, trained jointly)
- :mod:`training.export`: a diffusers StableDiffusionPipeline folder with a model card, checked by loading it

``python -m training.vae --out runs/vae --steps 3000 --batch 64`` then
``python -m training.sd --out runs/sd --vae runs/vae --steps 4000 --batch 64`` then
``python -m training.export --sd runs/sd --out models/checkpoints/toy-sd``.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # training never reaches a model hub
