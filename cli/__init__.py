"""The ``objstore`` command: a thin git-style layer over the objstore library."""
