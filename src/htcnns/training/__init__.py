"""Training: the ``htcnns train`` command (``command``: step loop in ``loop``, seeds and folds, training-time network
variants, checkpoints, curves, ET threshold tuning, the model card) and ``htcnns export``; every data source —
procedural phantoms (``phantoms``), the SynthSeg-style generators (``synthseg``, v1 and v2) and folders of real
labelled cases (``real``)."""
