"""Settings: the seed's variables, REDIS_URL, .env through python-dotenv, and errors."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from helpers import ROOT

from sessionlab import ConfigError, SessionError, Settings, load_settings
from sessionlab.config import ENV_FILE_VARIABLE, SERVER_VARIABLES, mask_url, read_environment

pytestmark = pytest.mark.pinned_only  # reading settings does not depend on the server

SECRET = "pw-S3cr3t-x9"


def no_secret(*texts: object) -> None:
    for text in texts:
        assert SECRET not in str(text)
        assert SECRET not in repr(text)


# -- which server ------------------------------------------------------------------------


def test_nothing_set_names_no_server():
    settings = load_settings({})
    assert settings == Settings()
    assert not settings.names_server
    assert settings.url is None and settings.host is None


def test_seed_variables_exactly_as_the_seed():
    # The seed: host = getenv('REDIS_HOST'), port = int(getenv('REDIS_PORT')), password.
    settings = load_settings(
        {"REDIS_HOST": "redis.example", "REDIS_PORT": "6380", "REDIS_PASSWORD": SECRET}
    )
    assert settings.names_server
    assert (settings.host, settings.port, settings.password, settings.db) == (
        "redis.example",
        6380,
        SECRET,
        0,
    )
    assert settings.url is None
    assert settings.address == "redis.example:6380"


def test_db_and_defaults_of_the_split_variables():
    assert load_settings({"REDIS_DB": "3"}) == Settings(host="localhost", port=6379, db=3)
    assert load_settings({"REDIS_HOST": "h"}) == Settings(host="h", port=6379, db=0)
    assert load_settings({"REDIS_PORT": "7000"}).address == "localhost:7000"
    # A password alone names a server too (the seed would connect to localhost:6379).
    assert load_settings({"REDIS_PASSWORD": SECRET}).names_server


def test_blank_values_count_as_unset():
    assert not load_settings({"REDIS_HOST": "", "REDIS_PORT": "  ", "REDIS_URL": ""}).names_server
    assert load_settings({"REDIS_HOST": " h ", "REDIS_PORT": " 7001 "}).address == "h:7001"


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("redis://localhost:6379/0", "localhost:6379"),
        ("redis://cache.internal", "cache.internal:6379"),
        (f"redis://:{SECRET}@10.1.2.3:7000/2", "10.1.2.3:7000"),
        (f"rediss://default:{SECRET}@secure.example:6380", "secure.example:6380"),
        ("unix:///run/redis/redis.sock?db=1", "/run/redis/redis.sock"),
    ],
)
def test_redis_url(url, address):
    settings = load_settings({"REDIS_URL": url})
    assert settings.url == url
    assert settings.host is None
    assert settings.names_server
    assert settings.address == address
    no_secret(settings, settings.address)


def test_server_bin_is_read_but_names_no_server():
    settings = load_settings({"REDIS_SERVER_BIN": "/usr/bin/redis-server"})
    assert settings.server_bin == "/usr/bin/redis-server"
    assert not settings.names_server


# -- .env --------------------------------------------------------------------------------


def write_env(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_env_file_is_read(tmp_path, monkeypatch):
    env = write_env(
        tmp_path / ".env", f"REDIS_HOST=from-dotenv\nREDIS_PORT=6390\nREDIS_PASSWORD='{SECRET}'\n"
    )
    values = read_environment({ENV_FILE_VARIABLE: str(env)})
    assert values["REDIS_HOST"] == "from-dotenv"
    assert values["REDIS_PASSWORD"] == SECRET
    # load_settings() with no argument reads os.environ and the .env file it names.
    monkeypatch.setenv(ENV_FILE_VARIABLE, str(env))
    settings = load_settings()
    assert (settings.host, settings.port, settings.password) == ("from-dotenv", 6390, SECRET)


def test_environment_wins_over_env_file(tmp_path, monkeypatch):
    env = write_env(tmp_path / ".env", "REDIS_HOST=from-dotenv\nREDIS_PORT=6390\n")
    values = read_environment({ENV_FILE_VARIABLE: str(env), "REDIS_PORT": "7777"})
    assert values["REDIS_HOST"] == "from-dotenv"
    assert values["REDIS_PORT"] == "7777"
    monkeypatch.setenv(ENV_FILE_VARIABLE, str(env))
    monkeypatch.setenv("REDIS_PORT", "7777")
    assert load_settings().address == "from-dotenv:7777"


def test_env_file_found_from_the_working_directory_upwards(tmp_path, monkeypatch):
    # Notebooks run in notebooks/: the repo's .env one level up must be found.
    write_env(tmp_path / ".env", "REDIS_URL=redis://found.example:6400/0\n")
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    monkeypatch.delenv(ENV_FILE_VARIABLE, raising=False)
    assert load_settings().address == "found.example:6400"


def test_env_file_variable_dev_null_reads_no_file(tmp_path, monkeypatch):
    write_env(tmp_path / ".env", "REDIS_HOST=must-not-be-read\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(ENV_FILE_VARIABLE, os.devnull)
    assert not load_settings().names_server


def test_explicit_environ_reads_no_env_file(tmp_path, monkeypatch):
    write_env(tmp_path / ".env", "REDIS_HOST=must-not-be-read\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(ENV_FILE_VARIABLE, raising=False)
    assert not load_settings({}).names_server


def test_env_example_copied_verbatim_changes_nothing(tmp_path, monkeypatch):
    example = ROOT / ".env.example"
    shutil.copyfile(example, tmp_path / ".env")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(ENV_FILE_VARIABLE, raising=False)
    for name in SERVER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    values = read_environment()
    assert not set(SERVER_VARIABLES) & set(values)
    settings = load_settings()
    assert not settings.names_server
    assert settings.server_bin == os.environ.get("REDIS_SERVER_BIN")


def uncommented(prefixes: tuple[str, ...]) -> str:
    """The lines of .env.example that start with ``# NAME=`` for NAME in prefixes, uncommented."""
    lines = (ROOT / ".env.example").read_text().splitlines()
    return "\n".join(
        line[2:] for line in lines if line.startswith(tuple(f"# {p}=" for p in prefixes))
    )


