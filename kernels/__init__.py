"""Triton kernels and the attention processor that installs them.

- ``kernels.attention``: the flash-attention kernel's entry point (``attention``); imports
  without Triton or CUDA (``triton_available()`` then says False).
- ``kernels.processor``: the diffusers attention processor and ``install_attention``.
- ``kernels.aot``: compiles the kernel for a GPU ahead of time on a machine without one.

Set ``TRITON_INTERPRET=1`` before ``kernels.attention`` is first imported to run the kernel
on the CPU (tests only).
"""
