"""Layer 5, transfer: other stores — remotes, push, fetch, pull, clone.
Imports the layers below it."""
