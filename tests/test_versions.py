"""One version story (issue 23): the package's version beside the versions of the models it ships, shown by
`edge-xray --version` and `edge-xray info`; auxiliary models (orientation, any added later) listed from their
cards, with no list to keep up to date."""

import json

from click.testing import CliRunner

import edge_xray
from edge_xray import runtime, versions
from edge_xray.cli import cli


def test_version_names_the_package_and_every_bundled_model():
    r = CliRunner().invoke(cli, ["--version"])
    assert r.exit_code == 0
    lines = r.output.splitlines()
    assert lines[0] == f"edge-xray {edge_xray.__version__}" and edge_xray.__version__ == "0.8.0"
    card = json.loads(runtime.DEFAULT_MODEL.with_suffix(".json").read_text())
    assert lines[1] == f"screening model: {card['name']} {card['version']} (edge-xray-int8.tflite)"
    orientation = json.loads((runtime.MODELS_DIR / "edge-xray-orientation-int8.json").read_text())
    assert (f"auxiliary model: {orientation['name']} {orientation['version']} (edge-xray-orientation-int8.tflite)"
            in lines[2:])
    assert not any("float32" in line for line in lines)  # the float twin is the screening model's, not another


def test_auxiliary_models_are_found_by_their_cards(tmp_path):
    for name, file, version in (("edge-xray-pneumonia", "edge-xray-int8.tflite", "9.9.9"),
                                ("edge-xray-pneumonia", "edge-xray-float32.tflite", "9.9.9"),
                                ("edge-xray-orientation", "edge-xray-orientation-int8.tflite", "0.1.0"),
                                ("edge-xray-something-new", "new.tflite", "0.0.1")):
        (tmp_path / file.replace(".tflite", ".json")).write_text(json.dumps(
            {"name": name, "file": file, "version": version}))
    (tmp_path / "broken.json").write_text("{not json")
    v = versions.versions(models_dir=tmp_path)
    assert v["screening_model"] == {"name": "edge-xray-pneumonia", "version": "9.9.9", "file": "edge-xray-int8.tflite"}
    assert [(m["name"], m["version"]) for m in v["auxiliary_models"]] == [
        (None, None), ("edge-xray-orientation", "0.1.0"), ("edge-xray-something-new", "0.0.1")]  # by card file name
    assert versions.version_lines(v)[3] == ("auxiliary model: edge-xray-orientation 0.1.0 "
                                            "(edge-xray-orientation-int8.tflite)")
    assert "broken.tflite" in versions.version_lines(v)[2] and "(version unknown)" in versions.version_lines(v)[2]


def test_the_versions_module_names_the_runtimes_folder():
    assert versions.MODELS_DIR == runtime.MODELS_DIR and versions.SCREENING_MODEL == runtime.DEFAULT_MODEL.name


def test_info_shows_the_package_and_auxiliary_versions():
    r = CliRunner().invoke(cli, ["info", "--json"])
    assert r.exit_code == 0, r.output
    card = json.loads(r.output)
    assert card["package_version"] == edge_xray.__version__
    assert "edge-xray-orientation" in [m["name"] for m in card["auxiliary_models"]]
    text = CliRunner().invoke(cli, ["info"]).output
    assert f"package_version: {edge_xray.__version__}" in text and "auxiliary_model: edge-xray-orientation" in text
