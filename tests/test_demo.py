"""examples/demo.py is what `make demo` runs: the whole chain, here as a one-epoch LeNet-5 smoke run."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from edgecnn.artifact import Artifact

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo.py"


def _load_demo():
    spec = importlib.util.spec_from_file_location("edgecnn_demo", DEMO)
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    return demo


def test_demo_runs_the_whole_chain(tmp_path, capsys):
    demo = _load_demo()
    assert demo.main(["--models", "lenet5", "--epochs", "1", "--out", str(tmp_path), "-q"]) == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "summary.json").read_text())
    lenet = summary["models"]["lenet5"]
    assert lenet["epochs"] == 1 and lenet["recipe"] == "digits/lenet5" and summary["held_out_images"] == 360
    assert 0.3 < lenet["top1"] <= 1.0 and lenet["target_top1"] == 0.98 and lenet["params"] == 61706
    assert Artifact.load(lenet["artifact"], verify=True).metrics["top1"] == lenet["top1"]
    assert json.loads((tmp_path / "lenet5-eval.json").read_text())["top1"] == lenet["top1"]

    # compress: the lenet5 recipe (prune + KD fine-tune + INT8); the final artifact is a QDQ ONNX model
    comp = lenet["compress"]
    assert [s["step"] for s in comp["steps"]][:2] == ["source", "prune"] and comp["final_precision"] == "int8"
    final = Artifact.load(comp["final"], verify=True)
    assert final.format == "onnx" and final.precision == "int8"
    # deploy: a CPU bundle whose own verify step passed in a separate process
    assert lenet["deploy"]["verify_ok"] is True and Path(lenet["deploy"]["bundle"], "run.py").is_file()
    # check: a real verdict with its reports on disk; the demo ends with the gate table and the paths
    chk = lenet["check"]
    assert chk["verdict"] in ("pass", "fail", "inconclusive")
    for kind in ("json", "junit", "markdown", "plot"):
        assert Path(chk["reports"][kind]).is_file(), kind
    assert json.loads(Path(chk["reports"]["json"]).read_text())["verdict"] == chk["verdict"]
    tail = out[out.rindex("edgecnn check: lenet5") :]
    assert "top-1" in tail and "reports:" in tail and chk["reports"]["markdown"] in tail


def test_demo_strict_and_stage_errors(tmp_path):
    demo = _load_demo()
    # one epoch cannot reach the 98 % target: --strict turns that into exit 1
    assert (
        demo.main(
            ["--models", "lenet5", "--epochs", "1", "--out", str(tmp_path), "-q", "--stages", "train", "--strict"]
        )
        == 1
    )
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert "compress" not in summary["models"]["lenet5"]
    r = subprocess.run([sys.executable, str(DEMO), "--stages", "deploy"], capture_output=True, text=True)
    assert r.returncode == 2 and "prefix of train,compress,deploy,check" in r.stderr
