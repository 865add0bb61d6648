"""Importing ComfyUI workflows: reading its formats, the mapping rules, the conversion, the report.

- :mod:`comfy_import.formats`: the API format, the UI format (0.4 and 1, subgraphs and
  group nodes expanded) into one :class:`Prompt` (a package: the prompt types, the API
  format, the UI format's reader, its subgraphs and group nodes, its raw entries);
- :mod:`comfy_import.files`: JSON files and PNGs, and recognising a ComfyUI file for
  ``run``, ``validate`` and the studio;
- :mod:`comfy_import.rules`: the declarative :data:`RULES` table (a package: the rule
  types, the value translations, the entries by family, the types left unconverted);
- :mod:`comfy_import.convert`: the conversion into a studio workflow;
- :mod:`comfy_import.report`: what it did, as text or JSON.

Nothing here imports torch, diffusers or gradio (the CLI's quick commands stay quick).
"""

from comfy_import.convert import Conversion, Converted, DroppedLink, NotConverted, convert
from comfy_import.files import Recognised, read_bytes, read_file, recognise
from comfy_import.formats import ComfyError, ComfyLink, Prompt, looks_like_comfy, read_prompt
from comfy_import.rules import RULES, SEED_MAX, Part, Rule, clean_prefix, map_sampler

__all__ = [
    "RULES",
    "SEED_MAX",
    "ComfyError",
    "ComfyLink",
    "Conversion",
    "Converted",
    "DroppedLink",
    "NotConverted",
    "Part",
    "Prompt",
    "Recognised",
    "Rule",
    "clean_prefix",
    "convert",
    "looks_like_comfy",
    "map_sampler",
    "read_bytes",
    "read_file",
    "read_prompt",
    "recognise",
]
