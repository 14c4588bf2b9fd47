"""Images to batches: ImageFolders and synthetic data (datasets), decoding, the transforms of both
pipelines, and the resumable, seeded loaders."""
