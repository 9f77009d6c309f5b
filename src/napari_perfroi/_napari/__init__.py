"""napari front end: reader, sample data and layer builders (the only napari-facing code)."""
