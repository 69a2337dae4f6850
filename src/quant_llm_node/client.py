"""A planner-side helper for the node's NavQuery service that never hangs.

Every call ends with a response: the node's, or a local one with ``CLIENT_TIMEOUT`` /
``SERVICE_UNAVAILABLE`` when the node died or restarted; optional retries resend it.
"""
from __future__ import annotations

import threading
import time

import rclpy

CLIENT_TIMEOUT = "CLIENT_TIMEOUT"
SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
RETRY_PAUSE_S = 0.5


class NavClient:
    """``query(request)`` with a time-out per attempt and ``retries`` more attempts."""

    def __init__(self, node, service: str = "/quant_llm_node/query", timeout_s: float = 30.0,
                 retries: int = 1, wait_s: float = 10.0):
        from quant_llm_interfaces.srv import NavQuery
        self._srv = NavQuery
        self._node = node
        self._client = node.create_client(NavQuery, service)
        self.service, self.timeout_s, self.retries, self.wait_s = service, timeout_s, retries, wait_s

    def _local(self, code: str, message: str):
        resp = self._srv.Response(success=False, error_code=code, error_message=message)
        return resp

    def _wait(self, future, timeout: float) -> bool:
        if self._node.executor is None:  # nobody spins this node: spin it here
            rclpy.spin_until_future_complete(self._node, future, timeout_sec=timeout)
            return future.done()
        done = threading.Event()
        future.add_done_callback(lambda _f: done.set())
        return done.wait(timeout)

    def query(self, request):
        """The node's response, or a local error response; never blocks past the limits."""
        last = self._local(SERVICE_UNAVAILABLE, f"{self.service} not available")
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(RETRY_PAUSE_S)
            if not self._client.wait_for_service(timeout_sec=self.wait_s):
                last = self._local(SERVICE_UNAVAILABLE, f"{self.service} not available after {self.wait_s} s")
                continue
            future = self._client.call_async(request)
            if self._wait(future, self.timeout_s) and future.result() is not None:
                return future.result()
            self._client.remove_pending_request(future)
            last = self._local(CLIENT_TIMEOUT, f"no answer from {self.service} within {self.timeout_s} s")
        return last

    def destroy(self) -> None:
        self._node.destroy_client(self._client)
