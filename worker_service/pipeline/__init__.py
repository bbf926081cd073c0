"""A job from slide to result files: its phases, the tile work a pool process
does, and the process pool shared by every job. Knows nothing of gRPC."""
