"""``edgecnn check --host``: the original and the candidate run on the device (:mod:`edgecnn.ondevice`), and
what comes back - the logits of every held-out image and the interleaved latency blocks - goes through the
same statistics, thresholds and report as a local check (:mod:`edgecnn.check.gate` records it).

Latency measured while the device's power settings changed (nvpmodel mode, jetson_clocks), or against a
baseline taken under other power settings, is not comparable: those rows are inconclusive and say why.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..deploy.session import DeviceOptions
from ..ondevice import (
    device_fingerprint,
    on_device_record,
    open_device,
    start_models,
    state_after,
    threads_text,
    write_inputs,
)
from .measure import measure_pair_latency


@dataclass
class DeviceRun:
    """What the device sent back for a check, and under which state it was measured."""

    original: np.ndarray
    candidate: np.ndarray
    labels: np.ndarray
    runners: tuple[str, str]
    latency: dict | None
    state: dict
    environment: dict
    on_device: dict
    not_comparable: str | None  # why the latency rows cannot be judged (power settings changed), or None


def run_on_device(inputs, host: DeviceOptions, *, batch_size: int, threads: int | None, latency: bool, progress: bool):
    """Both models' logits on every image of the gate's ``inputs`` (its resolved artifacts, data and policy)
    and (``latency``) their interleaved timing, on the device; the state read before and after."""
    cand, orig, dataset, source, policy = inputs.cand, inputs.orig, inputs.dataset, inputs.source, inputs.policy
    session, state = open_device(host)
    with session:
        path = Path(session.local.name) / "inputs.npy"
        labels = write_inputs(dataset, path, batch_size=batch_size)
        (o, c), copies = start_models(
            session,
            [("original", orig), ("candidate", cand)],
            path,
            batch_size=batch_size,
            threads=threads or policy.latency_threads,
        )
        o_logits, c_logits = session.fetch_logits(o), session.fetch_logits(c)
        lat = measure_pair_latency(o, c, policy, data=source, progress=progress) if latency else None
        state, why = state_after(session, state)
        record = on_device_record(session, copies, [o, c])
    env = device_fingerprint(state, c.ready)
    if lat is not None:
        lat["settings"].update(device=f"{host.host} ({session.profile.name})", threads=threads_text(c))
        lat["fingerprint_key"] = env["key"]
    return DeviceRun(o_logits, c_logits, labels, (o.description, c.description), lat, state, env, record, why)
