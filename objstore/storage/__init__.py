"""Layer 1, storage: bytes, ids and formats, and where they live.

Ids, chunking and segmentation, codecs, the pack format, the metadata objects,
the backends (local directory, object storage), the object database over them,
and trees. Nothing here knows about names, refs' meaning, runs or users; it
imports only the base modules (errors, constants, faults, console).
"""
