"""The CLI in a real pseudo-terminal (pexpect): the progress bar, the notes above
it, the one summary line, Ctrl-C; and the same commands piped, where none of it shows.

What the terminal shows is computed from the bytes written to it by a small
screen model (carriage return, newline, cursor up, erase, colours ignored), so
"no stale characters" is judged on the screen a person would see, not on the
stream.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import textwrap
from pathlib import Path

import numpy as np
import pexpect
import pytest
from cli_helpers import OBJSTORE, run_cli

from objstore.settings import default_entity

BAR = re.compile(r"\d+%\|")
ETA = re.compile(r"ETA ([^\s\x1b]+(?: [^\s\x1b]+)?)")
ESCAPE = re.compile(r"\x1b\[\d*[A-Za-z]")
ENTITY = default_entity()
HUMAN_ETA = re.compile(r"^(\?|<1s|\d+s|\d+m \d\ds|\d+h(?: \d\dm)?|\d+d \d+h)$")


class Screen:
    """Enough of a terminal for tqdm and click: text, \\r, \\n, ESC[nA (up), ESC[K / ESC[2K (erase), SGR ignored."""

    def __init__(self, columns: int) -> None:
        self.columns = columns
        self.rows: list[list[str]] = [[]]
        self.row = self.col = 0
        self.bar_rows: set[int] = set()  # rows a bar was ever drawn on

    def feed(self, text: str) -> None:
        i = 0
        while i < len(text):
            ch = text[i]
            if ch == "\x1b":
                m = re.match(r"\x1b\[(\d*)([A-Za-z])", text[i:])
                assert m, f"unknown escape {text[i:i + 8]!r}"
                n, op = int(m.group(1) or 1), m.group(2)
                if op == "A":
                    self.row = max(self.row - n, 0)
                elif op == "K":
                    line = self.rows[self.row]
                    del line[self.col if m.group(1) in ("", "0") else 0:]
                i += len(m.group(0))
                continue
            if ch == "\r":
                self.col = 0
            elif ch == "\n":
                self.row += 1
                self.col = 0
                while len(self.rows) <= self.row:
                    self.rows.append([])
            else:
                line = self.rows[self.row]
                while len(line) <= self.col:
                    line.append(" ")
                line[self.col] = ch
                self.col += 1
                if BAR.search("".join(line)):
                    self.bar_rows.add(self.row)
            i += 1

    def lines(self) -> list[str]:
        return ["".join(r).rstrip() for r in self.rows]


def spawn(args: list[str], env: dict[str, str], columns: int = 100, timeout: float = 300) -> tuple[int, str]:
    child = pexpect.spawn(args[0], args[1:], env=env, dimensions=(24, columns), encoding="utf-8", timeout=timeout)
    out = child.read()
    child.close()
    return child.exitstatus if child.exitstatus is not None else -(child.signalstatus or 0), out


def base_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OBJSTORE_")}
    env.update({"TERM": "xterm", "HOME": str(tmp_path), "NO_COLOR": "1"})
    return env


def big_file(path: Path, mib: int) -> Path:
    rng = np.random.default_rng(7)
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(rng.integers(0, 256, 1 << 20, dtype=np.uint8).tobytes())
    return path


# A deterministic driver of the CLI's bar: a huge total (an ETA of days), a note
# from the library, the window narrowed, then a new stage with a much shorter line.
DRIVER = textwrap.dedent("""
    import fcntl, struct, sys, termios, time
    from cli import output as out
    from objstore.console import say
    with out.progress("demo", 50 * 2**40, units={"objects": "objects"}) as bar:
        for _ in range(6):
            bar.on_bytes(2**20) if bar.on_bytes else None
            time.sleep(0.12)
        say("a note from the library")
        say("the summary the command prints itself", summary=True)
        for _ in range(3):
            bar.on_bytes(2**20) if bar.on_bytes else None
            time.sleep(0.12)
        if sys.stderr.isatty():
            fcntl.ioctl(sys.stderr.fileno(), termios.TIOCSWINSZ, struct.pack("HHHH", 24, 60, 0, 0))
        for _ in range(3):
            bar.on_bytes(2**20) if bar.on_bytes else None
            time.sleep(0.12)
        if bar.on_stage:
            for i in range(1, 4):
                bar.on_stage("objects", i, 3)
                time.sleep(0.12)
    print("done: the one summary line")
""")


def test_bar_in_a_terminal_one_line_human_eta_notes_above_no_stale_characters(tmp_path: Path) -> None:
    code, raw = spawn([sys.executable, "-c", DRIVER], base_env(tmp_path))
    assert code == 0, raw
    screen = Screen(100)
    screen.feed(raw)
    lines = [line for line in screen.lines() if line]
    # The note is a line of its own, above where the bar was, never inside a bar line.
    assert lines.count("objstore: a note from the library") == 1, lines
    assert not any("a note" in line and BAR.search(line) for line in lines)
    # Summary notes are the command's to print: the library's is dropped, the command's stays.
    assert "the summary the command prints itself" not in raw
    assert lines[-1] == "done: the one summary line"
    # The bar is cleared at the end, and was drawn on one row at a time: the row
    # above which the note went, then the row below it.
    assert not any(BAR.search(line) for line in lines), lines
    assert len(screen.bar_rows) == 2 and max(screen.bar_rows) - min(screen.bar_rows) == 1
    # Human ETAs: days and hours for 50 TiB at a few MiB/s, never raw seconds.
    etas = ETA.findall(raw)
    assert etas and all(HUMAN_ETA.match(e) for e in etas), etas
    assert any(re.fullmatch(r"\d+d \d+h", e) for e in etas)
    assert re.search(r"\d+\.\d MiB/50\.0 TiB", raw) and "MiB/s" in raw
    # Width: after the window narrowed to 60 columns, no redraw is wider.
    draws = [ESCAPE.sub("", d) for d in re.split(r"[\r\n]", raw) if BAR.search(d)]
    narrowed = [d for d in draws if "objects" in d]
    assert narrowed and all(len(d.rstrip()) <= 60 for d in narrowed)
    # No stale characters: the shorter "objects" redraw left nothing of the longer
    # byte bar after it. Check the screen just before the final clear.
    last = raw.rfind(narrowed[-1]) + len(narrowed[-1]) + len("\x1b[K")
    before_clear = Screen(100)
    before_clear.feed(raw[:last])
    row = max(before_clear.bar_rows)
    assert before_clear.lines()[row] == narrowed[-1].rstrip(), (before_clear.lines()[row], narrowed[-1])


def test_driver_piped_shows_no_bar_but_the_note(tmp_path: Path) -> None:
    import subprocess

    proc = subprocess.run([sys.executable, "-c", DRIVER], capture_output=True, text=True, env=base_env(tmp_path), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "objstore: a note from the library\n"
    assert proc.stdout == "done: the one summary line\n"


def test_log_and_use_model_in_a_terminal(tmp_path: Path) -> None:
    env = base_env(tmp_path)
    store = tmp_path / "store"
    model = big_file(tmp_path / "model.bin", 48)
    run_cli(store, "init")
    code, raw = spawn([str(OBJSTORE), "--store", str(store), "log-model", str(model), "--name", "big"], env)
    assert code == 0, raw
    screen = Screen(100)
    screen.feed(raw)
    lines = [line for line in screen.lines() if line]
    assert len(lines) == 1 and lines[0].startswith("logged ") and "new stored" in lines[0], lines  # one summary line
    assert "objstore: logged" not in raw  # the library's wording of the same is not printed too
    assert "logging" in raw and BAR.search(raw), raw  # a bar was drawn
    assert all(HUMAN_ETA.match(e) for e in ETA.findall(raw)), ETA.findall(raw)
    assert len(screen.bar_rows) == 1

    code, raw = spawn([str(OBJSTORE), "--store", str(store), "use-model", "big", "--root", str(tmp_path / "out")], env)
    assert code == 0, raw
    screen = Screen(100)
    screen.feed(raw)
    assert [line for line in screen.lines() if line] == [str(tmp_path / "out" / "model.bin")]
    assert "downloading" in raw and BAR.search(raw)


def test_link_model_draws_the_byte_bar(tmp_path: Path) -> None:
    env = base_env(tmp_path)
    store = tmp_path / "store"
    model = big_file(tmp_path / "model.bin", 24)
    run_cli(store, "init")
    code, raw = spawn([str(OBJSTORE), "--store", str(store), "link-model", str(model), "Big", "--name", "big"], env)
    assert code == 0, raw
    assert "linking" in raw and BAR.search(raw) and "/24.0 MiB" in raw, raw  # bytes against the file's size
    assert all(HUMAN_ETA.match(e) for e in ETA.findall(raw)), ETA.findall(raw)
    screen = Screen(100)
    screen.feed(raw)
    assert [line for line in screen.lines() if line] == [f"linked {ENTITY}/uncategorized/big:v0 as {ENTITY}/model-registry/Big:v0"]


def test_index_merge_and_ttl_expiry_report_progress(tmp_path: Path) -> None:
    from datetime import timedelta

    import objstore
    from objstore.model.deletion import expire_versions
    from objstore.model.store import Store

    with objstore.init("e", "p", store=tmp_path / "s") as run:
        for i in range(3):
            (tmp_path / "f").write_bytes(os.urandom(1000) + bytes([i]))
            art = run.log_model(str(tmp_path / "f"), name=f"m{i}")
            art.ttl = timedelta(seconds=1)
            art.save()
    store = Store.open_existing(tmp_path / "s")
    seen: list[tuple[str, int, int]] = []
    expire_versions(store, dry_run=True, progress=lambda *a: seen.append(a))
    assert seen == [("ttl", 1, 3), ("ttl", 2, 3), ("ttl", 3, 3)]
    seen.clear()
    assert store.odb.compact_index(progress=lambda *a: seen.append(a)).idx_merged == 3
    assert seen[-1] == ("indexes", 3, 3) and all(stage == "indexes" and total == 3 for stage, _, total in seen)
    store.close()


@pytest.fixture(scope="module")
def three_packs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store of three sessions' packs (so three loose pack indexes for maintenance to merge)."""
    import objstore

    root = tmp_path_factory.mktemp("three")
    store = root / "store"
    for i in range(3):
        with objstore.init("e", "p", store=store) as run:
            run.log_model(str(big_file(root / f"m{i}.bin", 2)), name=f"m{i}")
    return store


# maintenance last: it merges the indexes the others read loose
@pytest.mark.parametrize("command", [["fsck"], ["gc", "--dry-run"], ["maintenance"]])
def test_fsck_gc_and_maintenance_draw_a_bar(three_packs: Path, tmp_path: Path, command: list[str]) -> None:
    env = base_env(tmp_path)
    code, raw = spawn([str(OBJSTORE), "--store", str(three_packs), *command], env)
    assert code == 0, raw
    assert BAR.search(raw), raw
    screen = Screen(100)
    screen.feed(raw)
    assert not any(BAR.search(line) for line in screen.lines())  # cleared before the summary
    piped = run_cli(three_packs, *command)
    assert "%|" not in piped.err + piped.out


def test_piped_commands_print_no_bar(tmp_path: Path) -> None:
    store = tmp_path / "store"
    run_cli(store, "init")
    r = run_cli(store, "log-model", str(big_file(tmp_path / "m.bin", 4)), "--name", "m")
    assert r.err == "" and r.out.count("\n") == 1 and r.out.startswith("logged ")
    remote = tmp_path / "remote"
    r = run_cli(store, "push", str(remote))
    assert r.err == "" and r.out.count("\n") == 1 and r.out.startswith("pushed")
    r = run_cli(store, "fsck")
    assert r.err == "" and "%|" not in r.out


def test_ctrl_c_exits_130_with_one_line(tmp_path: Path) -> None:
    env = base_env(tmp_path)
    store = tmp_path / "store"
    run_cli(store, "init")
    model = big_file(tmp_path / "model.bin", 160)
    # A person's shell leaves SIGINT at its default; a test runner started in the
    # background (`cmd &` without job control) passes it on ignored, and then no ^C
    # could ever reach the command: give the child what a terminal user has.
    child = pexpect.spawn(str(OBJSTORE), ["--store", str(store), "log-model", str(model), "--name", "big"], env=env,
                          dimensions=(24, 100), encoding="utf-8", timeout=300,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    child.expect(r"[1-9][0-9.]* MiB/160")  # the bar shows bytes done: chunks are being stored
    seen = f"{child.before}{child.after}"
    child.sendintr()  # ^C on the terminal: SIGINT to the foreground process group
    rest = child.read()
    child.close()
    assert child.exitstatus == 130, (child.exitstatus, child.signalstatus, rest)
    assert "Traceback" not in rest
    screen = Screen(100)
    screen.feed(seen + rest)
    lines = [line for line in screen.lines() if line.strip() and line.strip() != "^C"]
    assert lines == ["objstore: error: interrupted"], lines
    assert run_cli(store, "fsck").code == 0  # nothing half-written is damage


LONG_NAME = "a-very-long-model-name-that-someone-typed-for-their-finetune-of-llama-3-8b-instruct-with-lora"


def test_tables_fit_an_80_column_terminal_and_stay_whole_when_piped(tmp_path: Path) -> None:
    """At 80 columns a table row wider than the window would wrap into the next row:
    the widest cells are cut in the middle with '…' (both ends of a name are what
    tells names apart), on a terminal only; a pipe gets every cell whole."""
    env = {**base_env(tmp_path), "OBJSTORE_PROJECT": "demo"}
    store = tmp_path / "store"
    run_cli(store, "init")
    (tmp_path / "m.bin").write_bytes(os.urandom(5000))
    for name in ("llm", LONG_NAME):
        run_cli(store, "log-model", str(tmp_path / "m.bin"), "--name", name, "--alias", "best", env=env)
    for command in (["ls", "demo"], ["log", "llm"], ["log", LONG_NAME], ["runs"]):
        code, raw = spawn([str(OBJSTORE), "--store", str(store), *command], env, columns=80)
        assert code == 0, raw
        screen = Screen(80)
        screen.feed(raw)
        lines = [line for line in screen.lines() if line]
        assert lines and all(len(line) <= 80 for line in lines), (command, lines)
        piped = run_cli(store, *command, env=env).out
        assert "…" not in piped and len(piped.splitlines()) == len(lines)
    code, raw = spawn([str(OBJSTORE), "--store", str(store), "ls", "demo"], env, columns=80)
    row = next(line for line in raw.splitlines() if line.startswith("a-very"))
    assert "…" in row and row.split()[0].endswith("with-lora")  # cut in the middle, its end kept
    assert LONG_NAME in run_cli(store, "ls", "demo", env=env).out


def test_ctrl_c_during_use_model_leaves_no_partial_download(tmp_path: Path) -> None:
    """^C while use-model writes into a root it made: exit 130, one line, and no
    root left behind with half a file or empty directories in it (each file is
    written to a temp name and renamed only when whole)."""
    import objstore

    env = base_env(tmp_path)
    store = tmp_path / "store"
    with objstore.init("e", "p", store=store) as run:
        run.log_model(str(big_file(tmp_path / "model.bin", 160)), name="big")
    out = tmp_path / "out" / "deep"
    child = pexpect.spawn(str(OBJSTORE), ["--store", str(store), "use-model", "e/p/big", "--root", str(out)], env=env,
                          dimensions=(24, 80), encoding="utf-8", timeout=300,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    child.expect(r"[1-9][0-9.]* MiB/160")
    seen = f"{child.before}{child.after}"
    child.sendintr()
    rest = child.read()
    child.close()
    assert child.exitstatus == 130, (child.exitstatus, child.signalstatus, rest)
    screen = Screen(80)
    screen.feed(seen + rest)
    assert [line for line in screen.lines() if line.strip() and line.strip() != "^C"] == ["objstore: error: interrupted"]
    assert not out.exists() or [p.name for p in out.iterdir()] == ["model.bin"], list(out.iterdir())
    again = run_cli(store, "use-model", "e/p/big", "--root", str(out))
    assert again.out.strip() == str(out / "model.bin")


@pytest.mark.parametrize("command", ["push", "clone"])
def test_push_and_clone_draw_the_one_bar_with_rate_and_eta_at_80_columns(tmp_path: Path, command: str) -> None:
    """The transfers draw the same bar as logging (bytes, a rate, a human ETA), no
    wider than the window, cleared before their one summary line."""
    env = base_env(tmp_path)
    store = tmp_path / "store"
    run_cli(store, "init")
    run_cli(store, "log-model", str(big_file(tmp_path / "m.bin", 48)), "--name", "big")
    remote = tmp_path / "remote"
    if command == "push":
        argv = [str(OBJSTORE), "--store", str(store), "push", str(remote)]
    else:
        run_cli(store, "push", str(remote))
        argv = [str(OBJSTORE), "clone", str(remote), str(tmp_path / "copy")]
    code, raw = spawn(argv, env, columns=80)
    assert code == 0, raw
    draws = [ESCAPE.sub("", d) for d in re.split(r"[\r\n]", raw) if BAR.search(d)]
    assert draws and all(len(d.rstrip()) <= 80 for d in draws), draws
    # A stage of whole packs hard-linked ends within a millisecond of its start: its
    # rate may be TiB/s, which is still the bar's rate.
    assert any(re.search(r"\d [KMGT]iB/s|\d B/s", d) for d in draws), draws
    etas = ETA.findall(raw)
    assert etas and all(HUMAN_ETA.match(e) for e in etas), etas
    screen = Screen(80)
    screen.feed(raw)
    lines = [line for line in screen.lines() if line]
    assert len(lines) == 1 and lines[0].startswith("pushed " if command == "push" else "cloned "), lines


def test_control_characters_from_the_store_are_shown_escaped_never_sent_to_the_terminal(tmp_path: Path) -> None:
    """A store someone else wrote names a file ``ESC[2K`` (erase the line) + BEL, and a description
    sets the terminal's title (``ESC]0;…BEL``) or moves the cursor up to overwrite what was printed
    (a forged 'ok'). show, diff, ls and log printed them raw, to a terminal too (click strips only
    colour codes, and only when piped: before the fix the OSC and BEL went through even then). Now
    every C0/C1 control (and a bidi override) is printed as its escape, ``\\x1b``; a description
    keeps its own line breaks."""
    env = base_env(tmp_path)
    store = tmp_path / "s"
    model = tmp_path / "m"
    model.mkdir()
    (model / "w\x1b[2K\x07.bin").write_bytes(b"w")
    (model / "two\nlines.txt").write_bytes(b"t")
    run_cli(store, "init", env=env)
    run_cli(store, "log-model", str(model), "--name", "m", "--project", "p",
            "--description", "line one\nline two \x1b]0;pwned\x07 \x1b[1A\u202eok", env=env)
    for args in (["show", "p/m:v0"], ["diff", "p/m:v0", "p/m:v0"], ["ls", "p"], ["log", "p/m"], ["annotations", "p/m:v0"]):
        for shown in (run_cli(store, *args, env=env).out, spawn([str(OBJSTORE), "--store", str(store), *args], env)[1]):
            assert "\x1b]" not in shown and "\x07" not in shown and "\x1b[2K" not in shown, (args, shown)
            assert "\x1b[1A" not in shown and "\u202e" not in shown, (args, shown)
    # A project name may hold ESC (W&B's rule forbids only / \\ # ? % : and CR/LF): lineage and fsck name it.
    odd = "p\x1b]0;t\x07"
    run_cli(store, "log-model", str(model), "--name", "m", "--project", odd, env=env)
    for args in (["lineage", f"{odd}/m:v0"], ["fsck"]):
        shown = run_cli(store, *args, env=env, check=False).out
        assert "\x1b" not in shown and "\x07" not in shown, (args, shown)
    shown = run_cli(store, "show", "p/m:v0", env=env).out
    assert "w\\x1b[2K\\x07.bin" in shown and "two\\nlines.txt" in shown
    assert "line one\nline two \\x1b]0;pwned\\x07 \\x1b[1A\\u202eok" in shown
