"""Layer 3, model: names, refs, the store, versions, reachability, deletion.

What a collection, a version, an alias and a registry link are, how refs move
(create-only or compare-and-swap, each with its reflog), what a version, a run
and a ref reach. Imports files, storage and the base modules.
"""
