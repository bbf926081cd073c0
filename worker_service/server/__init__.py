"""The worker's gRPC face: the servicer, a running job's life cycle, joining a
scheduler, metrics and the process's entry point. The only layer that imports
gRPC or the generated worker API."""
