"""Configuration: service.yml, the environment, keyword arguments, and the
errors that name file, line and column."""

import pytest

import exoservice
from exoservice import ConfigError, Service, UndeclaredMessageError, UsageError

from conftest import write_service


def test_service_yml_is_read(tmp_path):
    write_service(tmp_path, "todo-service", ["todo.add", "todo.list"], ["todo.added"])
    service = Service(tmp_path)
    assert service.role == "todo-service"
    assert service.receives == ["todo.add", "todo.list"]
    assert service.sends == ["todo.added"]
    assert service.config_file.endswith("service.yml")


def test_the_current_directory_is_the_default(tmp_path, monkeypatch):
    write_service(tmp_path, "here", ["a"], ["b"])
    monkeypatch.chdir(tmp_path)
    assert Service().role == "here"


def test_environment_overrides_the_file(tmp_path, monkeypatch):
    write_service(tmp_path, "from-file", ["a"], ["b"])
    monkeypatch.setenv("ROLE", "from-env")
    monkeypatch.setenv("EXOCOM_HOST", "bus.example")
    monkeypatch.setenv("EXOCOM_PORT", "4100")
    service = Service(tmp_path)
    assert (service.role, service.exocom_host, service.exocom_port) == ("from-env", "bus.example", 4100)


def test_keyword_arguments_override_the_environment(tmp_path, monkeypatch):
    write_service(tmp_path, "from-file", ["a"], ["b"])
    monkeypatch.setenv("ROLE", "from-env")
    monkeypatch.setenv("EXOCOM_PORT", "4100")
    service = Service(dir=tmp_path, role="from-code", exocom_host="127.0.0.1", exocom_port=4200)
    assert (service.role, service.exocom_host, service.exocom_port) == ("from-code", "127.0.0.1", 4200)


def test_a_wrong_type_names_file_line_and_column(tmp_path):
    (tmp_path / "service.yml").write_text(
        "type: broken\nmessages:\n  receives: [a]\n  sends: 5\n"
    )
    with pytest.raises(ConfigError) as info:
        Service(tmp_path)
    e = info.value
    assert isinstance(e, exoservice.ExoError)
    assert e.file.endswith("service.yml")
    assert e.line == 4
    assert isinstance(e.column, int)
    assert str(e).startswith(f"{e.file}:4:{e.column}: ")
    assert e.message in str(e)


def test_a_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as info:
        Service(tmp_path / "nowhere")
    assert "nowhere" in str(info.value)
    assert info.value.line is None


def test_bad_arguments_are_named(tmp_path):
    write_service(tmp_path, "svc", ["a"], ["b"])
    with pytest.raises(ConfigError, match="role=") as info:
        Service(tmp_path, role="not a role!")
    assert "not a role" in info.value.message
    with pytest.raises(ConfigError, match="exocom_port"):
        Service(tmp_path, exocom_port=70000)
    with pytest.raises(TypeError):
        Service(tmp_path, exocom_port="80")


def test_handlers_must_be_declared_under_receives(tmp_path):
    write_service(tmp_path, "svc", ["ping"], ["pong"])
    service = Service(tmp_path)
    with pytest.raises(UndeclaredMessageError) as info:

        @service.handler("pong")
        def wrong(payload, ctx):
            pass

    e = info.value
    assert (e.name, e.role, e.direction) == ("pong", "svc", "receives")
    assert "receives" in str(e)


def test_one_handler_per_name_taking_payload_and_ctx(tmp_path):
    write_service(tmp_path, "svc", ["ping"], ["pong"])
    service = Service(tmp_path)
    with pytest.raises(TypeError, match="payload, ctx"):
        service.handler("ping", lambda payload: None)
    with pytest.raises(TypeError, match="no arguments"):
        service.before_all(lambda x: None)
    service.handler("ping", lambda payload, ctx: None)
    with pytest.raises(UsageError, match="already registered"):
        service.handler("ping", lambda payload, ctx: None)


def test_from_parts_reads_no_file(tmp_path):
    service = Service.from_parts("caller", receives=["pong"], sends=["ping"], exocom_port=1234)
    assert (service.role, service.receives, service.sends, service.exocom_port) == (
        "caller",
        ["pong"],
        ["ping"],
        1234,
    )
