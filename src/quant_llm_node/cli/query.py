"""`quant-llm-query "text" [--goal …] [--state key=value …]`: ask the node and print the answer."""
from __future__ import annotations

import argparse
import json
import sys
import time


def parse_state(items: list[str]) -> dict:
    """``speed_mps=1.2 people_distances_m=1.5,3 zone=aisle_3`` -> dict of typed values."""
    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--state expects key=value, got '{item}'")
        if key == "people_distances_m":
            out[key] = [float(v) for v in value.split(",") if v.strip()]
        elif key == "zone":
            out[key] = value
        elif key in ("x", "y", "theta", "speed_mps", "battery_pct", "obstacle_distance_m"):
            out[key] = float(value)
        else:
            raise ValueError(f"unknown state key '{key}'")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="quant-llm-query", description=__doc__)
    parser.add_argument("query")
    parser.add_argument("--goal", default="")
    parser.add_argument("--state", nargs="*", default=[], metavar="KEY=VALUE",
                        help="x y theta speed_mps battery_pct obstacle_distance_m "
                             "people_distances_m=1.5,3 zone")
    parser.add_argument("--context", default="", help="context JSON object")
    parser.add_argument("--priority", type=int, default=0)
    parser.add_argument("--deadline-ms", type=int, default=0)
    parser.add_argument("--service", default="/quant_llm_node/query")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait in all")
    parser.add_argument("--json", action="store_true", help="print the whole response as JSON")
    args, ros_args = parser.parse_known_args(argv)
    try:
        state = parse_state(args.state)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    import rclpy
    from quant_llm_interfaces.srv import NavQuery
    from quant_llm_node.ros.conversions import build_request, response_to_dict

    rclpy.init(args=ros_args)
    node = rclpy.create_node("quant_llm_query")
    try:
        client = node.create_client(NavQuery, args.service)
        t0 = time.monotonic()
        if not client.wait_for_service(timeout_sec=args.timeout):
            print(f"error: service {args.service} not available after {args.timeout:.0f} s", file=sys.stderr)
            return 3
        req = build_request(NavQuery, args.query, args.goal, state, args.context,
                            args.priority, args.deadline_ms)
        t_call = time.monotonic()
        future = client.call_async(req)
        rclpy.spin_until_future_complete(node, future, timeout_sec=max(1.0, args.timeout - (t_call - t0)))
        if not future.done():
            print("error: no answer before the time-out", file=sys.stderr)
            return 4
        rtt_ms = (time.monotonic() - t_call) * 1e3
        out = response_to_dict(future.result())
        out["round_trip_ms"] = round(rtt_ms, 2)
        if args.json:
            print(json.dumps(out, indent=2))
        else:
            d = out["decision"]
            if out["success"]:
                print(f"decision: {d['action']}  speed<={d['speed_limit_mps']} m/s  "
                      f"target={d['target_place_id'] or '-'}  source={d['source']}")
                print(f"reason:   {d['reason']}")
                if d["rules_fired"]:
                    print(f"rules:    {', '.join(d['rules_fired'])}")
            if out["error_code"]:
                print(f"{'note' if out['success'] else 'error'}: {out['error_code']}: {out['error_message']}")
            lat = out["latency_ms"]
            print("latency:  " + "  ".join(f"{k[:-3]}={v:.1f}" for k, v in lat.items())
                  + f"  round_trip={rtt_ms:.1f} ms")
            print(f"tokens:   prompt={out['prompt_tokens']} completion={out['completion_tokens']}  "
                  f"model={out['model_id']}")
        return 0 if out["success"] else 1
    finally:
        node.destroy_node()
        rclpy.shutdown()


if __name__ == "__main__":
    sys.exit(main())
