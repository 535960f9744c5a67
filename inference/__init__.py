"""Tumour segmentation, radiomics and nomogram scoring for tongue MRI studies.

The package works on files and returns typed results. It never touches the
network or the job database, so the node, the training tools and scripts can
all call it.
"""
