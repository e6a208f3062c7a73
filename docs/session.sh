#!/usr/bin/env bash
# The README's command-line session, run for real: `bash docs/session.sh DIR` runs
# it in the empty directory DIR (as $HOME) and prints the transcript a person sees,
# each command after "$ " and its stdout and stderr as they come.
# docs/session.py puts that transcript into README.md; tests/test_readme_session.py
# fails when the README's copy drifts from a fresh run (digests, run ids, times and
# sizes aside).
set -euo pipefail

HOME="$(cd "$1" && pwd)"
export HOME
cd "$HOME"
unset OBJSTORE_DIR OBJSTORE_PROJECT OBJSTORE_ENTITY OBJSTORE_RUN_ID WANDB_PROJECT WANDB_ENTITY WANDB_RUN_ID \
      OBJSTORE_QUIET OBJSTORE_DEBUG OBJSTORE_CONFIG
export NO_COLOR=1 COLUMNS=80

# A part of the session: README.md shows each in its own block, marked <!-- session: NAME -->.
part() { printf '#### %s\n' "$1"; }

# Shown as a person types it: "$ command", then what it prints.
run() {
    printf '$ %s\n' "$1"
    eval "$1" 2>&1 || printf '[exit %d]\n' "$?"
}

# Not shown: the training that made the model family (a base model and two fine-tunes of it).
python - <<'PY'
from pathlib import Path
from objstore.testing.tensorfiles import fine_tune, transformer, write_safetensors
base = transformer(0, layers=4, hidden=256, vocab=1024)
Path("work").mkdir()
write_safetensors(Path("work/base.safetensors"), base, {"format": "pt"})
tuned = fine_tune(base, ["layers.3.attn.q.weight", "layers.3.attn.v.weight"], 1)
write_safetensors(Path("work/tuned.safetensors"), tuned, {"format": "pt", "epochs": "3"})
write_safetensors(Path("work/tuned-2.safetensors"), fine_tune(tuned, ["layers.3.attn.o.weight"], 2),
                  {"format": "pt", "epochs": "5"})
PY
mkdir team-store
cd work

part start
run 'objstore init'
run 'export OBJSTORE_PROJECT=demo'
run 'objstore log-model base.safetensors --name llm --alias base'
run 'objstore log-model tuned.safetensors --name llm -m lr=3e-4 -d "q and v of layer 3 tuned"'
run 'objstore log-model tuned-2.safetensors --name llm -m lr=1e-4'

part look
run 'objstore ls'
run 'objstore log llm'
run 'objstore show llm:v1'
run 'objstore diff llm:v0 llm:v1'

part name
run 'objstore alias llm:v1 production'
run 'objstore show llm:prodution'
run 'objstore link-model tuned.safetensors Tiny-LLM --name llm --alias staging'

part share
run 'objstore remote add team ~/team-store'
run 'objstore push team lmm'
run 'objstore push team llm model-registry/Tiny-LLM'
run 'objstore status'
run 'cd ~ && objstore clone ~/team-store laptop && cd laptop'
run 'objstore use-model llm:production'

part tidy
run 'objstore delete llm:v2 --yes'
run 'objstore delete llm:v2 --delete-aliases --yes'
run 'objstore gc'
run 'objstore push'
run 'objstore gc'
run 'objstore fsck'