def test_env_example_url_line_is_valid(tmp_path):
    env = write_env(tmp_path / ".env", uncommented(("REDIS_URL",)))
    settings = load_settings(read_environment({ENV_FILE_VARIABLE: str(env)}))
    assert settings.url is not None and settings.address == "localhost:6379"


def test_env_example_split_lines_are_valid(tmp_path):
    text = uncommented(("REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD", "REDIS_DB"))
    assert text.count("\n") == 3
    env = write_env(tmp_path / ".env", text)
    settings = load_settings(read_environment({ENV_FILE_VARIABLE: str(env)}))
    assert (settings.host, settings.port, settings.db) == ("localhost", 6379, 0)
    assert settings.password == "your-password"
    assert "your-password" not in repr(settings)


# -- the password never shows --------------------------------------------------------------


@pytest.mark.parametrize(
    "environ",
    [
        {"REDIS_HOST": "h", "REDIS_PASSWORD": SECRET},
        {"REDIS_URL": f"redis://:{SECRET}@h:6379/0"},
        {"REDIS_URL": f"redis://user:{SECRET}@h:6379/0"},
        {"REDIS_URL": f"rediss://:{SECRET}@h"},
        {"REDIS_URL": f"unix:///tmp/redis.sock?db=0&password={SECRET}"},
    ],
    ids=["split", "url", "url-user", "rediss", "unix-query"],
)
def test_password_not_in_repr_or_str(environ):
    settings = load_settings(environ)
    no_secret(settings, f"{settings}", f"{settings!r}", [settings], settings.address)
    assert "***" in repr(settings)


@pytest.mark.parametrize(
    "url",
    [
        f"redis://:{SECRET}@h",
        f"redis://u:{SECRET}@h:1/0",
        f"redis://:a@{SECRET}@h:1",  # an unescaped @ in the password
        f"redis://:a/{SECRET}@h:1",  # an unescaped / in the password
        f"unix:///s.sock?password={SECRET}&db=2",
    ],
)
def test_mask_url(url):
    masked = mask_url(url)
    assert SECRET not in masked
    assert "***" in masked


@pytest.mark.parametrize(
    "environ",
    [
        {"REDIS_URL": f"redis://:{SECRET}@h:port/0"},  # bad port
        {"REDIS_URL": f"redis://:a/{SECRET}@h:6379"},  # unescaped / makes a bad URL
        {"REDIS_URL": f"http://:{SECRET}@h:6379"},  # bad scheme
        {"REDIS_URL": f"redis://:{SECRET}@h:6379/0", "REDIS_HOST": "h"},  # both forms
        {"REDIS_URL": f"redis://:{SECRET}@h:6379?db=abc"},  # redis-py would refuse it
        {"REDIS_HOST": "h", "REDIS_PASSWORD": SECRET, "REDIS_PORT": "x"},
    ],
    ids=["bad-port", "slash", "scheme", "url-and-host", "bad-db-query", "bad-port-var"],
)
def test_password_not_in_config_errors(environ):
    with pytest.raises(ConfigError) as caught:
        load_settings(environ)
    no_secret(caught.value, *caught.value.args)


