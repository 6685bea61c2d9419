"""The parts of ``htcnns train`` beyond the step loop: seed splits and folds, training-time network variants,
checkpoints, curves, ET threshold tuning and the model card (``htcnns.train`` runs them in order)."""
