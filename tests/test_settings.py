"""objstore.settings: one resolution order (argument > environment > user config file >
default) for entity, project, store and remotes, read alike by the library and the CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from cli_helpers import run_cli

import objstore
from objstore import settings
from objstore.errors import InvalidInput
from objstore.storage.backend._obstore import aws_profile

CLEAN = ("OBJSTORE_ENTITY", "WANDB_ENTITY", "OBJSTORE_PROJECT", "WANDB_PROJECT", "OBJSTORE_DIR", "OBJSTORE_RUN_ID", "WANDB_RUN_ID")


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in CLEAN:
        monkeypatch.delenv(var, raising=False)
    path = tmp_path / "cfg" / "config.toml"
    path.parent.mkdir()
    monkeypatch.setenv("OBJSTORE_CONFIG", str(path))
    return path


@pytest.mark.parametrize("name, env_vars, default", [
    ("project", ("OBJSTORE_PROJECT", "WANDB_PROJECT"), settings.DEFAULT_PROJECT),
    ("entity", ("OBJSTORE_ENTITY", "WANDB_ENTITY"), settings.default_entity()),
])
def test_order_argument_env_wandb_env_config_default(config: Path, monkeypatch: pytest.MonkeyPatch, name: str,
                                                     env_vars: tuple[str, str], default: str) -> None:
    ours, wandb = env_vars
    assert settings.resolve(name) == settings.Setting(name, default, "default")
    config.write_text(f'{name} = "from-file"\n')
    assert settings.resolve(name) == settings.Setting(name, "from-file", f"config file {config}")
    monkeypatch.setenv(wandb, "from-wandb")
    assert settings.resolve(name).value == "from-wandb"
    monkeypatch.setenv(ours, "from-ours")
    assert settings.resolve(name) == settings.Setting(name, "from-ours", f"${ours}")
    assert settings.resolve(name, "given") == settings.Setting(name, "given", "argument")


def test_init_and_api_read_the_environment_and_the_file(config: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    config.write_text('entity = "filer"\nproject = "fileproj"\n')
    store = str(tmp_path / "store")
    with objstore.init(store=store) as run:
        assert (run.entity, run.project) == ("filer", "fileproj")
    monkeypatch.setenv("OBJSTORE_PROJECT", "envproj")
    monkeypatch.setenv("WANDB_ENTITY", "wbent")
    with objstore.init(store=store) as run:
        assert (run.entity, run.project) == ("wbent", "envproj")
    with objstore.init("arg", "argproj", store=store) as run:
        assert (run.entity, run.project) == ("arg", "argproj")
    api = objstore.Api(store)
    assert (api.entity, api.default_project) == ("wbent", "envproj")


def test_cli_uses_the_same_order(config: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    model = tmp_path / "m.bin"
    model.write_bytes(os.urandom(1000))
    run_cli(store, "init")
    config.write_text('entity = "filer"\nproject = "fileproj"\n')
    env = {"OBJSTORE_CONFIG": str(config)}
    logged = run_cli(store, "log-model", str(model), "-n", "m", "--json", env=env).json()
    assert logged["name"] == "filer/fileproj/m:v0"  # type: ignore[index]
    logged = run_cli(store, "log-model", str(model), "-n", "m", "--json",
                     env={**env, "WANDB_PROJECT": "wb", "OBJSTORE_ENTITY": "ent"}).json()
    assert logged["name"] == "ent/wb/m:v0"  # type: ignore[index]
    logged = run_cli(store, "log-model", str(model), "-n", "m", "-p", "opt", "--json",
                     env={**env, "OBJSTORE_PROJECT": "envproj"}).json()
    assert logged["name"].startswith("filer/opt/m:")  # type: ignore[index]
    # a short name in another command means the same project
    shown = run_cli(store, "show", "m", "--json", env={**env, "OBJSTORE_PROJECT": "wb", "OBJSTORE_ENTITY": "ent"})
    assert shown.json()["name"] == "ent/wb/m:v0"  # type: ignore[index]


def test_store_order(config: Path, tmp_path: Path) -> None:
    home, work, project = tmp_path / "home", tmp_path / "work", tmp_path / "project"
    model = tmp_path / "m.bin"
    model.write_bytes(os.urandom(500))
    stores = {"home": home / ".objstore", "configured": tmp_path / "configured", "envdir": tmp_path / "envdir",
              "given": tmp_path / "given", "found": project / ".objstore"}
    for label, path in stores.items():
        run_cli(path, "init")
        run_cli(path, "log-model", str(model), "-n", f"in-{label}", "-p", "p")
    work.mkdir()
    (project / "sub").mkdir()
    env = {"HOME": str(home), "OBJSTORE_CONFIG": str(config)}

    def used(cwd: Path, *args: str, **extra: str) -> str:
        listed = run_cli("", *args, "ls", f"{settings.default_entity()}/p", "--json", env={**env, **extra}, cwd=cwd)
        names = [c["name"] for c in listed.json()["collections"]]  # type: ignore[index]
        assert len(names) == 1, names
        return str(names[0]).removeprefix("in-")

    assert used(work) == "home"  # the default
    config.write_text(f'store = "{stores["configured"]}"\n')
    assert used(work) == "configured"
    assert used(project / "sub") == "found"  # a store above the working directory comes before the file's
    assert used(project / "sub", OBJSTORE_DIR=str(stores["envdir"])) == "envdir"
    assert used(project / "sub", "--store", str(stores["given"]), OBJSTORE_DIR=str(stores["envdir"])) == "given"


def test_config_remotes_are_remotes_of_every_store(config: Path, tmp_path: Path) -> None:
    team = tmp_path / "team"
    config.write_text(f'[remotes.team]\nurl = "{team}"\n')
    store = tmp_path / "store"
    model = tmp_path / "m.bin"
    model.write_bytes(os.urandom(2000))
    env = {"OBJSTORE_CONFIG": str(config)}
    run_cli(store, "init", env=env)
    run_cli(store, "log-model", str(model), "-n", "llm", "-p", "demo", env=env)
    listed = run_cli(store, "remote", "list", "--json", env=env).json()
    assert listed == [{"name": "team", "url": str(team), "options": {}}]
    run_cli(store, "push", "team", env=env)
    assert (team / "config").exists()
    removed = run_cli(store, "remote", "remove", "team", env=env, check=False)
    assert removed.code == 1 and str(config) in removed.err


@pytest.mark.parametrize("text, words", [
    ("projetc = 'x'\n", ["unknown setting 'projetc'", "did you mean project?"]),
    ("project = 3\n", ["project must be a non-empty string"]),
    ("project = \n", ["not valid TOML"]),
    ("[remotes.team]\nurl = '/x'\nsecret_access_key = 'k'\n", ["unknown key 'secret_access_key'", "environment"]),
])
def test_a_bad_config_file_is_one_line_naming_the_file(config: Path, tmp_path: Path, text: str, words: list[str]) -> None:
    config.write_text(text)
    result = run_cli(tmp_path / "s", "init", env={"OBJSTORE_CONFIG": str(config)}, check=False)
    assert result.code == 0  # init names its store: the file is not read
    result = run_cli(tmp_path / "s", "ls", "x", env={"OBJSTORE_CONFIG": str(config)}, check=False)
    assert result.code == 1, result
    assert result.err.count("\n") == 1 and str(config) in result.err
    for word in words:
        assert word in result.err


def test_aws_profile_from_the_shared_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    creds, conf = tmp_path / "credentials", tmp_path / "config"
    creds.write_text("[default]\naws_access_key_id = D\naws_secret_access_key = DS\n"
                     "[team]\naws_access_key_id = T\naws_secret_access_key = TS\naws_session_token = TT\n")
    conf.write_text("[profile team]\nregion = eu-west-3\n[default]\nregion = us-west-2\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(conf))
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    assert aws_profile().keys == {"access_key_id": "D", "secret_access_key": "DS"}
    assert aws_profile().region == "us-west-2"
    monkeypatch.setenv("AWS_PROFILE", "team")
    got = aws_profile()
    assert (got.name, got.region) == ("team", "eu-west-3")
    assert got.keys == {"access_key_id": "T", "secret_access_key": "TS", "session_token": "TT"}
    monkeypatch.setenv("AWS_PROFILE", "tema")
    with pytest.raises(InvalidInput, match="AWS_PROFILE='tema': no such profile"):
        aws_profile()


@pytest.mark.s3
def test_aws_profile_opens_an_s3_store(s3_bucket_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key, secret = os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]
    creds = tmp_path / "credentials"
    creds.write_text(f"[seaweed]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n"
                     "[wrong]\naws_access_key_id = nobody\naws_secret_access_key = nothing\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_PROFILE", "seaweed")
    objstore.Store.open(s3_bucket_url).close()
    run_cli(s3_bucket_url, "ls", "--json")
    monkeypatch.setenv("AWS_PROFILE", "wrong")
    refused = run_cli(s3_bucket_url, "ls", "--json", check=False)
    assert refused.code == 1 and "credentials" in refused.err


def test_init_joins_the_run_the_environment_names(config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = str(tmp_path / "store")
    assert settings.resolve("run_id") == settings.Setting("run_id", None, "default")
    monkeypatch.setenv("WANDB_RUN_ID", "wandbrun")
    with objstore.init("charlie", "demo", store=store) as run:
        assert run.id == "wandbrun"
        run.log({"loss": 1.0})
    monkeypatch.setenv("OBJSTORE_RUN_ID", "ourrun01")
    with objstore.init("charlie", "demo", store=store) as run:
        assert run.id == "ourrun01"  # objstore's variable before W&B's
    with objstore.init("charlie", "demo", store=store, id="given001") as run:
        assert run.id == "given001"  # the argument before either
    monkeypatch.delenv("OBJSTORE_RUN_ID")
    # W&B's rule: the id in use resumes that run (its history kept), and "never" refuses it
    with objstore.init("charlie", "demo", store=store) as run:
        assert run.id == "wandbrun" and run.summary["loss"] == 1.0
    with pytest.raises(objstore.errors.ObjstoreError, match="wandbrun"):
        objstore.init("charlie", "demo", store=store, resume="never")
    # the CLI's run commands join the same run
    from click.testing import CliRunner

    from cli.main import main

    model = tmp_path / "m.bin"
    model.write_bytes(os.urandom(1000))
    logged = CliRunner().invoke(main, ["--store", store, "log-model", str(model), "-n", "m", "-p", "demo", "-e", "charlie",
                                       "--json"], env={"WANDB_RUN_ID": "wandbrun", "OBJSTORE_QUIET": None})
    assert logged.exit_code == 0, logged.output
    assert json.loads(logged.output)["run"] == "charlie/demo/wandbrun"


def test_a_run_id_in_the_config_file_is_refused(config: Path) -> None:
    config.write_text('run_id = "abc"\n')
    with pytest.raises(InvalidInput, match="unknown setting 'run_id'"):
        settings.user_config()