# -- bad values ------------------------------------------------------------------------------


def test_port_not_a_number():
    with pytest.raises(ConfigError, match="REDIS_PORT") as caught:
        load_settings({"REDIS_HOST": "h", "REDIS_PORT": "abc"})
    assert "'abc'" in str(caught.value)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, SessionError)


@pytest.mark.parametrize("port", ["0", "-1", "65536", "100000"])
def test_port_out_of_range(port):
    with pytest.raises(ConfigError, match=r"REDIS_PORT.*out of range.*1 to 65535"):
        load_settings({"REDIS_PORT": port})


@pytest.mark.parametrize("port", ["1", "65535"])
def test_port_bounds_accepted(port):
    assert load_settings({"REDIS_PORT": port}).port == int(port)


@pytest.mark.parametrize("db", ["-1", "one", "1.5"])
def test_bad_db(db):
    with pytest.raises(ConfigError, match="REDIS_DB"):
        load_settings({"REDIS_DB": db})


@pytest.mark.parametrize("name", ["REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD", "REDIS_DB"])
def test_url_together_with_split_variable(name):
    value = "6379" if name in ("REDIS_PORT",) else "0" if name == "REDIS_DB" else "x"
    with pytest.raises(ConfigError) as caught:
        load_settings({"REDIS_URL": "redis://h:6379", name: value})
    assert "REDIS_URL" in str(caught.value) and name in str(caught.value)


@pytest.mark.parametrize(
    "url",
    ["http://h:6379", "h:6379", "localhost", "redis:/h", "tcp://h:6379", "REDIS://h", "h:port"],
)
def test_bad_scheme(url):
    with pytest.raises(ConfigError, match=r"redis://, rediss://.*unix://"):
        load_settings({"REDIS_URL": url})


@pytest.mark.parametrize("url", ["redis://", "redis:///0", "rediss://:pw@/0"])
def test_url_without_host(url):
    with pytest.raises(ConfigError, match="no host"):
        load_settings({"REDIS_URL": url})


@pytest.mark.parametrize("url", ["redis://h:abc/0", "redis://h:99999"])
def test_url_bad_port(url):
    with pytest.raises(ConfigError, match="port"):
        load_settings({"REDIS_URL": url})


def test_bad_value_in_env_file_names_the_variable(tmp_path):
    env = write_env(tmp_path / ".env", "REDIS_PORT=sixthousand\n")
    with pytest.raises(ConfigError, match="REDIS_PORT='sixthousand'"):
        load_settings(read_environment({ENV_FILE_VARIABLE: str(env)}))


# -- numbers that int() takes but a setting must not ---------------------------------------


@pytest.mark.parametrize("port", ["1_000", "+1000", "٣٠٠٠", "1e3", "0x10"])
def test_port_must_be_plain_digits(port):
    # int("1_000") == 1000 and int("٣٠٠٠") == 3000: a typo must not become another port.
    with pytest.raises(ConfigError, match=r"REDIS_PORT.*not a whole number") as caught:
        load_settings({"REDIS_HOST": "h", "REDIS_PORT": port})
    assert repr(port) in str(caught.value)


@pytest.mark.parametrize("db", ["1_0", "+1", "٣"])
def test_db_must_be_plain_digits(db):
    with pytest.raises(ConfigError, match=r"REDIS_DB.*not a whole number"):
        load_settings({"REDIS_HOST": "h", "REDIS_DB": db})


@pytest.mark.parametrize(
    "url",
    ["redis://h/abc", "redis://h:6379/1_0", "redis://h/0/1", "rediss://h/db0", "redis://h/-1"],
)
def test_url_path_must_be_a_database_number(url):
    # redis-py reads "/abc" as db 0 and "/1_0" as db 10, silently.
    with pytest.raises(ConfigError, match="not a database number") as caught:
        load_settings({"REDIS_URL": url})
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("url", ["redis://h?db=1_0", "redis://h/?db=abc", "unix:///s.sock?db=+2"])
def test_url_db_query_must_be_a_number(url):
    with pytest.raises(ConfigError, match="plain number"):
        load_settings({"REDIS_URL": url})


@pytest.mark.parametrize(
    "url", ["redis://h", "redis://h/", "redis://h:1/15", "unix:///s.sock?db=2", "redis://h?db=3"]
)
def test_good_url_paths_and_db_queries(url):
    assert load_settings({"REDIS_URL": url}).url == url
