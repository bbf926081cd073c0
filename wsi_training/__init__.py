"""Training of the project's own nucleus model (the ``learned`` backend):
data, network, loop and export. Needs PyTorch: pip install '.[train]'."""
