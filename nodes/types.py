"""Socket types: what travels along a link between two nodes.

A socket type is a plain upper-case name. The ones below are the studio's own;
a node pack may use a new name for a new kind of value without registering it
anywhere. Two sockets connect when their names are equal, or when either side
is ``ANY``.

What each type holds at run time (the contract nodes rely on):

- IMAGE: ``numpy.ndarray`` float32, shape (batch, height, width, 3), values in [0, 1].
- MASK: ``numpy.ndarray`` float32, shape (batch, height, width), values in [0, 1];
  1 marks the region an operation should change.
- LATENT, MODEL, CLIP, VAE, CONDITIONING, CONTROL_NET, UPSCALE_MODEL, CLIP_VISION: objects
  defined by the model packs; CLIP_VISION_OUTPUT a ``models.clip_vision.VisionEncoding``.
- SIGMAS: a 1-D float32 ``torch.Tensor`` of noise levels, highest first, ending at 0
  when the schedule runs to the end (as ComfyUI's custom sampling passes them).
- SAMPLER, NOISE, GUIDER: the custom-sampling values of ``models.values`` (which
  stepping rule, which noise, which model and prompts with which guidance).
- STRING, INT, FLOAT, BOOLEAN: the Python values ``str``, ``int``, ``float``, ``bool``;
  an INT is a 64-bit signed whole number (:data:`INT_MIN` to :data:`INT_MAX`), a FLOAT
  a finite double, a STRING text that UTF-8 can write (no lone surrogates).
"""

from __future__ import annotations

from typing import Final

IMAGE: Final = "IMAGE"
MASK: Final = "MASK"
LATENT: Final = "LATENT"
MODEL: Final = "MODEL"
CLIP: Final = "CLIP"
VAE: Final = "VAE"
CONDITIONING: Final = "CONDITIONING"
CONTROL_NET: Final = "CONTROL_NET"
SIGMAS: Final = "SIGMAS"
SAMPLER: Final = "SAMPLER"
NOISE: Final = "NOISE"
GUIDER: Final = "GUIDER"
UPSCALE_MODEL: Final = "UPSCALE_MODEL"
CLIP_VISION: Final = "CLIP_VISION"
CLIP_VISION_OUTPUT: Final = "CLIP_VISION_OUTPUT"
#: An IP-Adapter (models.ip_adapter.IPAdapterWeights in the manager), with the CLIP vision model
#: bundled with it, if any (nodes/ip_adapter.py's IPAdapterHandle).
IPADAPTER: Final = "IPADAPTER"
#: A GLIGEN text-box adapter (models.gligen.GligenWeights in the manager; nodes/gligen.py's GligenHandle).
GLIGEN: Final = "GLIGEN"
#: A loaded captioning model (with its processor) in the model manager.
CAPTIONER: Final = "CAPTIONER"
#: A loaded CLIP model (both towers, with its processor) in the model manager.
CLIP_SCORER: Final = "CLIP_SCORER"
STRING: Final = "STRING"
INT: Final = "INT"
FLOAT: Final = "FLOAT"
BOOLEAN: Final = "BOOLEAN"
ANY: Final = "*"

#: Types whose values can be written into the workflow file as constants.
CONSTANT_TYPES: Final = frozenset({STRING, INT, FLOAT, BOOLEAN})

#: The colour of each socket in the studio (types not listed get a neutral one).
COLORS: Final = {
    IMAGE: "#64b5f6",
    MASK: "#81c784",
    LATENT: "#ff80ab",
    MODEL: "#b39ddb",
    CLIP: "#ffd54f",
    VAE: "#ff7043",
    CONDITIONING: "#ffa726",
    CONTROL_NET: "#4db6ac",
    SIGMAS: "#cddc39",
    SAMPLER: "#ec407a",
    NOISE: "#90a4ae",
    GUIDER: "#66bb6a",
    UPSCALE_MODEL: "#8d6e63",
    CLIP_VISION: "#a1887f",
    CLIP_VISION_OUTPUT: "#ad7452",
    IPADAPTER: "#f48fb1",
    GLIGEN: "#9ccc65",
    CAPTIONER: "#7986cb",
    CLIP_SCORER: "#4dd0e1",
    STRING: "#aed581",
    INT: "#4fc3f7",
    FLOAT: "#9575cd",
    BOOLEAN: "#f06292",
    ANY: "#bdbdbd",
}


def compatible(output_type: str, input_type: str) -> bool:
    """Whether an output of ``output_type`` may feed an input of ``input_type``."""
    return output_type == input_type or ANY in (output_type, input_type)


#: An INT is a 64-bit signed whole number: what a workflow, a link or a node's output may hold.
INT_MIN: Final = -(2**63)
INT_MAX: Final = 2**63 - 1
#: A FLOAT is a finite double; whole numbers given for one must fit too.
FLOAT_MAX: Final = 1.7976931348623157e308


def int_in_range(value: int) -> bool:
    """Whether a whole number fits the INT type (64-bit signed)."""
    return INT_MIN <= value <= INT_MAX
