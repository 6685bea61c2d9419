"""Inference, one module per stage, data flowing one way: ``cases`` -> ``io`` / ``validate`` -> ``preprocess`` ->
``predict`` (the three networks) -> ``postprocess`` -> ``fuse`` -> ``io`` (write); ``pipeline`` runs them per case,
with ``report``, ``qc``, ``review``, ``batch_page``, ``shards`` and ``interrupts`` around it."""
