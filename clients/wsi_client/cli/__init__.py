"""``wsi``, the command-line client."""
