"""objstore benchmarks: ``python -m benchmarks --help``."""
