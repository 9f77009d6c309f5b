"""Stress perfusion cardiac MRI in napari."""
__version__ = "0.1.0"
