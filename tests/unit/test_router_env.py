"""up.sh's settings for a router restarted under a running supervisord (router/router_env.py): written 0600,
applied only under the supervisord they were written for, reported by name, never by value."""

from __future__ import annotations

import os
import stat

from router import router_env


def test_the_settings_apply_under_their_supervisord_only(tmp_path, monkeypatch):
    router_env.write(tmp_path, os.getppid(), {"ULLM_API_KEY": "k", "ULLM_ROUTER_HOST": "0.0.0.0", "OTHER": "x"})
    assert stat.S_IMODE(router_env.env_file(tmp_path).stat().st_mode) == 0o600
    environ = {"ULLM_ADMIN_KEY": "old", "ULLM_API_KEY": "older", "PATH": "/bin"}
    assert router_env.apply(tmp_path, environ) == {"ULLM_API_KEY": "k", "ULLM_ROUTER_HOST": "0.0.0.0"}
    # up.sh ran without ULLM_ADMIN_KEY: it is unset; names up.sh does not own stay
    assert environ == {"ULLM_API_KEY": "k", "ULLM_ROUTER_HOST": "0.0.0.0", "PATH": "/bin"}

    router_env.write(tmp_path, os.getppid() + 1, {"ULLM_API_KEY": "k"})  # another (older) supervisord's file
    environ = {"ULLM_API_KEY": "from-supervisord"}
    assert router_env.apply(tmp_path, environ) is None and environ == {"ULLM_API_KEY": "from-supervisord"}


def test_an_unreadable_file_changes_nothing(tmp_path):
    router_env.env_file(tmp_path).write_text("{not json")
    environ = {"ULLM_API_KEY": "k"}
    assert router_env.apply(tmp_path, environ) is None and environ == {"ULLM_API_KEY": "k"}


def test_the_report_names_changes_without_values(tmp_path, monkeypatch, capsys):
    pid = os.getpid()  # this process stands in for supervisord: its /proc environ is the "started with"
    for name in router_env.NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ULLM_API_KEY", "secret-value-1")
    assert router_env.main(["write", str(tmp_path), str(pid)]) == 0
    out = capsys.readouterr().out
    assert "ULLM_API_KEY unset -> set" in out and "ULLM_ADMIN_KEY unchanged (unset)" in out, out
    assert "secret-value-1" not in out
    monkeypatch.delenv("ULLM_API_KEY")
    assert router_env.main(["write", str(tmp_path), str(pid)]) == 0  # compared with the file now
    out = capsys.readouterr().out
    assert "ULLM_API_KEY set -> unset" in out and "secret-value-1" not in out
    assert router_env.main(["write", str(tmp_path)]) == 64


def test_the_peers_key_variables_apply_too(tmp_path, monkeypatch, capsys):
    """A rerun of up.sh with a peer's key: the variable models.yaml names for it reaches the restarted router."""
    config = tmp_path / "models.yaml"
    config.write_text("engines: {llamacpp: {port: 8002}}\n"
                      "peers: {box2: {url: 'http://box2:8080', api_key_env: BOX2_KEY, admin_key_env: BOX2_ADMIN}}\n")
    monkeypatch.setenv("ULLM_CONFIG", str(config))
    assert router_env.governed() == (*router_env.NAMES, "BOX2_ADMIN", "BOX2_KEY")
    monkeypatch.setenv("BOX2_KEY", "peer-secret")
    monkeypatch.delenv("BOX2_ADMIN", raising=False)
    assert router_env.main(["write", str(tmp_path), str(os.getppid())]) == 0
    out = capsys.readouterr().out
    assert "BOX2_KEY" in out and "peer-secret" not in out
    environ = {"BOX2_ADMIN": "stale", "PATH": "/bin"}
    assert router_env.apply(tmp_path, environ)["BOX2_KEY"] == "peer-secret"
    assert environ["BOX2_KEY"] == "peer-secret" and "BOX2_ADMIN" not in environ and environ["PATH"] == "/bin"
