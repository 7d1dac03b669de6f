"""Issue 20 rows 7 and 8: an audit log that cannot be changed unnoticed (signed with the device key) and
that survives a power cut mid-write; `edge-xray key init`."""

from __future__ import annotations

import json
import stat

import pytest
from click.testing import CliRunner

from edge_xray.audit import GENESIS, AuditLog, line_sha256, verify
from edge_xray.cli import cli
from edge_xray.keys import init_key, load_key
from edge_xray.screen import Screening


class FakeModel:
    sha256 = "0" * 64
    card = {"version": "test"}


@pytest.fixture(autouse=True)
def no_device_key(tmp_path, monkeypatch):
    """No test here sees (or makes) a key in the user's own configuration folder."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("EDGE_XRAY_KEY", raising=False)


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def write(log, n, key=False, tag="a"):
    a = AuditLog(log, FakeModel(), key=key)
    for i in range(n):
        a.write(Screening(path=f"{tag}{i}", status="ok", label="PNEUMONIA", pneumonia_probability=0.9))
    a.close()


@pytest.fixture
def key(tmp_path):
    return init_key(tmp_path / "keys" / "device.key")


def test_key_init_makes_a_private_key_only_its_owner_reads(tmp_path):
    path = tmp_path / "k" / "device.key"
    r = run("key", "init", "--key", path)
    assert r.exit_code == 0, r.output
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    pub = json.loads((tmp_path / "k" / "device.key.pub").read_text())
    assert r.stdout.splitlines() == [f"private key: {path} (mode 600: keep it on this device, never copy it)",
                                     f"public key: {path}.pub (copy it to check this device's logs elsewhere)",
                                     f"fingerprint: {pub['key_id']}"]
    assert load_key(path).id == pub["key_id"] and len(pub["key_id"]) == 16
    r = run("key", "init", "--key", path)  # never replaced: what it signed would no longer verify
    assert r.exit_code == 2 and "already exists" in r.stderr
    path.chmod(0o644)
    with pytest.raises(Exception, match="readable by others"):
        load_key(path)


def test_key_init_defaults_to_the_user_config_folder(tmp_path):
    r = run("key", "init")
    assert r.exit_code == 0 and (tmp_path / "config" / "edge-xray" / "device.key").exists()


def test_signed_log_verifies_here_and_elsewhere_with_the_public_part(tmp_path, key, monkeypatch):
    log = tmp_path / "audit.log"
    write(log, 3, key)
    entry = json.loads(log.read_text().splitlines()[-1])
    assert entry["key_id"] == key.id and list(entry)[-1] == "signature"
    r = run("audit", "verify", log, "--key", f"{key.path}.pub")
    assert r.exit_code == 0
    assert r.stdout.endswith(f"; 3 signed by key {key.id}, signatures verified\n")
    r = run("audit", "verify", log)  # no key on this machine: said, not hidden
    assert r.exit_code == 0 and "signatures NOT checked" in r.stdout
    monkeypatch.setenv("EDGE_XRAY_KEY", key.path)
    assert "signatures verified" in run("audit", "verify", log).stdout


def tampered(log, key, how):
    lines = log.read_bytes().splitlines()
    if how == "edit last":
        lines[-1] = lines[-1].replace(b'"PNEUMONIA"', b'"NORMAL"')
    elif how == "append":
        e = json.loads(lines[-1])
        e.pop("signature")
        e.update(label="NORMAL", prev_sha256=line_sha256(lines[-1]))
        lines.append(json.dumps(e).encode())
    elif how == "append with another key":
        other = init_key(log.parent / "other.key")
        a = AuditLog(log, FakeModel(), key=other)
        a.write(Screening(path="x", status="ok", label="NORMAL"))
        a.close()
        return
    elif how == "re-chain":
        prev = GENESIS
        for i, line in enumerate(lines):
            e = json.loads(line)
            if i == 1:
                e["label"] = "NORMAL"
            e["prev_sha256"] = prev
            lines[i] = json.dumps(e).encode()
            prev = line_sha256(lines[i])
    log.write_bytes(b"\n".join(lines) + b"\n")


@pytest.mark.parametrize("how, said", [
    ("edit last", "line 3 is broken: its signature does not match (the line was altered)"),
    ("append", "line 4 is not signed, but line 1 before it is: added or altered without the device key"),
    ("append with another key", "line 4 is signed by another key"),
    ("re-chain", "line 2 is broken: its signature does not match (the line was altered)"),
])
def test_every_change_to_a_signed_log_is_caught(tmp_path, key, how, said):
    log = tmp_path / "audit.log"
    write(log, 3, key)
    tampered(log, key, how)
    r = run("audit", "verify", log, "--key", f"{key.path}.pub")
    assert r.exit_code == 3 and r.stderr.startswith(f"Error: {log}: {said}"), r.stderr


def test_a_log_from_before_the_key_verifies_as_unkeyed(tmp_path, key):
    log = tmp_path / "audit.log"
    write(log, 2)
    r = run("audit", "verify", log)
    assert r.exit_code == 0 and r.stdout.endswith("; unkeyed: no entry is signed (anyone who can write the file "
                                                  "could have re-chained it)\n")
    write(log, 2, key, tag="b")
    r = run("audit", "verify", log, "--key", f"{key.path}.pub")
    assert r.exit_code == 0 and r.stdout.endswith(f"; 2 signed by key {key.id}, signatures verified; the first 2 "
                                                  "entries, from before the key, are unkeyed\n")


@pytest.mark.parametrize("cut", [b'{"time": "2026-12-02T00:1', b"\x00" * 40, b'{"time": 1, broken}\n'])
def test_a_power_cut_mid_line_is_moved_aside_and_the_chain_goes_on(tmp_path, key, capsys, cut):
    log = tmp_path / "audit.log"
    write(log, 2, key)
    good = log.read_bytes()
    log.write_bytes(good + cut)
    if not cut.endswith(b"\n"):
        assert verify(log, f"{key.path}.pub")["notes"][0].startswith("the last line is half-written")
    write(log, 1, key, tag="after")
    err = capsys.readouterr().err
    side = sorted(tmp_path.glob("audit.log.partial-*"))
    assert len(side) == 1 and side[0].read_bytes() == cut
    assert err == (f"{log}: a half-written last line ({len(cut)} bytes, a power cut?) was moved aside to "
                   f"{side[0].name}; the chain goes on from the line before it\n")
    assert log.read_bytes().startswith(good)
    entry = json.loads(log.read_bytes().splitlines()[-1])
    assert entry["recovered"]["side_file"] == side[0].name and entry["recovered"]["bytes"] == len(cut)
    r = run("audit", "verify", log, "--key", f"{key.path}.pub")
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[1] == (f"note: line 3 records a half-written line ({len(cut)} bytes) moved aside "
                                        f"to {side[0].name} after a power cut")


def test_a_machine_that_only_checks_names_the_public_key_in_its_environment(tmp_path, key, monkeypatch):
    log = tmp_path / "audit.log"
    write(log, 2, key)
    monkeypatch.setenv("EDGE_XRAY_KEY", f"{key.path}.pub")
    assert load_key() is None  # nothing to sign with here, and no error
    r = run("audit", "verify", log)
    assert r.exit_code == 0 and "2 signed by key" in r.stdout and "signatures verified" in r.stdout
    with pytest.raises(Exception, match="is not a private key"):
        load_key(f"{key.path}.pub")
