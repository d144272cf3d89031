from __future__ import annotations

import click

from ._common import print_table, write_json


@click.command("devices")
@click.argument("names", nargs=-1)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the profiles as JSON.")
def command(names, json_path):
    """List the device profiles deploy, build and doctor target (optionally only NAMES).

    Profiles live in devices/*.yaml (add your own folder with EDGECNN_DEVICES=DIR).
    """
    from ..devices import list_profiles, load_profile

    profiles = [load_profile(n) for n in names] if names else list_profiles()
    rows = []
    for p in profiles:
        sw = p.software_for(p.trt_default) if p.tensorrt else (p.software[0] if p.software else {})
        rows.append(
            [
                p.name,
                p.target,
                p.runtime,
                p.trt_range_text + (f" ({p.trt_default})" if p.tensorrt else ""),
                p.jetpack_text,
                (sw or {}).get("cuda", "-"),
                ", ".join(p.compute_capability) or "-",
                p.dla_cores or "-",
                "/".join(p.precisions),
                f"{p.memory_gb:g} GB",
                f"{p.default_workspace_gb:g} GB" if p.default_workspace_gb else "-",
            ]
        )
    print_table(
        rows,
        [
            "device",
            "target",
            "runtime",
            "TensorRT (default)",
            "JetPack",
            "CUDA",
            "compute cap.",
            "DLA",
            "precisions",
            "memory",
            "workspace",
        ],
        title="edgecnn device profiles",
    )
    if names:
        for p in profiles:
            click.echo(f"\n{p.name}: {p.description}")
            for n in p.notes:
                click.echo(f"  - {n}")
            for r in p.software:
                click.echo("  software: " + ", ".join(f"{k} {v}" for k, v in r.items()))
    write_json(json_path, [p.summary() for p in profiles])
