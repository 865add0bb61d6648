"""Socket types: what travels along a link between two nodes.

A socket type is a plain upper-case name. The ones below are the studio's own;
a node pack may use a new name for a new kind of value without registering it
anywhere. Two sockets connect when their names are equal, or when either side
is ``ANY``.

What each type holds at run time (the contract nodes rely on):

- IMAGE: ``numpy.ndarray`` float32, shape (batch, height, width, 3), values in [0, 1].
- MASK: ``numpy.ndarray`` float32, shape (batch, height, width), values in [0, 1];
  1 marks the region an operation should change.
- LATENT, MODEL, CLIP, VAE, CONDITIONING, CONTROL_NET: objects defined by the
  model packs.
- STRING, INT, FLOAT, BOOLEAN: the Python values ``str``, ``int``, ``float``, ``bool``.
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
    STRING: "#aed581",
    INT: "#4fc3f7",
    FLOAT: "#9575cd",
    BOOLEAN: "#f06292",
    ANY: "#bdbdbd",
}


def compatible(output_type: str, input_type: str) -> bool:
    """Whether an output of ``output_type`` may feed an input of ``input_type``."""
    return output_type == input_type or ANY in (output_type, input_type)
