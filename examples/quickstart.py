"""objstore in one minute, on a local store (no server needed).

Logs a 64 MiB bf16 model, logs a fine-tune of its last two layers and shows how
few new bytes that cost, logs the fine-tune again (nothing new is stored), uses
it from another run, and links it into the model registry.

    python examples/quickstart.py [WORKDIR]     # default: ./quickstart
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import objstore
from objstore.console import human_bytes
from objstore.testing.tensorfiles import fine_tune, transformer, write_safetensors


def main() -> None:
    work = Path(sys.argv[1] if len(sys.argv) > 1 else "quickstart").absolute()
    (work / ".objstore").mkdir(parents=True, exist_ok=True)  # the store: found as the nearest .objstore
    os.chdir(work)

    base = transformer(seed=0)
    last_layers = [f"layers.{i}.attn.{p}.weight" for i in (5, 6) for p in "qkvo"]
    tuned = fine_tune(base, last_layers, seed=1)
    write_safetensors(Path("base.safetensors"), base)
    write_safetensors(Path("tuned.safetensors"), tuned)

    with objstore.init(project="quickstart", entity="newcomer", config={"lr": 3e-4}, job_type="train") as run:
        v0 = run.log_model("base.safetensors", name="tiny-llm", aliases=["base"])
        v1 = run.log_model("tuned.safetensors", name="tiny-llm", aliases=["candidate"])
        again = run.log_model("tuned.safetensors", name="tiny-llm")

    with objstore.init(project="quickstart", entity="newcomer", job_type="evaluate") as run:
        path = run.use_model("tiny-llm:candidate")
        linked = run.link_model(path, registered_model_name="Tiny-LLM", name="tiny-llm", aliases=["production"])

    print()
    print(f"store: {work / '.objstore'}")
    print(f"{'version':<34}{'size':>12}{'new bytes':>12}  aliases")
    for art in objstore.Api(entity="newcomer", project="quickstart").artifact_versions("model", "tiny-llm"):
        print(f"{art.qualified_name:<34}{human_bytes(art.size):>12}{human_bytes(art.new_bytes):>12}  {', '.join(art.aliases)}")
    print()
    print(f"fine-tune changed {len(last_layers)} of {len(base)} tensors and cost {human_bytes(v1.new_bytes)} "
          f"({v1.new_bytes / v1.size:.0%} of the model); v0 alone took {human_bytes(v0.new_bytes)}")
    print(f"logging the fine-tune again returned {again.name}: no new version, no new bytes")
    print(f"use_model('tiny-llm:candidate') -> {path}")
    print(f"link_model(...) -> {linked.qualified_name} (aliases: {', '.join(linked.aliases)}), pointing at {linked.source_qualified_name}")


if __name__ == "__main__":
    main()
