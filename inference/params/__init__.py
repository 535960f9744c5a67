"""Parameter files of the inference package, shipped as package data."""
