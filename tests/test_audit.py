"""The tamper-evident audit log (edge_xray.audit): the chain verifies and names the first broken line, two
processes append to one log safely, and (from the adversarial trial, issue 12) a log in a missing folder is
a usage error and a full disk stops the batch with one line, the chain intact."""

from __future__ import annotations

import hashlib
import json
import multiprocessing

from helpers import assert_clean, bundled, full_disk_after, run, save_scan


@bundled
def test_audit_log_in_missing_folder_is_a_usage_error(tmp_path):
    scan = save_scan(tmp_path / "a.png")
    r = run("classify", scan, "--audit-log", tmp_path / "nowhere" / "audit.log")
    assert_clean(r)
    assert r.exit_code == 2
    log = tmp_path / "nowhere" / "audit.log"
    assert r.stderr == f"Error: cannot write the audit log {log}: No such file or directory\n"


@bundled
def test_full_disk_on_the_audit_log(tmp_path, monkeypatch):
    from edge_xray.audit import AuditLog

    scans = [save_scan(tmp_path / f"s{i}.png", seed=i) for i in range(3)]
    log = tmp_path / "audit.log"
    monkeypatch.setattr(AuditLog, "_sync", full_disk_after(2))
    r = run("classify", *scans, "--audit-log", log)
    assert_clean(r)
    assert r.exit_code == 1
    assert r.stderr.splitlines()[-1].startswith(f"Error: cannot write the audit log {log} (No space left on device)")
    assert len(log.read_text().splitlines()) == 2
    assert run("audit", "verify", log).exit_code == 0


class FakeModel:
    sha256 = "0" * 64
    card = {"version": "test"}


def write_entries(path, n, tag):
    from edge_xray.audit import AuditLog
    from edge_xray.screen import Screening

    log = AuditLog(path, FakeModel())
    for i in range(n):
        log.write(Screening(path=f"{tag}{i}", status="error", error=f"{tag} {i}"))
    log.close()


def test_audit_chain_verifies_and_names_the_first_broken_line(tmp_path):
    from edge_xray.audit import GENESIS, line_sha256

    log = tmp_path / "audit.log"
    write_entries(log, 4, "a")
    lines = log.read_bytes().splitlines()
    assert json.loads(lines[0])["prev_sha256"] == GENESIS == hashlib.sha256(b"").hexdigest()
    assert json.loads(lines[2])["prev_sha256"] == line_sha256(lines[1])
    r = run("audit", "verify", log)
    assert r.exit_code == 0 and r.stdout.startswith(f"{log}: OK, 4 entries, chain intact; last entry sha256 ")
    changed = lines[:]
    changed[1] = changed[1].replace(b'"error"', b'"ok"', 1)
    log.write_bytes(b"\n".join(changed) + b"\n")
    r = run("audit", "verify", log)
    assert r.exit_code == 3
    assert r.stderr == (f"Error: {log}: line 3 is broken: its prev_sha256 does not match line 2 "
                        "(a line was changed, inserted or removed)\n")
    log.write_bytes(b"\n".join(lines[:1] + lines[2:]) + b"\n")  # a line removed
    assert run("audit", "verify", log).exit_code == 3


def test_two_processes_appending_to_one_log_keep_the_chain(tmp_path):
    log = tmp_path / "audit.log"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=write_entries, args=(log, 40, tag)) for tag in "ab"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    from edge_xray.audit import verify

    assert verify(log)["entries"] == 80
