"""Reading known_hosts files as OpenSSH writes them: markers, hashed names, patterns, bad lines."""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import paramiko
import pytest

from flannel_bot.executors.known_hosts import patterns_match, read_known_hosts
from flannel_bot.executors.ssh_settings import SshSettings
from flannel_bot.settings import ConfigError, load_settings

A = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMGik4GvAAXhFEdrB3dJEmnGm4B9B36eo8RU/+mie1K6"
B = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMfcurzIBN+PK/hxgMnvt+mryQQq/Px4lGkXviZFjtpE"
CA = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKxTIz4y26R1HsBK+VVCQLP+vJTRjDpLOoo/MvhWlh42"


def key(line: str) -> paramiko.PKey:
    kind, data = line.split()
    return paramiko.PKey.from_type_string(kind, base64.b64decode(data))


def test_marker_lines_are_read_not_fatal(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "known_hosts"
    path.write_text(
        "# a comment\n"
        "\n"
        f"@cert-authority *.example.com {CA}\n"
        f"w1 {A}\n"
        f"{paramiko.HostKeys.hash_host('w2')} {B}\n"
        f"@revoked w3,!w1 {A}\n"
        f"@revoked * {B} old key of w2\n"
        "w4 ssh-ed25519 not*base64\n"
        "w5 ssh-unknown-type AAAA\n"
        "w6\n"
        f"@markedup w7 {A}\n"
    )
    with caplog.at_level(logging.WARNING, logger="flannel_bot.executors.known_hosts"):
        known = read_known_hosts(path)
    assert known.lookup("w1") == {"ssh-ed25519": key(A)}
    assert known.lookup("w2") == {"ssh-ed25519": key(B)}  # hashed name
    assert known.lookup("w4") == {} and known.lookup("w7") == {}
    # the @revoked lines apply to the hosts their patterns match
    assert known.revoked_line(key(A), ["w3"]) == 6
    assert known.revoked_line(key(A), ["w1"]) is None  # negated
    assert known.revoked_line(key(A), ["w9"]) is None
    assert known.revoked_line(key(B), ["w2"]) == 7
    assert known.revoked_line(key(CA), ["anything"]) is None
    logged = caplog.text
    assert f"{path}:3: skipped a @cert-authority line" in logged
    assert f"{path}:8: skipped a line whose key cannot be read" in logged
    assert f"{path}:9: skipped a line" in logged and f"{path}:10: skipped a line" in logged
    assert f"{path}:11: skipped a line with unknown marker @markedup" in logged


def test_an_unreadable_revoked_key_is_logged_as_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "known_hosts"
    path.write_text("@revoked * ssh-ed25519 !!!\n")
    with caplog.at_level(logging.ERROR, logger="flannel_bot.executors.known_hosts"):
        assert read_known_hosts(path).revoked == ()
    assert "cannot read this @revoked key" in caplog.text


@pytest.mark.parametrize(
    ("patterns", "name", "matches"),
    [
        (["w1"], "w1", True),
        (["W1"], "w1", True),
        (["w1"], "w10", False),
        (["w*"], "w10", True),
        (["w?"], "w10", False),
        (["*", "!w2"], "w2", False),
        (["*", "!w2"], "w3", True),
        (["[10.0.0.1]:2222"], "[10.0.0.1]:2222", True),
        (["10.0.0.1"], "10.0.0.11", False),
        (["10.0.0.*"], "10.0.0.11", True),
        ([paramiko.HostKeys.hash_host("w1")], "w1", True),
        ([paramiko.HostKeys.hash_host("w1")], "w2", False),
    ],
)
def test_host_patterns_as_openssh_reads_them(patterns: list[str], name: str, matches: bool) -> None:
    assert patterns_match(patterns, name) is matches


def test_the_address_fallback_is_a_boolean_setting(tmp_path: Path) -> None:
    config = tmp_path / "flannel-bot.toml"
    config.write_text('[ssh]\nknown_hosts_by_address = "yes"\n')
    with pytest.raises(ConfigError, match="known_hosts_by_address must be true or false"):
        load_settings(config, {"HOME": str(tmp_path)})
    config.write_text("[ssh]\nknown_hosts_by_address = true\n")
    assert load_settings(config, {"HOME": str(tmp_path)}).cluster().ssh.known_hosts_by_address
    assert not SshSettings().known_hosts_by_address  # names only, by default
