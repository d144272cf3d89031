"""The main job on the built-in default data (`make demo`): the whole edgecnn chain on the bundled
handwritten digits (real images, 1,437 for training, 360 held out), for LeNet-5 and ResNet-18:

  train     each model with its measured recipe, evaluate it on the held-out images
  compress  lenet5: prune 60 % of the channels + fine-tune distilled from the original + INT8;
            resnet18: INT8 (NNCF post-training quantization, calibrated on digits training images)
  deploy    a CPU bundle of each compressed model (ONNX Runtime), verified like on a device:
            `python3 run.py --verify` in the bundle (hashes, then outputs against the golden outputs)
  check     the regression gate: compressed vs original on the held-out images
            (policy examples/policies/digits-ci.yaml), with Markdown / JSON / JUnit / PNG reports

It ends with the gate's table and the report paths; everything goes under runs/demo/ and
runs/demo/summary.json. ``--stages train`` stops after training; ``--epochs 1`` is a smoke run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# The claims, checked on every run: held-out top-1 on the digits.
TARGETS = {"lenet5": 0.98, "resnet18": 0.97}
DATA = "digits"
STAGES = ("train", "compress", "deploy", "check")
# What each model is compressed with (edgecnn compress options; lenet5 = examples/recipes/lenet5-prune-kd-int8.yaml).
COMPRESS = {
    "lenet5": {"recipe": HERE / "recipes" / "lenet5-prune-kd-int8.yaml"},
    "resnet18": {"int8": True, "calib": DATA, "target": "cpu", "data": DATA},
}
POLICY = HERE / "policies" / "digits-ci.yaml"


def train_step(model: str, out_dir: Path, *, epochs: int | None = None, progress: bool = True) -> dict:
    """Train ``model`` on the digits with its recipe (edgecnn.train.recipe); returns the artifact and timing."""
    from edgecnn.train import configure, recipe, train

    plan = recipe(model, DATA)
    config = configure(model, DATA, epochs=epochs)
    print(
        f"\n== train {model}: recipe {plan['name']} - {plan['in_channels']}x{plan['input_size']}x{plan['input_size']}, "
        f"{config.epochs} epochs, {config.optimizer} lr {config.resolved_lr():g}, batch {config.batch_size}",
        flush=True,
    )
    t0 = time.perf_counter()
    art = train(model, data=DATA, out=out_dir / model, config=config, progress=progress)
    return {
        "model": model,
        "artifact": art,
        "recipe": plan["name"],
        "epochs": config.epochs,
        "train_seconds": art.metrics["train_seconds"],
        "train_cpu_seconds": art.metrics.get("train_cpu_seconds"),
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }


def evaluate_step(run: dict, out_dir: Path) -> dict:
    """Score the artifact on the held-out digits through its runner and keep the JSON next to it."""
    from edgecnn.artifact import atomic_write_json
    from edgecnn.evaluation import evaluate

    result = evaluate(run["artifact"], DATA, batch_size=64)
    atomic_write_json(out_dir / f"{run['model']}-eval.json", result)
    return {**run, "eval": result}


def compress_step(run: dict, out_dir: Path, *, epochs: int | None = None, progress: bool = True) -> dict:
    """``edgecnn compress`` on the trained artifact; returns the final (compressed) artifact and the chain's table."""
    from edgecnn.artifact import Artifact
    from edgecnn.compress.pipeline import compress

    options = dict(COMPRESS.get(run["model"]) or {"int8": True, "calib": DATA, "target": "cpu", "data": DATA})
    recipe = options.pop("recipe", None)
    if epochs is not None and recipe is not None:  # smoke runs: keep the fine-tuning as short as the training
        options["finetune_epochs"] = epochs
    print(
        f"\n== compress {run['model']}: "
        + (f"recipe {Path(recipe).name}" if recipe else ", ".join(f"{k}={v}" for k, v in options.items())),
        flush=True,
    )
    report = compress(
        run["artifact"].path, recipe=recipe, out=str(out_dir / f"{run['model']}-compress"), progress=progress, **options
    )
    return {**run, "compress": report, "final": Artifact.load(report["final"])}


