"""flexrec.serving: a trained policy as a recommender people can use.

- :mod:`flexrec.serving.model`: :class:`~flexrec.serving.model.ServedModel`, a policy with the
  needs it knows and the item catalogue it ranks from, loaded from a training checkpoint or an
  export (:func:`~flexrec.serving.model.load_served_model`).
- :mod:`flexrec.serving.recommender`: requests checked against the model (unknown items, needs,
  too many candidates) and ranked in batches, with per-item probabilities.
- :mod:`flexrec.serving.batcher`: the asyncio micro-batcher of the HTTP service.
- :mod:`flexrec.serving.server`: ``flexrec serve``, the HTTP service (FastAPI + uvicorn).
- :mod:`flexrec.serving.export`: ``flexrec export``, a PEFT adapter folder (LLM policies) or one
  self-contained file (the native policy).

Nothing here is imported by the training code; FastAPI and uvicorn are imported only by the
server (the ``serve`` extra).
"""
