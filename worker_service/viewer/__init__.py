"""The viewer's reads of a slide and of a finished job: Deep Zoom tiles, nuclei
by box, nucleus density. Knows nothing of gRPC."""
