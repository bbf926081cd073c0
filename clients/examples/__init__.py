"""Short scripts that use the Python client."""
