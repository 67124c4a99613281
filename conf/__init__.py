"""Hydra configs shipped with the package (found by installed and editable reidgen alike)."""
