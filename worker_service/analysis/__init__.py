"""Pure logic of the image work: tile geometry, tissue and nucleus finding, the
merge rule at tile seams, measurements, the cell index and progress maths.

Imports nothing else of the worker (not even its errors), and no gRPC,
OpenSlide, threads or clock: tested fast and exhaustively, and shared with
``wsi_training``."""
