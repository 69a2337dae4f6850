"""The robots' own view after a run: their ``remote`` diagnostic statuses (level, breaker, error
counts by kind, local share) read from /diagnostics, to say why a hybrid request went local."""
from __future__ import annotations

import time
from typing import Any

WAIT_S = 5.0       # diagnostics come at 1 Hz; a few periods to hear from every robot
POLL_S = 0.2
KEEP = ("breaker_state", "breaker_opens", "answered_remote", "answered_local", "local_share",
        "remote_latency_p50_ms", "remote_latency_p95_ms", "last_error")


def remote_statuses(client, node_names: list[str], wait_s: float = WAIT_S) -> dict[str, dict[str, Any]]:
    """``{node name: {level, message, errors.* and KEEP keys}}`` of each robot's remote status
    (``client``: a serve BenchClient); robots not heard from within ``wait_s`` are missing."""
    from diagnostic_msgs.msg import DiagnosticArray
    wanted = {f"{n}: remote": n for n in node_names}
    found: dict[str, dict[str, Any]] = {}

    def on_diag(msg: DiagnosticArray) -> None:
        for st in msg.status:
            name = wanted.get(st.name)
            if name is not None:
                kv = {kv.key: kv.value for kv in st.values}
                found[name] = {"level": int.from_bytes(st.level, "little") if isinstance(st.level, bytes)
                               else int(st.level), "message": st.message,
                               **{k: v for k, v in kv.items() if k in KEEP or k.startswith("errors.")}}

    sub = client.node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 50)
    try:
        end = time.monotonic() + wait_s
        while len(found) < len(wanted) and time.monotonic() < end:
            client._rclpy.spin_once(client.node, timeout_sec=POLL_S)
    finally:
        client.node.destroy_subscription(sub)
    return found
