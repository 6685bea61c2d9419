"""Evaluation: Dice, HD95 and the BraTS 2023 lesion-wise metrics (``metrics``) and the ``htcnns evaluate``
command over folders of label maps (``evaluate``)."""
