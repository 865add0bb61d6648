"""The page's History panel: recent runs (page and API alike) and restoring one into the editor.

:func:`add_history_panel` is called from ``build_blocks`` with the components it
fills; :class:`HistoryPanel` holds its handlers as plain methods for tests.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import gradio as gr

from server.jobs import JobQueue

#: Columns of the table, in order.
COLUMNS = ("id", "status", "from", "submitted", "seed", "outputs")
#: Runs listed at once.
ROWS = 50
_MAX_OUTPUTS_SHOWN = 4


def _when(seconds: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds)) if seconds else ""


def _outputs(files: list[str]) -> str:
    shown = ", ".join(files[:_MAX_OUTPUTS_SHOWN])
    more = len(files) - _MAX_OUTPUTS_SHOWN
    return shown + (f" and {more} more" if more > 0 else "")


class HistoryPanel:
    """What the History panel shows and does, over the studio's job queue."""

    def __init__(self, jobs: Callable[[], JobQueue]) -> None:
        self._jobs = jobs

    def rows(self) -> list[list[Any]]:
        return [
            [
                job["id"],
                job["status"],
                job["source"],
                _when(job["submitted"]),
                "" if job["seed"] is None else str(job["seed"]),
                _outputs(job["outputs"]),
            ]
            for job in self._jobs().recent(ROWS)
        ]

    def refresh(self) -> tuple[list[list[Any]], Any]:
        """(table rows, dropdown update) for the runs now in the history."""
        rows = self.rows()
        choices = [(f"{row[0]} · {row[1]} · {row[3]}", row[0]) for row in rows]
        return rows, gr.update(choices=choices, value=choices[0][1] if choices else None)

    def restore(self, job_id: str | None) -> tuple[Any, Any, str]:
        """(editor text, seed, status) restoring the chosen run's workflow and seed."""
        if not job_id:
            return gr.skip(), gr.skip(), "Choose a run to restore first."
        found = self._jobs().lookup(job_id)
        if found is None:
            return gr.skip(), gr.skip(), f"There is no run {job_id} in the history."
        workflow = found.get("workflow")
        text = workflow if isinstance(workflow, str) else json.dumps(workflow, indent=2) + "\n"
        seed = found.get("seed")
        said = f" with its seed {seed}" if seed is not None else ""
        return text, "" if seed is None else str(seed), f"Restored the workflow of run {job_id}{said}."


def add_history_panel(handlers: Any, editor: gr.Code, seed: gr.Textbox, status: gr.Markdown) -> HistoryPanel:
    """An accordion listing recent runs, with a button putting one's workflow back in ``editor``.

    ``handlers`` is the page's StudioHandlers (its ``jobs`` queue is read when needed).
    """
    quick: dict[str, Any] = {"api_visibility": "private", "concurrency_limit": None}
    panel = HistoryPanel(lambda: handlers.jobs)
    with gr.Accordion("History", open=False) as accordion:
        table = gr.Dataframe(
            headers=list(COLUMNS), value=[], interactive=False, label="Recent runs", max_height=320
        )
        with gr.Row():
            chosen = gr.Dropdown(label="Run", choices=[], scale=3)
            restore = gr.Button("Restore workflow", size="md", scale=1, min_width=80)
            refresh = gr.Button("Refresh", size="md", scale=1, min_width=80)
    accordion.expand(panel.refresh, outputs=[table, chosen], **quick)
    refresh.click(panel.refresh, outputs=[table, chosen], **quick)
    restore.click(panel.restore, inputs=chosen, outputs=[editor, seed, status], **quick)
    return panel
