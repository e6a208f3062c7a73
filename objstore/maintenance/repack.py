"""``objstore maintenance``'s repacking of small packs: :mod:`objstore.storage.repack`."""

from objstore.storage.repack import REPACK_MIN_PACKS, SMALL_PACK_BYTES, RepackReport, repack_small_packs

__all__ = ["REPACK_MIN_PACKS", "SMALL_PACK_BYTES", "RepackReport", "repack_small_packs"]
