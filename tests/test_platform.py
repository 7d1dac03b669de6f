"""Runtime honesty (issue 14): CPU and int8 features, the runtime's stderr, the no-runtime message."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from edge_xray import platform_info, runtime
from edge_xray.cli import cli

X86 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse sse2 avx avx2 fma bmi2
processor\t: 1
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse sse2 avx avx2 fma bmi2
"""

# A Raspberry Pi 5 (Cortex-A76, dot product) and a Pi 4 (Cortex-A72, none): no "model name" line.
PI5 = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x4
CPU part\t: 0xd0b
CPU revision\t: 1

Hardware\t: BCM2712
Model\t\t: Raspberry Pi 5 Model B Rev 1.0
"""
PI4 = PI5.replace("0xd0b", "0xd08").replace(" asimddp", "").replace("Pi 5", "Pi 4")


def test_cpuinfo_x86():
    c = platform_info.parse_cpuinfo(X86, machine="x86_64")
    assert c["cpu_model"] == "AMD EPYC 7B13"
    assert c["architecture"] == "x86_64"
    assert c["cores"] == 2
    assert c["int8_features"] == {"avx2": True, "avx512f": False, "avx512_vnni": False,
                                  "avx_vnni": False, "amx_int8": False}


def test_cpuinfo_arm_names_the_core_and_the_dot_product():
    c5 = platform_info.parse_cpuinfo(PI5, machine="aarch64")
    assert c5["cpu_model"] == "Cortex-A76 (Raspberry Pi 5 Model B Rev 1.0)"
    assert c5["int8_features"] == {"asimd": True, "asimddp": True, "i8mm": False, "sve": False}
    c4 = platform_info.parse_cpuinfo(PI4, machine="aarch64")
    assert c4["cpu_model"].startswith("Cortex-A72")
    assert c4["int8_features"]["asimddp"] is False


def test_cpuinfo_of_this_machine_and_a_missing_file(tmp_path):
    here = platform_info.cpu_info()
    assert here["cpu_model"] and here["architecture"]
    missing = platform_info.cpu_info(str(tmp_path / "no-cpuinfo"))
    assert missing["int8_features"] == {} and missing["architecture"]


def test_stderr_filter_drops_only_the_xnnpack_info_line(capfd):
    with runtime._filtered_stderr() as seen:
        os.write(2, (runtime.XNNPACK_INFO + "\n").encode())
        os.write(2, b"Error in cpuinfo: failed to parse the list of possible processors\n")
    err = capfd.readouterr().err
    assert "Error in cpuinfo: failed to parse" in err
    assert "XNNPACK delegate" not in err
    assert seen == [runtime.XNNPACK_INFO, "Error in cpuinfo: failed to parse the list of possible processors"]


def test_stderr_filter_passes_everything_else_through_even_on_error(capfd):
    with pytest.raises(RuntimeError):
        with runtime._filtered_stderr():
            os.write(2, b"ERROR: something the runtime says\n")
            raise RuntimeError("boom")
    assert capfd.readouterr().err == "ERROR: something the runtime says\n"


def test_model_records_xnnpack(capfd):
    m = runtime.Model()
    err = capfd.readouterr().err
    assert "XNNPACK delegate" not in err
    if m.runtime == "ai_edge_litert":  # LiteRT applies XNNPACK by default on x86-64 and arm64
        assert m.xnnpack is True


def test_info_reports_runtime_xnnpack_and_cpu():
    r = CliRunner().invoke(cli, ["info", "--json"])
    assert r.exit_code == 0, r.output
    card = json.loads(r.output)
    assert card["runtime"] in runtime.RUNTIMES
    assert card["runtime_version"]
    assert card["xnnpack"] in (True, False, None)
    assert card["cpu_model"] == platform_info.cpu_info()["cpu_model"]
    assert set(card["cpu_int8_features"]) == set(platform_info.cpu_info()["int8_features"])
    text = CliRunner().invoke(cli, ["info"]).output
    assert f"runtime: {card['runtime']} {card['runtime_version']}" in text
    assert "xnnpack: " in text and f"cpu: {card['cpu_model']}" in text and "cpu_int8_features: " in text


@pytest.mark.slow
def test_bench_reports_runtime_xnnpack_and_cpu():
    from edge_xray.bench import bench

    r = bench(runs=10)
    for key in ("runtime", "runtime_version", "xnnpack", "cpu_model", "architecture", "cpu_int8_features"):
        assert key in r
    assert r["cpu_model"] == platform_info.cpu_info()["cpu_model"]


@pytest.fixture
def no_runtime(monkeypatch):
    def fail(name):
        raise ImportError(f"No module named '{name}'")

    monkeypatch.delenv(runtime.RUNTIME_ENV, raising=False)
    monkeypatch.setattr(runtime, "_import_interpreter", fail)


@pytest.mark.parametrize("machine, needle", [("x86_64", "pip install 'edge-xray[edge]'"),
                                             ("aarch64", "pip install 'edge-xray[edge]'"),
                                             ("armv7l", "64-bit OS")])
def test_no_runtime_says_what_to_install_and_exits_4(no_runtime, monkeypatch, tmp_path, machine, needle):
    monkeypatch.setattr(runtime.platform, "machine", lambda: machine)
    scan = tmp_path / "scan.png"
    scan.write_bytes(b"not read: the model fails first")
    for args in (["classify", str(scan)], ["info"], ["bench", "--runs", "10"]):
        r = CliRunner().invoke(cli, args)
        assert r.exit_code == 4, (args, r.output)
        lines = r.output.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0] and "no TFLite runtime" in lines[0], r.output
        assert "Traceback" not in r.output
