"""Settings come from defaults < configs/imagegraph.yaml < IMAGEGRAPH_* < flags; bad values stop with exit 2."""

import subprocess
import sys
from pathlib import Path

import pytest

from server.config import Settings, SettingsError, load_settings


def write_yaml(root: Path, text: str) -> None:
    (root / "configs").mkdir(parents=True, exist_ok=True)
    (root / "configs" / "imagegraph.yaml").write_text(text)


def test_defaults_without_any_source(tmp_path):
    settings = load_settings({"root": str(tmp_path)}, environ={})
    assert (settings.host, settings.port, settings.token) == ("127.0.0.1", 9090, None)
    assert settings.root_path == tmp_path.resolve()


def test_each_source_overrides_the_one_before(tmp_path):
    write_yaml(tmp_path, "port: 9100\nlog_level: debug\npreview_interval_ms: 50\nupload_max_bytes: 1000\n")
    env = {"IMAGEGRAPH_ROOT": str(tmp_path), "IMAGEGRAPH_PORT": "9200", "IMAGEGRAPH_LOG_LEVEL": "warning"}
    settings = load_settings({"port": 9300}, environ=env)
    assert settings.port == 9300  # flag beats env and file
    assert settings.log_level == "warning"  # env beats file
    assert settings.preview_interval_ms == 50  # file beats default
    assert settings.upload_max_bytes == 1000


def test_env_lists_accept_commas_or_json(tmp_path):
    env = {"IMAGEGRAPH_ROOT": str(tmp_path), "IMAGEGRAPH_ALLOWED_HOSTS": "a.lan, b.lan"}
    assert load_settings(environ=env).allowed_hosts == ["a.lan", "b.lan"]
    env["IMAGEGRAPH_ALLOWED_HOSTS"] = '["c.lan"]'
    assert load_settings(environ=env).allowed_hosts == ["c.lan"]


@pytest.mark.parametrize(
    ("yaml_text", "env", "flags", "message"),
    [
        ("colour: blue\n", {}, {}, "unknown setting `colour`"),
        ("port: eighty\n", {}, {}, "bad setting `port`"),
        ("", {"IMAGEGRAPH_PORT": "70000"}, {}, "bad setting `port` (from environment): Expected `int` <= 65535"),
        ("", {"IMAGEGRAPH_WIBBLE": "1"}, {}, "unknown setting `wibble` (from environment)"),
        ("", {}, {"port": 0}, "bad setting `port` (from command line)"),
        ("", {}, {"device": "tpu"}, "bad setting `device`"),
        ("port: [1\n", {}, {}, "is not valid YAML"),
        ("- 1\n- 2\n", {}, {}, "must hold a mapping"),
        ("", {}, {"host": "0.0.0.0"}, "set a token"),
    ],
)
def test_bad_settings_name_the_key(tmp_path, yaml_text, env, flags, message):
    write_yaml(tmp_path, yaml_text)
    with pytest.raises(SettingsError) as caught:
        load_settings({"root": str(tmp_path), **flags}, environ=env)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_other_host_is_accepted_with_a_token(tmp_path):
    settings = load_settings({"root": str(tmp_path), "host": "0.0.0.0", "token": "s3cret"}, environ={})
    assert settings.host == "0.0.0.0"


def test_cli_exits_2_with_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "server", "serve", "--root", str(tmp_path), "--port", "70000"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "bad setting `port` (from command line)" in result.stderr


def test_layout_is_created_and_reused(tmp_path):
    settings = Settings(root=str(tmp_path / "r"))
    settings.create_layout()
    marker = settings.images_dir / "keep.txt"
    marker.write_text("x")
    settings.create_layout()
    assert marker.read_text() == "x"
    for folder in ("configs", "databases", "models", "outputs/images", "outputs/thumbnails", "autoimport/main"):
        assert (tmp_path / "r" / folder).is_dir()
