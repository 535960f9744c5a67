"""Training side of otscc-node: phantoms, model training, statistics, reports and the demo model."""
