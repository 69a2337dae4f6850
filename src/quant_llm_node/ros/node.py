"""The lifecycle node: parameters, servers and diagnostics around the core service.

No inference logic lives here; requests go to NavigationService, whose single worker
thread owns the model. Callbacks only convert messages, so the executor never blocks.
Servers exist in every state and answer NODE_INACTIVE unless the node is active,
so a planner gets a clear error instead of a wait_for_service time-out.
"""
from __future__ import annotations

import socket
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.lifecycle import State, TransitionCallbackReturn
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.task import Future

from quant_llm_interfaces.action import Reason
from quant_llm_interfaces.msg import QueryRequest, QueryResult
from quant_llm_interfaces.srv import NavQuery

from quant_llm_node.config import Config, ConfigError, NODE_NAME, config_from_flat, iter_settings
from quant_llm_node.reasoning import errors as E
from quant_llm_node.reasoning.types import NavResponse
from quant_llm_node.ros import diagnostics as diag
from quant_llm_node.ros.conversions import fill_response, request_to_raw
from quant_llm_node.deploy import ProfileError
from quant_llm_node.serving.components import apply_profile, grounder_factory, memory_check
from quant_llm_node.serving.service import ConfigureError, NavigationService

_PARAM_TYPES = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
                float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING,
                list: ParameterType.PARAMETER_STRING_ARRAY}


# Reliable, with room for a burst of planners: a shallow history can overwrite unacknowledged
# responses when many clients call at once.
SERVICE_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                         history=HistoryPolicy.KEEP_LAST)


def _noop(_future: Future) -> None:
    pass


