"""Late gadolinium enhancement (LGE): viability beside perfusion."""
