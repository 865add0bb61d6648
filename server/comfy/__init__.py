"""ComfyUI's HTTP protocol, spoken by the studio's server over its own job queue.

ComfyUI clients (scripts, bots, client libraries) talk to a server through a few
routes at the root of the site and a websocket: ``POST /prompt`` takes an
API-format workflow, ``/ws`` reports its progress, ``/history`` and ``/view`` give
its pictures. :func:`comfy_router` answers them; docs/api.md, "ComfyUI clients",
describes the protocol as served. One file per job:

- :mod:`.routes`: :func:`comfy_router`, the routes wired to the handlers below;
- :mod:`.auth`: access: ``/api``'s rules, plus HTTP Basic ``studio:TOKEN`` and the
  websocket's checks;
- :mod:`.prompt`: ``POST /prompt``: a prompt converted by the importer, validated
  and queued on the same :class:`~server.jobs.JobQueue` as the page's runs;
- :mod:`.errors`: ComfyUI's ``400`` shape naming the ComfyUI nodes at fault;
- :mod:`.info`: what a job keeps for ComfyUI clients (``metadata["comfy"]``) and
  the numbers ComfyUI gives prompts;
- :mod:`.outputs`: saved pictures in ComfyUI's shape, by node;
- :mod:`.hub` and :mod:`.websocket`: the websocket: clients, the loop that follows
  the queue, and the connection itself;
- :mod:`.messages`: the queue's events as ComfyUI's websocket messages;
- :mod:`.previews`: latent previews as ComfyUI's binary frames;
- :mod:`.views`: ``/queue``, ``/interrupt`` and ``/history`` in ComfyUI's shapes;
- :mod:`.files`: ``/view`` and ``/upload/image`` (output and input folders only);
- :mod:`.object_info`: ComfyUI's node descriptions of what the importer converts;
- :mod:`.system`: ``/system_stats`` and ``/embeddings``.

Nothing here imports torch, diffusers or gradio when imported.
"""

from server.comfy.routes import comfy_router

__all__ = ["comfy_router"]