class QuantLlmNode(LifecycleNode):
    """configure: load the model; activate: serve; deactivate: refuse; cleanup: free."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any):
        super().__init__(node_name, **kwargs)
        self._declare_settings()
        self.lifecycle_state = "unconfigured"
        self.service: NavigationService | None = None
        self.cfg: Config | None = None
        self.configure_error = ""
        self._serve_group = ReentrantCallbackGroup()
        self._diag_group = MutuallyExclusiveCallbackGroup()
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._query_srv = self.create_service(NavQuery, "~/query", self._on_query,
                                              qos_profile=SERVICE_QOS,
                                              callback_group=self._serve_group)
        self._result_pub = self.create_publisher(QueryResult, "~/query_out", 50)
        self._query_sub = self.create_subscription(QueryRequest, "~/query_in", self._on_query_in,
                                                   50, callback_group=self._serve_group)
        self._goal_jobs: dict[bytes, Any] = {}
        self._reason_server = ActionServer(
            self, Reason, "~/reason", execute_callback=self._execute_reason,
            goal_callback=lambda _goal: GoalResponse.ACCEPT,
            cancel_callback=self._cancel_reason, callback_group=self._serve_group)
        period = float(self.get_parameter("node.diagnostics_period_s").value)
        self._diag_timer = self.create_timer(period, self.publish_diagnostics,
                                             callback_group=self._diag_group)
        self._hardware_id = self.get_parameter("node.hardware_id").value or socket.gethostname()
        self._autostart_timer = None
        if self.get_parameter("node.autostart").value:
            self._autostart_timer = self.create_timer(0.0, self._autostart,
                                                      callback_group=MutuallyExclusiveCallbackGroup())

    # ---- parameters ------------------------------------------------------------------------
    def _declare_settings(self) -> None:
        self.param_errors: list[str] = []
        defaults = Config().flat()
        for name, _, f in iter_settings():
            meta = f.metadata
            default = defaults[name]
            desc = ParameterDescriptor(description=meta["description"],
                                       type=_PARAM_TYPES[type(default)])
            if meta.get("choices"):
                desc.additional_constraints = "one of: " + ", ".join(meta["choices"])
            if meta.get("lo") is not None and meta.get("hi") is not None:
                if isinstance(default, int) and not isinstance(default, bool):
                    desc.integer_range = [IntegerRange(from_value=int(meta["lo"]),
                                                       to_value=int(meta["hi"]), step=0)]
                elif isinstance(default, float):
                    desc.floating_point_range = [FloatingPointRange(
                        from_value=float(meta["lo"]), to_value=float(meta["hi"]), step=0.0)]
            try:
                self.declare_parameter(name, default, desc)
            except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
                # a bad value in the params file must not take the node down: keep the
                # default and refuse to configure, saying why
                self.declare_parameter(name, default, desc, ignore_override=True)
                self.param_errors.append(f"{name}: {exc}")

    def read_config(self) -> Config:
        """Current parameter values as a validated Config (raises ConfigError)."""
        return config_from_flat({name: self.get_parameter(name).value
                                 for name, _, _ in iter_settings()})

    # ---- lifecycle -------------------------------------------------------------------------
    def _autostart(self) -> None:
        self._autostart_timer.cancel()
        self.destroy_timer(self._autostart_timer)
        if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        self.configure_error = ""
        try:
            if self.param_errors:
                raise ConfigError("invalid parameters: " + "; ".join(self.param_errors))
            cfg, profile = apply_profile(self.read_config())
            service = NavigationService(cfg, grounder_factory, memory_check(cfg, profile))
            report = service.configure()
        except (ConfigError, ConfigureError, ProfileError, OSError, ValueError) as exc:
            code = getattr(exc, "code", "CONFIG_INVALID")
            self.configure_error = f"{code}: {exc}"
            self.get_logger().error(f"configure failed: {self.configure_error}")
            self.publish_diagnostics()
            return TransitionCallbackReturn.FAILURE
        self.cfg, self.service = cfg, service
        self.lifecycle_state = "inactive"
        self.get_logger().info(
            f"model {report.model_id} loaded in {report.load_ms:.0f} ms ({report.backend}); "
            f"static prefix {service.prefix_ms.get('prefix_tokens')} tokens warmed in "
            f"{service.prefix_ms['cold']:.0f} ms")
        self.publish_diagnostics()
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        self.service.start()
        self.lifecycle_state = "active"
        self.get_logger().info("active: serving ~/query and ~/query_in")
        return super().on_activate(state)

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self.lifecycle_state = "inactive"
        refused = self.service.stop()
        self.get_logger().info(f"inactive: {refused} queued requests answered {E.SHUTTING_DOWN}")
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._release()
        self.lifecycle_state = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        if self.service is not None and self.lifecycle_state == "active":
            self.service.stop()
        self._release()
        self.lifecycle_state = "finalized"
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: State) -> TransitionCallbackReturn:
        self._release()
        self.lifecycle_state = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def _release(self) -> None:
        if self.service is not None:
            self.service.cleanup()
            self.service = None

    # ---- serving ---------------------------------------------------------------------------
    def _submit(self, raw: dict, on_done, on_partial=None):
        """Hand a request to the core; answers NODE_INACTIVE unless active. Returns the Job."""
        service = self.service
        if service is None or self.lifecycle_state != "active":
            rid = raw.get("request_id")
            on_done(NavResponse.rejected(rid if isinstance(rid, str) else "", E.NODE_INACTIVE,
                                         f"the node is {self.lifecycle_state}, not active"))
            return None
        return service.submit(raw, on_done, on_partial)

    async def _on_query(self, request: NavQuery.Request, response: NavQuery.Response):
        future: Future = Future(executor=self.executor)
        future.add_done_callback(_noop)  # wakes the executor when the worker answers
        try:
            self._submit(request_to_raw(request), future.set_result)
        except Exception as exc:  # conversion bugs must still answer
            future.set_result(NavResponse.rejected("", E.INTERNAL_ERROR, repr(exc)))
        return fill_response(response, await future)

    def _on_query_in(self, msg: QueryRequest) -> None:
        def publish(resp: NavResponse) -> None:
            if not resp.request_id and isinstance(msg.request_id, str):
                resp.request_id = msg.request_id[:128]
            self._result_pub.publish(fill_response(QueryResult(), resp))
        try:
            self._submit(request_to_raw(msg), publish)
        except Exception as exc:
            publish(NavResponse.rejected("", E.INTERNAL_ERROR, repr(exc)))

    async def _execute_reason(self, goal_handle) -> Reason.Result:
        """Streaming variant: partial text as feedback, cancellable."""
        future: Future = Future(executor=self.executor)
        future.add_done_callback(_noop)
        key = bytes(goal_handle.goal_id.uuid)

        def on_partial(text: str, n_tokens: int) -> None:
            goal_handle.publish_feedback(Reason.Feedback(partial_text=text, tokens_so_far=n_tokens))

        try:
            job = self._submit(request_to_raw(goal_handle.request), future.set_result, on_partial)
            self._goal_jobs[key] = job
            if job is not None and goal_handle.is_cancel_requested:
                job.cancel.set()
            resp = await future
        finally:
            self._goal_jobs.pop(key, None)
        result = fill_response(Reason.Result(), resp, with_request_id=False)
        if goal_handle.is_cancel_requested:
            goal_handle.canceled()
        else:
            goal_handle.succeed()
        return result

    def _cancel_reason(self, goal_handle) -> CancelResponse:
        job = self._goal_jobs.get(bytes(goal_handle.goal_id.uuid))
        if job is not None:
            job.cancel.set()
        return CancelResponse.ACCEPT

    # ---- diagnostics -----------------------------------------------------------------------
    def publish_diagnostics(self) -> None:
        prefix = self.get_fully_qualified_name().lstrip("/")
        service = self.service
        report = service.report if service else None
        requested = (report.n_gpu_layers_requested if report is not None
                     else int(self.get_parameter("engine.n_gpu_layers").value))
        specs = [diag.model_status(prefix, self.lifecycle_state, report, self.configure_error, requested)]
        if service is not None:
            snap = service.metrics.snapshot()
            specs.append(diag.latency_status(prefix, snap, service.roofline(snap)))
            specs.append(diag.queue_status(prefix, service.scheduler.depth(), self.cfg.serving.queue_size,
                                           service.scheduler.accepting,
                                           snap["errors"].get(E.OVERLOADED, 0)))
            specs.append(diag.grounding_status(prefix, service.grounding_status))
        self._diag_pub.publish(diag.to_message(self.get_clock().now().to_msg(), self._hardware_id, specs))
