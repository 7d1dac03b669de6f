"""Golden values of the bundled model: label and p for each full-resolution shared scan.

    python benchmarks/golden.py [--data DATA_DIR] [--write tests/golden/bundled-fullres.json]

Run it (with --write) whenever the bundled model changes; tests/test_bundled.py checks that the
bundled model still gives these answers (label equal, p within 0.01) on this machine's runtime.
A new bundled model also needs its sha256 in edge_app/trust.py (BUNDLED_SHA256: `sha256sum
edge_app/models/*.tflite`), or it runs only as unverified; tests/test_trust.py checks the list.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import edge_xray

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("EDGE_XRAY_DATA", ROOT.parent / "shared" / "data" / "chest_xray"))
GOLDEN = ROOT / "tests" / "golden" / "bundled-fullres.json"


def golden(data_dir: Path) -> dict:
    screener = edge_xray.load_model()
    fullres = Path(data_dir) / "fullres"
    rows = []
    for s in screener.classify_many([fullres]):
        rows.append({"file": Path(s.path).relative_to(fullres).as_posix(), "status": s.status, "label": s.label,
                     "pneumonia_probability": s.pneumonia_probability, "pneumonia_type": s.pneumonia_type,
                     "intended_use": s.intended_use})
    return {"model_sha256": screener.model.sha256, "model_version": screener.card.version,
            "intended_use_model_sha256": screener.intended_use.sha256,
            "threshold": screener.threshold, "data": "fullres/ of the shared data (80 original-resolution scans)",
            "command": "python benchmarks/golden.py --write tests/golden/bundled-fullres.json", "rows": rows}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--write", type=Path, default=None, help="write the golden file here")
    args = ap.parse_args()
    g = golden(args.data)
    text = json.dumps(g, indent=1) + "\n"
    if args.write:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(text)
        print(f"{len(g['rows'])} rows -> {args.write}")
    else:
        print(text)


if __name__ == "__main__":
    main()