def deploy_step(run: dict, out_dir: Path) -> dict:
    """A CPU deployment bundle of the compressed model, then its own verify step run as a device would."""
    from edgecnn.deploy import make_bundle

    bundle = make_bundle(run["final"], out_dir / f"{run['model']}-bundle", target="cpu")
    print(f"\n== deploy {run['model']}: bundle {bundle.path}; verifying with python3 run.py --verify", flush=True)
    proc = subprocess.run(
        [sys.executable, "run.py", "--verify"], cwd=bundle.path, capture_output=True, text=True, timeout=600
    )
    lines = [
        line
        for line in (proc.stdout + proc.stderr).strip().splitlines()
        if not line.startswith("edgecnn-verify-result")
    ]  # the machine-readable line stays out of the log
    print("\n".join("   " + line for line in lines[-3:]), flush=True)
    return {**run, "bundle": bundle, "verify_ok": proc.returncode == 0, "verify_tail": lines[-3:]}


def check_step(run: dict, out_dir: Path, *, progress: bool = True) -> dict:
    """The regression gate: compressed (final) vs the trained original on the held-out digits."""
    from edgecnn.check import check

    where = out_dir / f"{run['model']}-check"
    where.mkdir(parents=True, exist_ok=True)
    print(
        f"\n== check {run['model']}: {run['final'].precision} candidate vs original, policy {POLICY.name}", flush=True
    )
    report = check(run["final"], run["artifact"], DATA, policy=str(POLICY), progress=progress)
    report.write(
        json=where / "report.json", junit=where / "junit.xml", markdown=where / "report.md", plot=where / "report.png"
    )
    return {**run, "check": report}


