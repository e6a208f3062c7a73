"""Fixtures for the tests, the benchmarks and the quickstart (synthetic models).
Nothing in the library imports this package."""
