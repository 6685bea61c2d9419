"""HT-CNNs: brain-tumour segmentation of multi-parametric MRI with a STAPLE ensemble of three networks."""

__version__ = "0.1.0"
