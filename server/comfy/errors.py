"""ComfyUI's answer to a prompt that cannot run: ``{"error": {...}, "node_errors": {...}}``.

ComfyUI clients show ``node_errors`` against their own graph, so every error is
filed under the ComfyUI node it came from: nodes the importer could not convert
and links lost with them (:func:`conversion_errors`), and the validator's issues
mapped back from our node ids (:func:`issue_errors`); ``extra_info.input_name``
names the input when there is one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from server.comfy.info import ComfyInfo

if TYPE_CHECKING:
    from comfy_import import Conversion
    from graph.issues import Issue

#: The top-level error type of a prompt whose nodes have errors (ComfyUI's words).
FAILED_VALIDATION = "prompt_outputs_failed_validation"


def error_body(
    kind: str, message: str, details: str = "", node_errors: Mapping[str, Any] | None = None
) -> dict:
    """The whole answer: the top-level error and the errors by ComfyUI node id."""
    return {
        "error": {"type": kind, "message": message, "details": details, "extra_info": {}},
        "node_errors": dict(node_errors or {}),
    }


def node_error(kind: str, message: str, details: str = "", input_name: str | None = None) -> dict:
    """One error of one node."""
    extra = {"input_name": input_name} if input_name else {}
    return {"type": kind, "message": message, "details": details, "extra_info": extra}


def _add(errors: dict[str, Any], comfy_id: str, class_type: str, error: dict[str, Any]) -> None:
    entry = errors.setdefault(comfy_id, {"errors": [], "dependent_outputs": [], "class_type": class_type})
    entry["errors"].append(error)


class PromptRefused(Exception):
    """A prompt answered with ComfyUI's error shape (``body``) and ``status``."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body["error"]["message"])
        self.status = status
        self.body = body


def failed_validation(details: str, node_errors: Mapping[str, Any]) -> PromptRefused:
    """The ``400`` of a prompt whose nodes have errors."""
    return PromptRefused(
        400, error_body(FAILED_VALIDATION, "Prompt outputs failed validation", details, node_errors)
    )


def conversion_errors(conversion: Conversion) -> dict[str, Any]:
    """ComfyUI ``node_errors`` for what the importer could not convert: nodes, and links lost."""
    errors: dict[str, Any] = {}
    for item in conversion.not_converted:
        message = f"the studio cannot run this node: {item.reason}"
        _add(errors, item.comfy_id, item.comfy_type, node_error("not_converted", message))
    for link in conversion.dropped_links:
        message = (
            f"input {link.input!r} from node {link.source_id} ({link.source_type}) output {link.output} "
            f"is lost: {link.reason}"
        )
        _add(errors, link.target_id, link.target_type, node_error("link_dropped", message, "", link.input))
    return errors


def issue_errors(issues: Iterable[Issue], info: ComfyInfo, prompt: Mapping[str, Any]) -> tuple[dict, str]:
    """``(node_errors, details)``: the validator's issues under the ComfyUI nodes they came from.

    ``details`` joins the issues that name no node (they have no place in ``node_errors``).
    """
    errors: dict[str, Any] = {}
    loose: list[str] = []
    for issue in issues:
        comfy_id = info.comfy_id(issue.node_id)
        if comfy_id is None:
            loose.append(issue.message)
            continue
        node = prompt.get(comfy_id)
        class_type = node.get("class_type", "") if isinstance(node, dict) else (issue.node_type or "")
        where = f"{issue.input}: " if issue.input else ""
        error = node_error(issue.code, issue.message, where + (issue.hint or issue.message), issue.input)
        _add(errors, comfy_id, str(class_type), error)
    return errors, "; ".join(loose)
