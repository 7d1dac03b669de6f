"""What decides the device's int8 speed: the CPU, its instruction-set features, the runtime, XNNPACK.

Read from /proc/cpuinfo (Linux); elsewhere `platform.processor()`. No numpy, no TensorFlow: `info` and
`bench` print these, and the performance table (benchmarks/perf.py) names them.
"""

from __future__ import annotations

import platform
from importlib import metadata

CPUINFO = "/proc/cpuinfo"
# The features that decide int8 convolution speed in XNNPACK: x86 AVX2 (the baseline int8 kernels),
# AVX-512 and its VNNI int8 dot product, AVX-VNNI, AMX int8 tiles; ARM NEON dot product (Cortex-A76 and later, not the
# A72 of the Raspberry Pi 4), int8 matrix multiply, SVE.
INT8_FEATURES = {
    "x86": ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8"),
    "arm": ("asimd", "asimddp", "i8mm", "sve"),
}
# ARM's /proc/cpuinfo names no model, only implementer and part numbers (Arm Ltd = 0x41).
ARM_PARTS = {
    "0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72", "0xd09": "Cortex-A73", "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76",
    "0xd0c": "Neoverse-N1", "0xd0d": "Cortex-A77", "0xd40": "Neoverse-V1", "0xd41": "Cortex-A78",
    "0xd44": "Cortex-X1", "0xd46": "Cortex-A510", "0xd47": "Cortex-A710", "0xd48": "Cortex-X2",
    "0xd49": "Neoverse-N2", "0xd4f": "Neoverse-V2",
}
RUNTIME_DISTRIBUTIONS = {"ai_edge_litert": "ai-edge-litert", "tflite_runtime": "tflite-runtime",
                         "tensorflow": "tensorflow"}


def _family(machine: str) -> str:
    m = machine.lower()
    if m in ("x86_64", "amd64", "i386", "i686", "x86"):
        return "x86"
    if m.startswith(("arm", "aarch64")):
        return "arm"
    return m


def parse_cpuinfo(text: str, machine: str | None = None) -> dict:
    """The CPU model, architecture and int8-relevant features from the text of /proc/cpuinfo."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip().lower()
        if sep and key and key not in fields:  # the first processor's entry (and the trailer)
            fields[key] = value.strip()
    machine = machine or platform.machine()
    if "flags" in fields and "cpu part" not in fields:
        family = "x86"
    elif "cpu part" in fields or "features" in fields:
        family = "arm"
    else:
        family = _family(machine)
    flags = set((fields.get("flags") or fields.get("features") or "").split())
    model = fields.get("model name")
    if family == "arm" and not model:
        part = ARM_PARTS.get(fields.get("cpu part", "").lower()) if fields.get("cpu implementer") == "0x41" else None
        board = fields.get("model")  # Raspberry Pi kernels name the board in the trailer
        model = " ".join(x for x in (part, f"({board})" if board else None) if x) or None
    features = INT8_FEATURES.get(family, ())
    return {
        "cpu_model": model or platform.processor() or "unknown",
        "architecture": machine,
        "cores": sum(1 for line in text.splitlines() if line.lower().startswith("processor")) or None,
        "int8_features": {f: f in flags for f in features},
    }


def cpu_info(path: str = CPUINFO) -> dict:
    """parse_cpuinfo of this machine's /proc/cpuinfo; platform.processor() where there is none."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return parse_cpuinfo(f.read())
    except OSError:
        return {"cpu_model": platform.processor() or "unknown", "architecture": platform.machine(),
                "cores": None, "int8_features": {}}


def runtime_version(runtime: str) -> str | None:
    try:
        return metadata.version(RUNTIME_DISTRIBUTIONS.get(runtime, runtime))
    except metadata.PackageNotFoundError:
        return None


def features_line(features: dict) -> str:
    """{'avx2': True, 'avx512_vnni': False} -> 'avx2 yes, avx512_vnni no'."""
    return ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in features.items()) or "unknown"


def platform_report(model) -> dict:
    """The runtime, its version, XNNPACK, the CPU and its int8 features, for a loaded runtime.Model.
    `info` and `bench` print these."""
    cpu = cpu_info()
    return {
        "runtime": model.runtime,
        "runtime_version": runtime_version(model.runtime),
        "xnnpack": getattr(model, "xnnpack", None),
        "cpu_model": cpu["cpu_model"],
        "architecture": cpu["architecture"],
        "cpu_int8_features": cpu["int8_features"],
    }


def platform_lines(report: dict) -> list[str]:
    """platform_report as `key: value` lines for the text output of `info` and `bench`."""
    x = report["xnnpack"]
    return [
        f"runtime: {report['runtime']} {report['runtime_version'] or '(version unknown)'}",
        f"xnnpack: {'unknown (stderr not capturable)' if x is None else x}",
        f"cpu: {report['cpu_model']} ({report['architecture']})",
        f"cpu_int8_features: {features_line(report['cpu_int8_features'])}",
    ]


def info_report(model) -> dict:
    """What `edge-xray info` shows for a loaded runtime.Model: its card, where it is, whether the package
    ships it, the package's and the auxiliary models' versions (edge_xray.versions), and platform_report."""
    from .trust import is_trusted
    from .versions import versions

    card = model.card.to_dict()
    card["model_path"] = str(model.path)
    if card.get("float_model"):
        card["float_model"] = str((model.path.parent / card["float_model"]).resolve())
    card["model_verified"] = is_trusted(model.path, model.card.file_sha256)
    v = versions({"name": card.get("name"), "version": card.get("version"), "file": model.path.name})
    card["package_version"] = v["package"]
    card["auxiliary_models"] = v["auxiliary_models"]
    card.update(platform_report(model))
    return card
