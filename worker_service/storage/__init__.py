"""What the worker reads and writes on disk: slides through OpenSlide (confined
to the slide roots) and a job's result files (atomic, streamed)."""
