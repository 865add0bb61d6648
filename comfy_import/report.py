"""What a conversion did, for people (text) and programs (JSON)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from comfy_import.convert import Conversion, Converted

#: How the report says a node's kept mode.
MODE_WORDS = {"mute": "muted", "bypass": "bypassed"}


def converted_line(item: Converted) -> str:
    """``comfy id 3 KSampler -> Sampler``, with ``(muted, kept muted)`` when ComfyUI had it muted."""
    note = f" ({MODE_WORDS[item.mode]} in ComfyUI, kept {MODE_WORDS[item.mode]})" if item.mode else ""
    if len(item.nodes) == 1 and item.nodes[0][0] == item.comfy_id:
        return f"comfy id {item.comfy_id} {item.comfy_type} -> {item.nodes[0][1]}{note}"
    made = ", ".join(f"{node_type} {node_id!r}" for node_id, node_type in item.nodes)
    return f"comfy id {item.comfy_id} {item.comfy_type} -> {made}{note}"


def summary(result: Conversion) -> str:
    """One line for ``run``/``validate``/the studio: what the file is and how much came across."""
    return (
        f"this is a ComfyUI workflow ({result.label}): imported {len(result.converted)} "
        f"of {result.total} nodes"
    )


def missing_lines(result: Conversion) -> list[str]:
    """The nodes not converted and the links dropped, one line each."""
    lines = [f"not converted: comfy id {n.comfy_id} {n.comfy_type}: {n.reason}" for n in result.not_converted]
    lines += [f"link dropped: {d}" for d in result.dropped_links]
    return lines


def print_report(result: Conversion, issues: list[Any], path: Path, out: Path | None) -> None:
    print(f"{path}: converted {len(result.converted)} of {result.total} ComfyUI nodes ({result.label})")
    for item in result.converted:
        print(f"  {converted_line(item)}")
    if result.not_converted:
        print("not converted:")
        for missing in result.not_converted:
            print(f"  comfy id {missing.comfy_id} {missing.comfy_type}: {missing.reason}")
    if result.dropped_links:
        print("links dropped:")
        for dropped in result.dropped_links:
            print(f"  {dropped}")
    if result.warnings:
        print("warnings:")
        for warning in result.warnings:
            print(f"  {warning}")
    if out is None:
        print("nothing could be converted; no file written")
        return
    if issues:
        count = f"{len(issues)} problem{'s' if len(issues) != 1 else ''}"
        print(f"validation of the result: {count} (fix them in the studio or the file):")
        for issue in issues:
            print(f"  - {issue}")
    else:
        print("validation of the result: valid")
    print(f"wrote {out}")


def json_report(result: Conversion, issues: list[Any], out: Path | None, code: int) -> dict[str, Any]:
    return {
        "exit_code": code,
        "complete": result.complete,
        "format": result.label,
        "out": str(out) if out is not None else None,
        "converted": [
            {
                "comfy_id": c.comfy_id,
                "comfy_type": c.comfy_type,
                "nodes": [{"id": i, "type": t} for i, t in c.nodes],
                "mode": c.mode,
                "text": converted_line(c),
            }
            for c in result.converted
        ],
        "not_converted": [
            {"comfy_id": n.comfy_id, "comfy_type": n.comfy_type, "reason": n.reason}
            for n in result.not_converted
        ],
        "dropped_links": [
            {
                "source_id": d.source_id,
                "source_type": d.source_type,
                "output": d.output,
                "target_id": d.target_id,
                "target_type": d.target_type,
                "input": d.input,
                "reason": d.reason,
                "text": str(d),
            }
            for d in result.dropped_links
        ],
        "warnings": result.warnings,
        "issues": [i.to_dict() for i in issues],
    }
