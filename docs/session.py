"""Run docs/session.sh and put its transcript into README.md, or (``--check``) say
whether the README's copy still matches a fresh run.

Each part the script prints (``#### NAME``) replaces the ``console`` block after
``<!-- session: NAME -->`` in README.md. The run happens in a fresh temporary HOME,
as the user ``charlie``, and shows that HOME as ``/home/charlie``. Compared
normalised: digests and ids, run ids, times, sizes and column padding vary from
run to run, the words and everything else may not.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BLOCK = re.compile(r"(<!-- session: (\S+) -->\n```console\n)(.*?)(```)", re.S)
VARYING = [
    (re.compile(r"\b[0-9a-f]{8,64}\b"), "<hex>"),
    (re.compile(r"(\w+/\w+/)[a-z0-9]{8}\b(?![/:])"), r"\1<run>"),
    (re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"), "<time>"),
    (re.compile(r"\d+(\.\d)? (B|KiB|MiB|GiB)\b"), "<size>"),
    (re.compile(r"[ \t]+"), " "),
]


def transcript(bin_dir: Path) -> dict[str, str]:
    """The session's parts, as a person sees them."""
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "USER": "charlie", "LOGNAME": "charlie"}
        proc = subprocess.run(["bash", str(ROOT / "docs" / "session.sh"), home], capture_output=True, text=True,
                              env=env, timeout=600, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise RuntimeError(f"docs/session.sh failed ({proc.returncode}): {proc.stderr}")
        text = proc.stdout.replace(os.path.realpath(home), "/home/charlie").replace(home, "/home/charlie")
    parts: dict[str, str] = {}
    for chunk in text.split("#### ")[1:]:
        name, _, body = chunk.partition("\n")
        parts[name] = body
    return parts


def normalise(text: str) -> str:
    for pattern, replacement in VARYING:
        text = pattern.sub(replacement, text)
    return text.strip()


def readme_parts(text: str) -> dict[str, str]:
    return {m.group(2): m.group(3) for m in BLOCK.finditer(text)}


def updated(text: str, parts: dict[str, str]) -> str:
    return BLOCK.sub(lambda m: m.group(1) + parts.get(m.group(2), m.group(3)) + m.group(4), text)


def main() -> int:
    parts = transcript(Path(sys.executable).parent)
    text = README.read_text()
    if "--check" in sys.argv:
        shown = readme_parts(text)
        bad = [n for n in parts if normalise(shown.get(n, "")) != normalise(parts[n])]
        print("README session: " + ("drifted in " + ", ".join(bad) if bad else "up to date"))
        return 1 if bad else 0
    README.write_text(updated(text, parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
