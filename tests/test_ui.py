"""``objstore ui`` end to end: a real server process, a real headless Chromium.

What must hold: from the store page a person reaches, by clicking, a project, a
collection, a version, the lineage graph's nodes and a diff, with the expected
text on each; names and descriptions holding markup render as text and run no
script; the view is read-only unless started with ``--allow-edits``; with it,
an alias moved in the page is what ``objstore log`` shows, and a stale page's
move is refused with a conflict (compare-and-swap), as is a form without the
server's token; the server prints its address first and stops cleanly on
SIGTERM and Ctrl-C.

The browser is Debian's ``chromium-headless-shell`` driven by Playwright; ``.ci/run`` installs
both. Without them these tests skip locally and fail in CI.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import OBJSTORE, run_cli

# Debian's headless shell: the same engine as its full chromium, without the desktop parts
# (a 13 s install in .ci/run instead of ~80 s for `chromium`).
CHROMIUM = shutil.which("chromium-headless-shell") or "/usr/bin/chromium-headless-shell"
HOSTILE = "<script>window.__pwned = 1</script><img src=x onerror=\"window.__pwned = 2\">"
# W&B's alias rule allows this (no '/' or ':'): it lands in text, in <option> values and in data attributes.
HOSTILE_ALIAS = "<img src=x onerror=window.__pwned=3>\"'"


def _need_browser() -> Any:
    if os.environ.get("CI"):
        import playwright.sync_api as playwright  # CI installs it: missing is a failure
    else:
        playwright = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            raise AssertionError(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium-headless-shell")
        pytest.skip("no chromium-headless-shell here (.ci/run installs it)")
    return playwright


def _shot(page: Any, name: str) -> None:
    """The README's screenshots: taken when OBJSTORE_UI_SHOTS names a directory."""
    if os.environ.get("OBJSTORE_UI_SHOTS"):
        page.screenshot(path=str(Path(os.environ["OBJSTORE_UI_SHOTS"]) / name), full_page=True)


def _build(store: Path | str, files: Path) -> None:
    """Two projects, a fine-tune, an alias, a registry link, a run that used a version."""
    script = f"""
import objstore
from pathlib import Path
from objstore.testing.tensorfiles import fine_tune, transformer, write_safetensors
files = Path({str(files)!r}); files.mkdir(parents=True, exist_ok=True)
base = transformer(1, layers=2, hidden=128, vocab=256)
write_safetensors(files / "base.safetensors", base)
write_safetensors(files / "tuned.safetensors", fine_tune(base, ["layers.1.attn.q.weight"], 2))
run = objstore.init(entity="team", project="vision", job_type="train", config={{"lr": 0.001}}, store={str(store)!r})
run.log({{"loss": 0.25}})
run.log_model(files / "base.safetensors", name="resnet", aliases=["prod"])
art = run.log_model(files / "tuned.safetensors", name="resnet", aliases=[{HOSTILE_ALIAS!r}])
run.link_model(files / "tuned.safetensors", "Classifier", name="resnet")
run.finish()
a = objstore.Api(store={str(store)!r}, entity="team", project="vision").artifact("resnet:v1")
a.description = {HOSTILE!r}
a.metadata = {{"note": {HOSTILE!r}, "epochs": 3}}
a.tags = ["candidate"]
a.save()
run = objstore.init(entity="team", project="vision", job_type="eval", store={str(store)!r})
run.use_model("resnet:v1", root={str(files / "used")!r})
(files / "report.txt").write_text("accuracy 0.9")
run.log_artifact(str(files / "report.txt"), name="eval-report", type="report")
run.finish()
run = objstore.init(entity="team", project="nlp", store={str(store)!r})
run.log_model(files / "base.safetensors", name="tokenizer")
run.finish()
"""
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True, timeout=120)


