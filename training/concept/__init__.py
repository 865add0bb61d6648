"""Concept training in the studio: a LoRA (DreamBooth-style, optionally with prior preservation) or a
textual-inversion embedding, learnt from a folder of pictures with captions, written as a safetensors
file that LoraLoader and prompts use at once.

    from training.concept import ConceptConfig, train_concept
    result = train_concept(ConceptConfig("lora", checkpoint, images, out), on_step=print)

``python app.py train-lora`` / ``train-embedding`` (cli/train.py) and the studio's training nodes
call the same function.
"""

from training.concept.config import ConceptConfig, ConceptError, ConceptResult, StepReport
from training.concept.plot import loss_plot
from training.concept.trainer import train_concept

__all__ = ["ConceptConfig", "ConceptError", "ConceptResult", "StepReport", "loss_plot", "train_concept"]
