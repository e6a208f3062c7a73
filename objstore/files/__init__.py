"""Layer 2, files: local files in and out of the object database.

Ingest (files to chunks and file objects), materialize and the one safe writer
into a destination, the local caches (stat cache, segment cache), and reference
entries (files that stay where they are). Imports storage and the base modules.
"""
