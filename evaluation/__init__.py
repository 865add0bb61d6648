"""Evaluation of generated pictures that answers FID's critics.

- :mod:`evaluation.images`: folders of pictures and the prompts they were made from.
- :mod:`evaluation.features`: the feature model (a CLIP image tower the user chooses; the bundled
  toy CLIP by default), as a ``torch.nn.Module`` from uint8 pictures to feature vectors.
- :mod:`evaluation.metrics`: FID and KID (torchmetrics), CMMD, precision and recall, CLIP score
  and the toy-world analyzer's accuracy, each a function of features or pictures.
- :mod:`evaluation.evaluate`: runs the chosen metrics over two sets and gathers one result.
- :mod:`evaluation.report`: the one-page HTML report with its plots.

torch, transformers and matplotlib are imported inside functions only.
"""
