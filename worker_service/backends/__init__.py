"""Segmentation backends: one ``Backend`` object per segmenter (its name, pixel
size, what it needs, how it prepares a job and builds its segmenter) and the
registry the pipeline looks them up in. Builds on ``analysis`` only."""
