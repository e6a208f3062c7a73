"""Layer 6, maintenance: fsck, gc, repair, du and cat-file. Imports the layers below it."""