class Server:
    def __init__(self, store: Path | str, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("OBJSTORE_DIR", "OBJSTORE_PROJECT")}
        self.proc = subprocess.Popen([str(OBJSTORE), "ui", "--store", str(store), "--no-browser", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        assert self.proc.stdout is not None
        self.first_line = self.proc.stdout.readline()
        m = re.fullmatch(r"serving (http://127\.0\.0\.1:\d+/)\n", self.first_line)
        assert m, (self.first_line, self.proc.stderr.read() if self.proc.poll() is not None else "")
        self.url = m.group(1)

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url.rstrip("/") + path, timeout=30) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def post(self, path: str, form: dict[str, str]) -> tuple[int, str]:
        req = urllib.request.Request(self.url.rstrip("/") + path, data=urllib.parse.urlencode(form).encode(),
                                     method="POST")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def request(self, path: str, host: str, form: dict[str, str] | None = None) -> tuple[int, str]:
        """``path`` asked for with the Host header ``host`` (as a browser sends the name it resolved)."""
        data = None if form is None else urllib.parse.urlencode(form).encode()
        req = urllib.request.Request(self.url.rstrip("/") + path, data=data, headers={"Host": host})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ui")
    _build(root / "store", root / "files")
    return root / "store"


@pytest.fixture()
def editable(built: Path, tmp_path: Path) -> Iterator[tuple[Server, Path]]:
    store = tmp_path / "store"
    shutil.copytree(built, store, symlinks=True)  # edits must not leak into the other tests' store
    server = Server(store, "--allow-edits")
    yield server, store
    server.stop()


@pytest.fixture(scope="module")
def readonly(built: Path) -> Iterator[Server]:
    server = Server(built)
    yield server
    server.stop()


def test_clicking_from_the_store_to_a_diff_through_lineage(readonly: Server) -> None:
    pw = _need_browser()
    with pw.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(readonly.url)
        assert "team/vision" in page.inner_text("#projects") and "team/nlp" in page.inner_text("#projects")
        page.click("text=team/vision")
        assert "resnet" in page.inner_text("#collections")
        assert "resnet" in page.inner_text("#registry") or "Classifier" in page.inner_text("#registry")
        page.click("#collections >> text=resnet")
        rows = page.inner_text("#versions")
        assert "v1" in rows and "v0" in rows and "prod" in rows and "latest" in rows
        page.click("#versions >> text=v1")
        assert page.inner_text("h1").startswith("resnet:v1")
        page.click("#files summary")  # the tensor list opens
        assert "layers.1.attn.q.weight" in page.inner_text("#files") and "[128, 128]" in page.inner_text("#files")
        nodes = page.locator("svg#lineage g.node")
        names = [nodes.nth(i).get_attribute("data-name") for i in range(nodes.count())]
        assert "team/vision/resnet:v1" in names
        assert any(n and n.startswith("team/vision/") and ":" not in n for n in names)  # the runs
        assert "team/vision/eval-report:v0" in names  # downstream: what the eval run logged
        page.click("svg#lineage g.node[data-name='team/vision/eval-report:v0']")
        assert page.inner_text("h1").startswith("eval-report:v0")
        page.go_back()
        page.click("#diff-previous")
        assert "1 file(s) differ" in page.inner_text("#diff-summary")
        assert "layers.1.attn.q.weight" in page.inner_text("#changed-tensors")
        assert "embed.weight" not in page.inner_text("#changed-tensors")
        l2 = page.inner_text("#changed-tensors .l2")  # how far the tuned tensor moved: fresh weights, about sqrt(2)
        assert l2 == "n/a" or 0.5 < float(l2) < 3.0, l2
        _shot(page, "ui-diff.png")
        browser.close()


def test_markup_in_aliases_and_descriptions_renders_as_text(readonly: Server) -> None:
    pw = _need_browser()
    status, html = readonly.get("/version?entity=team&project=vision&name=resnet&v=1")
    assert status == 200 and "<script>window.__pwned" not in html and "&lt;script&gt;" in html
    with pw.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(readonly.url + "version?entity=team&project=vision&name=resnet&v=1")
        assert HOSTILE in page.inner_text("#description")
        assert HOSTILE in page.inner_text("#metadata")
        assert HOSTILE_ALIAS in page.inner_text("#aliases")
        page.goto(readonly.url + "collection?entity=team&project=vision&name=resnet")
        assert HOSTILE_ALIAS in page.inner_text("#versions")
        assert page.evaluate("window.__pwned") is None
        browser.close()


def test_read_only_unless_asked(readonly: Server, built: Path) -> None:
    status, html = readonly.get("/version?entity=team&project=vision&name=resnet&v=1")
    assert "alias-form" not in html and "description-form" not in html
    status, body = readonly.post("/version/alias", {"entity": "team", "project": "vision", "name": "resnet",
                                                    "v": "1", "to": "1", "alias": "prod", "expected": "", "csrf": ""})
    assert status == 403 and "--allow-edits" in body
    log = run_cli(built, "log", "team/vision/resnet", "--json").json()
    assert isinstance(log, dict) and [v["aliases"] for v in log["versions"]][-1] == ["prod"]  # v0 still holds prod


def _form(html: str, form_id: str) -> dict[str, str]:
    block = re.search(rf'<form[^>]*id="{form_id}".*?</form>', html, re.S)
    assert block, form_id
    return dict(re.findall(r'<input type="hidden" name="([^"]+)"[^>]*value="([^"]*)"', block.group(0)))


def test_an_alias_moved_in_the_page_is_what_log_shows_and_a_stale_page_is_refused(editable: tuple[Server, Path]) -> None:
    pw = _need_browser()
    server, store = editable
    with pw.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page, stale = browser.new_page(), browser.new_page()
        page.goto(server.url + "version?entity=team&project=vision&name=resnet&v=1")
        stale.goto(server.url + "version?entity=team&project=vision&name=resnet&v=1")
        page.select_option("#alias-select", "prod")
        page.click("#alias-form button")
        assert "prod" in page.inner_text("#aliases")
        log = run_cli(store, "log", "team/vision/resnet", "--json").json()
        assert isinstance(log, dict) and {"latest", "prod"} <= set(log["versions"][0]["aliases"])
        # The stale page still believes prod is on v0; its move must not land over the one made since.
        stale.select_option("#alias-select", "prod")
        stale.click("#alias-form button")
        assert "moved by someone else" in stale.inner_text("#conflict")
        run_cli(store, "alias", "team/vision/resnet:v0", "staging")  # another writer, through the CLI
        stale.reload()
        stale.select_option("#alias-select", "staging")
        stale.click("#alias-form button")  # fresh now: lands
        log = run_cli(store, "log", "team/vision/resnet", "--json").json()
        assert isinstance(log, dict) and {"prod", "staging"} <= set(log["versions"][0]["aliases"])
        page.goto(server.url + "version?entity=team&project=vision&name=resnet&v=1")
        _shot(page, "ui-version.png")
        browser.close()


def test_a_description_edit_is_compare_and_swap_and_needs_the_token(editable: tuple[Server, Path]) -> None:
    server, store = editable
    status, html = server.get("/version?entity=team&project=vision&name=resnet&v=0")
    form = _form(html, "description-form")
    status, body = server.post("/version/description", {**form, "csrf": "forged", "description": "x"})
    assert status == 403 and "token" in body
    status, body = server.post("/version/description", {**form, "description": "first edit"})
    assert status == 200 and "first edit" in body  # redirected to the page, which shows it
    status, body = server.post("/version/description", {**form, "description": "stale edit"})
    assert status == 409 and "edited by someone else" in body
    shown = run_cli(store, "show", "team/vision/resnet:v0", "--json").json()
    assert isinstance(shown, dict) and shown["description"] == "first edit"
    form = _form(server.get("/version?entity=team&project=vision&name=resnet&v=0")[1], "description-form")
    status, body = server.post("/version/description", {**form, "description": "first edit", "tags": "bad tag!"})
    assert status == 400 and 'id="error"' in body
    status, body = server.post("/version/description", {**form, "description": "first edit", "tags": "a, b"})
    assert status == 200
    import objstore
    art = objstore.Api(store=str(store)).artifact("team/vision/resnet:v0")
    assert (art.description, art.tags) == ("first edit", ["a", "b"])


def test_a_page_number_that_is_no_ascii_number_is_the_first_page(readonly: Server) -> None:
    status, body = readonly.get("/collection?entity=team&project=vision&name=resnet&skip=%C2%B2")
    assert status == 200 and 'id="versions"' in body


def test_a_page_asked_for_by_another_name_is_refused(editable: tuple[Server, Path]) -> None:
    """DNS rebinding: a web page at attacker.example re-points its name to 127.0.0.1, and the
    browser then sends the page's requests to this server with ``Host: attacker.example``, as
    the same origin, so the page reads the answers, the CSRF token in them, and posts edits.
    Before the fix every page and edit was served whatever the Host said."""
    server, store = editable
    port = server.url.rsplit(":", 1)[1].strip("/")
    version = "/version?entity=team&project=vision&name=resnet&v=0"
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost"):
        assert server.request(version, host)[0] == 200, host
    status, body = server.request(version, f"attacker.example:{port}")
    assert status == 403 and 'id="error"' in body and "csrf" not in body
    form = _form(server.get(version)[1], "description-form")
    status, body = server.request("/version/description", f"attacker.example:{port}", {**form, "description": "pwned"})
    assert status == 403
    shown = run_cli(store, "show", "team/vision/resnet:v0", "--json").json()
    assert isinstance(shown, dict) and shown["description"] != "pwned"


def test_bad_addresses_get_one_line_pages_not_tracebacks(readonly: Server) -> None:
    for path, code in (("/project?entity=team&project=nope", 404), ("/collection?entity=team&project=vision&name=no", 404),
                       ("/version?entity=team&project=vision&name=resnet&v=99", 404),
                       ("/version?entity=team&project=vision&name=resnet&v=prod", 400),
                       ("/project?entity=..&project=x", 400), ("/run?entity=team&project=vision&id=nope", 404),
                       # digits to str.isdigit() that int() refuses: an internal error (500) before the fix
                       ("/version?entity=team&project=vision&name=resnet&v=%E2%91%A0", 400),
                       ("/diff?entity=team&project=vision&name=resnet&a=%C2%B2&b=0", 400)):
        status, body = readonly.get(path)
        assert status == code, (path, status, body)
        assert "Traceback" not in body and 'id="error"' in body


def test_the_address_comes_first_and_signals_stop_it_cleanly(built: Path) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        server = Server(built)
        assert server.get("/")[0] == 200
        assert server.stop(sig) == 0
        assert server.proc.stderr is not None and "Traceback" not in server.proc.stderr.read()


def test_a_port_in_use_and_a_public_host_are_said_plainly(built: Path, readonly: Server) -> None:
    port = urllib.parse.urlparse(readonly.url).port
    r = run_cli(built, "ui", "--no-browser", "--port", str(port), check=False)
    assert r.code != 0 and "cannot listen" in r.err and "Traceback" not in r.err
    proc = subprocess.Popen([str(OBJSTORE), "--store", str(built), "ui", "--no-browser", "--host", "0.0.0.0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().startswith("serving http://0.0.0.0:")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert "not loopback" in err and proc.returncode == 0


def test_pages_of_a_big_collection_are_paginated(tmp_path: Path) -> None:
    store = tmp_path / "store"
    script = f"""
import objstore
run = objstore.init(entity="e", project="p", store={str(store)!r})
for i in range(60):
    p = {str(tmp_path)!r} + f"/f{{i}}.txt"
    open(p, "w").write(str(i))
    run.log_artifact(p, name="many", type="dataset")
run.finish()
"""
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    server = Server(store)
    try:
        status, html = server.get("/collection?entity=e&project=p&name=many")
        assert status == 200 and ">v59<" in html and ">v10<" in html and ">v9<" not in html and 'rel="next"' in html
        status, html = server.get("/collection?entity=e&project=p&name=many&skip=50")
        assert ">v9<" in html and ">v0<" in html and ">v10<" not in html and 'rel="prev"' in html
    finally:
        server.stop()


def _versions_store(location: Path, versions: int) -> None:
    """Two projects, four collections: ``a`` of ``versions`` versions, the others of 3
    (cheap ones: a symlink each), a registered model linking one, an alias and
    annotations on each."""
    from objstore.model.annotations import Edit, edit_collection_annotations
    from objstore.model.names import CollectionPath
    from objstore.model.store import Store
    from objstore.model.versions import commit_version, link_version
    from objstore.storage.objects import SYMLINK, Tree, TreeEntry

    with Store.open(location) as store:
        colls = [CollectionPath("team", p, n) for p, n in (("p", "a"), ("p", "b"), ("p", "c"), ("q", "d"))]
        for coll in colls:
            count = versions if coll.name == "a" else 3
            for i in range(count):
                tree = store.odb.put_object(Tree((TreeEntry("link", SYMLINK, 1, target=f"{coll.name}{i}"),)))
                newest, _ = commit_version(store, coll, tree=tree, size=1, new_bytes=0, artifact_type="model",
                                           metadata={}, description=None, run=None,
                                           aliases=("best",) if i == count // 2 else ())
            edit_collection_annotations(store, coll, Edit(description="about " + coll.name, set_description=True))
        link_version(store, CollectionPath("team", "model-registry", "Champion"), newest, run=None)


def test_store_project_and_collection_pages_cost_what_they_show_not_the_history(tmp_path: Path) -> None:
    """Backend requests (local: one per file operation; a listing is one) of each page's
    reads on a freshly opened store: the same with 10 versions per collection as with
    300. The collection page shows its newest 50, so it is compared at 60 and 300."""
    from objstore.model.names import CollectionPath
    from objstore.model.store import Store
    from objstore.ui import views

    def cost(location: Path, page: Any) -> int:
        with Store.open(location, create=False) as store:
            before = store.backend.stats.requests
            page(store)
            return store.backend.stats.requests - before

    pages = {"store": views.store_page, "project": lambda s: views.project_page(s, "team", "p"),
             "registry": lambda s: views.project_page(s, "team", "model-registry"),
             "collection": lambda s: views.collection_page(s, CollectionPath("team", "p", "a"))}
    costs = {}
    for n in (10, 60, 300):
        _versions_store(tmp_path / str(n), n)
        costs[n] = {name: cost(tmp_path / str(n), page) for name, page in pages.items()}
    for name in ("store", "project", "registry"):
        assert costs[300][name] == costs[10][name], (name, costs)
    assert costs[300]["collection"] == costs[60]["collection"], costs
    assert costs[10]["collection"] < costs[60]["collection"], costs  # 10 rows shown cost less than 50
    print(costs)


def test_a_collection_edit_in_the_page_is_what_the_api_shows_and_a_stale_page_is_refused(
        editable: tuple[Server, Path]) -> None:
    pw = _need_browser()
    server, store = editable
    url = server.url + "collection?entity=team&project=vision&name=resnet"
    with pw.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page, stale = browser.new_page(), browser.new_page()
        page.goto(url)
        stale.goto(url)
        page.click("#collection-edit summary")
        page.fill("#collection-form textarea", HOSTILE)
        page.fill("#collection-form input[name=tags]", "vision, resnet-family")
        page.click("#collection-form button")
        assert HOSTILE in page.inner_text("#collection-description")  # as text: nothing ran
        assert page.inner_text("#collection-tags").split() == ["vision", "resnet-family"]
        assert page.evaluate("window.__pwned") is None
        import objstore
        coll = objstore.Api(store=str(store)).artifact_collection("model", "team/vision/resnet")
        assert (coll.description, coll.tags) == (HOSTILE, ["vision", "resnet-family"])
        # The stale page read revision 0; its save must not land over the one made since.
        stale.click("#collection-edit summary")
        stale.fill("#collection-form textarea", "stale words")
        stale.click("#collection-form button")
        assert "edited by someone else" in stale.inner_text("#conflict")
        assert HOSTILE in stale.inner_text("#collection-description")  # the page as it is now
        stale.fill("#collection-form textarea", "fresh words")  # the conflict page's form is at the new revision
        stale.click("#collection-form button")
        assert stale.inner_text("#collection-description") == "fresh words"
        browser.close()
    form = _form(server.get("/collection?entity=team&project=vision&name=resnet")[1], "collection-form")
    status, body = server.post("/collection/annotations", {**form, "csrf": "forged", "description": "x"})
    assert status == 403 and "token" in body
    status, body = server.post("/collection/annotations", {**form, "tags": "not a tag!"})
    assert status == 400 and 'id="error"' in body


def test_a_run_page_shows_config_summary_inputs_and_outputs(readonly: Server) -> None:
    pw = _need_browser()
    with pw.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(readonly.url + "version?entity=team&project=vision&name=resnet&v=1")
        assert page.inner_text("#tags").split() == ["candidate"]
        page.click("#logged-by a")  # the training run
        assert page.inner_text("h1").startswith("Run ") and "train" in page.inner_text("dl.facts")
        assert "lr" in page.inner_text("#config") and "0.001" in page.inner_text("#config")
        assert "loss" in page.inner_text("#summary") and "0.25" in page.inner_text("#summary")
        outputs = page.inner_text("#outputs")
        assert "team/vision/resnet:v0" in outputs and "team/vision/resnet:v1" in outputs
        assert page.inner_text("#inputs") == "none"
        page.goto(readonly.url + "version?entity=team&project=vision&name=resnet&v=1")
        page.click("#used-by a")  # the eval run: used v1, logged the report
        assert "team/vision/resnet:v1" in page.inner_text("#inputs")
        page.click("#outputs >> text=team/vision/eval-report:v0")
        assert page.inner_text("h1").startswith("eval-report:v0")
        browser.close()


def test_store_and_project_pages_are_paginated_and_usage_is_a_page_of_its_own(tmp_path: Path) -> None:
    from objstore.model.names import CollectionPath
    from objstore.model.store import Store
    from objstore.model.versions import commit_version, link_version
    from objstore.storage.objects import SYMLINK, Tree, TreeEntry

    with Store.open(tmp_path / "store") as store:
        colls = [CollectionPath("e", "big", f"c{i:02d}") for i in range(55)]
        colls += [CollectionPath("e", f"p{i:02d}", "only") for i in range(52)]
        for coll in colls:
            tree = store.odb.put_object(Tree((TreeEntry("link", SYMLINK, 1, target=str(coll)),)))
            entry, _ = commit_version(store, coll, tree=tree, size=1, new_bytes=0, artifact_type="model", metadata={},
                                      description=None, run=None)
            if coll.project == "big":
                link_version(store, CollectionPath("e", "model-registry", coll.name), entry, run=None)
    server = Server(tmp_path / "store")
    try:
        status, html = server.get("/")
        assert status == 200 and "e/big" in html and "e/p47" in html and "e/p48" not in html  # 50 of 54, sorted
        assert 'rel="next"' in html and 'id="usage-link"' in html
        status, html = server.get("/?skip=50")
        assert "e/p48" in html and "e/p51" in html and "e/big" not in html and 'rel="prev"' in html
        status, html = server.get("/project?entity=e&project=big")
        listed = re.search(r'<div id="collections">.*?</div>', html, re.S)
        registry = re.search(r'<div id="registry">.*?</div>', html, re.S)
        assert listed and registry and ">c49<" in listed.group(0) and ">c50<" not in listed.group(0)
        assert "1–50 of 55" in listed.group(0) and ">c49<" in registry.group(0)
        status, html = server.get("/project?entity=e&project=big&skip=50")
        listed = re.search(r'<div id="collections">.*?</div>', html, re.S)
        registry = re.search(r'<div id="registry">.*?</div>', html, re.S)
        assert listed and registry and ">c50<" in listed.group(0) and ">c49<" not in listed.group(0)
        assert ">c00<" in registry.group(0)  # the registry's list keeps its own place
        assert 'href="/project?entity=e&amp;project=big&amp;rskip=50&amp;skip=50"' in html
        status, html = server.get("/project?entity=e&project=big&skip=x&rskip=99999999999999999999")
        assert status == 200 and ">c00<" in html  # a bad page number is the first page
        status, html = server.get("/usage")
        assert status == 200 and "reads every version" in html and "107 versions" in html and "e/big" in html
        # The store page's logical total: counted in the background once the page was first asked for,
        # shown on a later request (the page never counts while it answers).
        deadline, logical = time.monotonic() + 60, ""
        while "107 versions" not in logical and time.monotonic() < deadline:
            found = re.search(r'<p class="summary" id="logical">(.*?)</p>', server.get("/")[1], re.S)
            assert found, "the store page has no logical total"
            logical = found.group(1)
            time.sleep(0.2)
        assert "107 B logical in 107 versions" in logical and "counted" in logical, logical
    finally:
        server.stop()


@pytest.mark.s3
def test_a_store_on_a_bucket_is_browsed_and_edited_the_same(s3_bucket_url: str, tmp_path: Path) -> None:
    _build(s3_bucket_url, tmp_path / "files")
    server = Server(s3_bucket_url, "--allow-edits")
    try:
        for path, text in (("/", "team/vision"), ("/project?entity=team&project=vision", "Classifier"),
                           ("/collection?entity=team&project=vision&name=resnet", "v1"),
                           ("/version?entity=team&project=vision&name=resnet&v=1", "layers.1.attn.q.weight"),
                           ("/diff?entity=team&project=vision&name=resnet&a=0&b=1", "1 file(s) differ"),
                           ("/usage", "team/nlp")):
            status, html = server.get(path)
            assert status == 200 and text in html, (path, status, html[-500:])
        page = "/collection?entity=team&project=vision&name=resnet"
        form = _form(server.get(page)[1], "collection-form")
        status, html = server.post("/collection/annotations", {**form, "description": "on a bucket", "tags": "s3"})
        assert status == 200 and "on a bucket" in html
        status, html = server.post("/collection/annotations", {**form, "description": "stale"})
        assert status == 409 and "edited by someone else" in html
    finally:
        server.stop()
