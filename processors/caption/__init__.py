"""Structured captions and semantic tags, grounded in the camera geometry (SPEC.md §5).

``client`` (OpenAI-compatible chat API), ``steps`` (the paper's three steps and the
prompts in ``prompts/``), ``check`` (stated directions vs motion instructions),
``offline`` (the deterministic default without an endpoint), ``captioner`` (one clip),
``export`` (released ``caption.json``) and ``stage`` (the ``caption`` stage).
"""
