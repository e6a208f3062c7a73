"""Build of objstore's optional C extensions (everything else is in pyproject.toml).

Each extension is an entry of ``EXTENSIONS``; to add one, append an
``Extension`` (and, for sources that need their own compiler flags, list them
under the extension's name in ``PER_FILE_FLAGS``, not in its ``sources``). The extensions are optional: if the compiler is
missing or a build fails, ``pip install`` still succeeds with a warning, and
objstore runs its pure-Python reference path (see ``objstore/storage/native.py``).
``OBJSTORE_REQUIRE_NATIVE=1`` turns such a failure into an error (CI sets it).
"""

from __future__ import annotations

import os
import platform
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

B3 = "csrc/blake3"
_machine = platform.machine().lower()
_x86_64 = _machine in ("x86_64", "amd64") and sys.maxsize > 2**32
_arm64 = _machine in ("aarch64", "arm64")

# BLAKE3 (vendored from github.com/BLAKE3-team/BLAKE3, c/, CC0-1.0 or Apache-2.0):
# portable C everywhere, plus on x86-64 the SSE2/SSE4.1/AVX2/AVX-512 intrinsics
# files, each compiled with the flags c/README.md gives for it (runtime dispatch
# picks the widest the CPU has); NEON on arm64; elsewhere portable only.
_blake3_sources = [f"{B3}/blake3.c", f"{B3}/blake3_dispatch.c", f"{B3}/blake3_portable.c"]
_blake3_macros: list[tuple[str, str | None]] = []
# extension name -> {source: its own extra compiler flags}
PER_FILE_FLAGS: dict[str, dict[str, list[str]]] = {}
if _x86_64 and os.name != "nt":
    PER_FILE_FLAGS["objstore.storage._native"] = {
        f"{B3}/blake3_sse2.c": ["-msse2"],
        f"{B3}/blake3_sse41.c": ["-msse4.1"],
        f"{B3}/blake3_avx2.c": ["-mavx2"],
        f"{B3}/blake3_avx512.c": ["-mavx512f", "-mavx512vl"],
    }
elif _arm64:
    _blake3_sources.append(f"{B3}/blake3_neon.c")
    _blake3_macros.append(("BLAKE3_USE_NEON", "1"))
else:
    _blake3_macros += [(m, None) for m in ("BLAKE3_NO_SSE2", "BLAKE3_NO_SSE41", "BLAKE3_NO_AVX2", "BLAKE3_NO_AVX512")]

_cflags = [] if os.name == "nt" else ["-O3", "-std=c11"]

# zstd 1.5.7 (vendored: csrc/zstd/VENDORED), the zstandard wheel's own version, for
# the batch encoder's frames; its symbols stay inside the extension.
ZSTD = "csrc/zstd"
_zstd_macros = [("ZSTDLIB_VISIBLE", ""), ("ZSTDERRORLIB_VISIBLE", ""), ("ZDICTLIB_VISIBLE", "")]
PER_FILE_FLAGS["objstore.storage._planes"] = {f"{ZSTD}/zstd.c": [] if os.name == "nt" else ["-fvisibility=hidden"]}

EXTENSIONS = [
    Extension(
        "objstore.storage._native",
        sources=["csrc/native/native.c", *_blake3_sources],
        depends=["csrc/native/gear.h", "csrc/planes/transforms.h", "csrc/planes/zstd_decoder.h", f"{B3}/blake3.h", f"{B3}/blake3_impl.h"],
        define_macros=_blake3_macros,
        extra_compile_args=_cflags,
    ),
    # The bytegroup codecs' byte-plane split and merge (objstore/storage/codecs.py),
    # and the batch encoder (split, pack6, zstd, payload layout in one call).
    Extension("objstore.storage._planes", sources=["csrc/planes/planes.c"],
              depends=["csrc/planes/transforms.h", "csrc/planes/zstd_decoder.h", f"{ZSTD}/zstd.h", f"{ZSTD}/zstd.c"],
              include_dirs=[ZSTD], define_macros=_zstd_macros, extra_compile_args=_cflags),
]


class OptionalBuildExt(build_ext):
    """Builds each extension, compiling ``PER_FILE_FLAGS`` sources with their own
    flags; a failure warns and skips the extension unless OBJSTORE_REQUIRE_NATIVE=1."""

    def build_extension(self, ext: Extension) -> None:
        try:
            special = PER_FILE_FLAGS.get(ext.name, {})
            if special:
                objects: list[str] = []
                for source, flags in special.items():
                    objects += self.compiler.compile(
                        [source], output_dir=self.build_temp, macros=ext.define_macros,
                        extra_postargs=[*ext.extra_compile_args, *flags], depends=ext.depends)
                ext.extra_objects = [*ext.extra_objects, *objects]
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001 - any compiler failure means "no extension", not "no install"
            if os.environ.get("OBJSTORE_REQUIRE_NATIVE") == "1":
                raise
            print(f"warning: objstore's C extension {ext.name} was not built ({exc}); "
                  "objstore will use its pure-Python path", file=sys.stderr)

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - e.g. no compiler at all
            if os.environ.get("OBJSTORE_REQUIRE_NATIVE") == "1":
                raise
            print(f"warning: objstore's C extensions were not built ({exc}); objstore will use its pure-Python path",
                  file=sys.stderr)


setup(ext_modules=EXTENSIONS, cmdclass={"build_ext": OptionalBuildExt})