def report_step(runs: list[dict], out_dir: Path) -> dict:
    """One table on stdout and runs/demo/summary.json with every number and how it was measured."""
    from edgecnn.artifact import atomic_write_json
    from edgecnn.cli._common import fmt_count, fmt_pct, print_table
    from edgecnn.envinfo import fingerprint

    rows, models = [], {}
    for r in runs:
        art, ev = r["artifact"], r["eval"]
        target = TARGETS.get(r["model"])
        met = None if target is None else ev["top1"] >= target
        rows.append(
            [
                r["model"],
                "x".join(map(str, art.input_shape)),
                f"{art.metrics['params']:,}",
                fmt_count(art.metrics["macs"]),
                r["epochs"],
                f"{r['train_seconds']:.1f}",
                f"{r['train_cpu_seconds']:.1f}",
                fmt_pct(ev["top1"]),
                fmt_pct(ev["top5"]),
                f"{ev['images_per_second']:,.0f}",
                "-" if target is None else f"{fmt_pct(target, 0)} {'met' if met else 'MISSED'}",
            ]
        )
        models[r["model"]] = {
            "artifact": str(art.path),
            "id": art.id,
            "recipe": r["recipe"],
            "input": list(art.input_shape),
            "params": art.metrics["params"],
            "macs": art.metrics["macs"],
            "epochs": r["epochs"],
            "train_seconds": r["train_seconds"],
            "train_cpu_seconds": r["train_cpu_seconds"],
            "wall_seconds": r["wall_seconds"],
            "top1": ev["top1"],
            "top5": ev["top5"],
            "per_class": ev["per_class"],
            "images_per_second": ev["images_per_second"],
            "target_top1": target,
            "target_met": met,
        }
    print()
    print_table(
        rows,
        ["model", "input", "params", "MACs", "epochs", "train s", "CPU s", "top-1", "top-5", "img/s", "target"],
        title=f"edgecnn demo: trained on the bundled digits, {runs[0]['eval']['n'] if runs else 0} held-out images",
    )
    for r in runs:
        entry = models[r["model"]]
        if "compress" in r:
            c = r["compress"]
            entry["compress"] = {
                "run": c["run"],
                "final": c["final"],
                "final_precision": c["final_precision"],
                "steps": c["steps"],
                "table": c["table"],
                "seconds": c["seconds"],
            }
        if "bundle" in r:
            entry["deploy"] = {
                "bundle": str(r["bundle"].path),
                "target": "cpu",
                "verify_ok": r["verify_ok"],
                "verify_tail": r["verify_tail"],
            }
    gated = [r for r in runs if "check" in r]
    for r in gated:
        rep = r["check"]
        print()
        print_table(
            rep.table_rows(),
            ["metric", "original", "candidate", "value", "threshold", "status"],
            title=f"edgecnn check: {r['model']} {rep.candidate['format']}/{rep.candidate['precision']} "
            f"vs original on {rep.n_images} held-out images",
        )
        print(rep.summary())
        models[r["model"]]["check"] = {
            "verdict": rep.verdict,
            "exit_code": rep.exit_code,
            "summary": rep.summary(),
            "reports": dict(rep.reports),
        }
    summary = {
        "data": DATA,
        "held_out_images": runs[0]["eval"]["n"] if runs else 0,
        "models": models,
        "command": "python examples/demo.py " + " ".join(sys.argv[1:]),
        "environment": fingerprint(),
    }
    atomic_write_json(out_dir / "summary.json", summary)
    if gated:
        print("\nreports:")
        for r in gated:
            for kind, path in r["check"].reports.items():
                print(f"  {r['model']:<9} {kind:<9} {path}")
    for r in runs:
        if "bundle" in r:
            print(
                f"  {r['model']:<9} {'bundle':<9} {r['bundle'].path}  (verify: {'ok' if r['verify_ok'] else 'FAILED'})"
            )
    print(f"  summary   json      {out_dir / 'summary.json'}")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out", type=Path, default=Path("runs/demo"), help="where artifacts and JSON go (default runs/demo)"
    )
    parser.add_argument(
        "--models", default="lenet5,resnet18", help="comma-separated zoo models (default lenet5,resnet18)"
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="override the recipes' training (and fine-tuning) epochs, e.g. 1 for a smoke run",
    )
    parser.add_argument(
        "--stages", default=",".join(STAGES), help=f"how far to go: a prefix of {','.join(STAGES)} (default: all)"
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a model misses its accuracy target")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)

    from edgecnn.errors import EdgeCnnError

    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    if stages != list(STAGES[: len(stages)]) or not stages:
        parser.error(f"--stages must be a prefix of {','.join(STAGES)}, got '{args.stages}'")
    args.out.mkdir(parents=True, exist_ok=True)
    progress = not args.quiet
    runs = []
    try:
        for m in [m.strip() for m in args.models.split(",") if m.strip()]:
            run = evaluate_step(train_step(m, args.out, epochs=args.epochs, progress=progress), args.out)
            if "compress" in stages:
                run = compress_step(run, args.out, epochs=args.epochs, progress=progress)
            if "deploy" in stages:
                run = deploy_step(run, args.out)
            if "check" in stages:
                run = check_step(run, args.out, progress=progress)
            runs.append(run)
    except EdgeCnnError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    summary = report_step(runs, args.out)
    problems = [f"{m} missed its accuracy target" for m, r in summary["models"].items() if r["target_met"] is False]
    problems += [
        f"{m}'s bundle failed verification"
        for m, r in summary["models"].items()
        if r.get("deploy") and not r["deploy"]["verify_ok"]
    ]
    problems += [
        f"{m}'s gate: {r['check']['verdict']}"
        for m, r in summary["models"].items()
        if r.get("check") and r["check"]["verdict"] != "pass"
    ]
    if problems and args.strict:
        print(f"Error: {'; '.join(problems)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
