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
from rcl_interfaces.msg import SetParametersResult
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.lifecycle import State, TransitionCallbackReturn
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.task import Future

from quant_llm_interfaces.action import Reason
from quant_llm_interfaces.msg import QueryRequest, QueryResult, QueryStats
from quant_llm_interfaces.srv import NavQuery

from quant_llm_node.config import Config, ConfigError, NODE_NAME, config_from_flat, iter_settings, loosened
from quant_llm_node.models.registry import resolve_model_path
from quant_llm_node.reasoning import errors as E
from quant_llm_node.reasoning.types import NavResponse
from quant_llm_node.reasoning.validation import safe_request_id
from quant_llm_node.ros import diagnostics as diag
from quant_llm_node.ros.conversions import fill_response, fill_stats, request_to_raw, ros_text
from quant_llm_node.ros.parameters import descriptor, plan_change
from quant_llm_node.serving.assembly import ConfigureError, assemble
from quant_llm_node.serving.model_holder import ModelHolder
from quant_llm_node.serving.model_swap import ModelSwapper, SwapStatus
from quant_llm_node.serving.pipeline import GroundingStatus
from quant_llm_node.serving.service import NavigationService

# Requests are never overwritten before the executor takes them: a burst from many planners is
# kept whole (reliable, keep all) and every request is answered, with a decision or OVERLOADED.
SERVICE_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         history=HistoryPolicy.KEEP_ALL)
INTAKE_QOS = SERVICE_QOS
# Answers on ~/query_out: deep enough for a burst's worth of answers to a slow reader.
RESULT_QOS = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE,
                        history=HistoryPolicy.KEEP_LAST)


def _noop(_future: Future) -> None:
    pass


class QuantLlmNode(LifecycleNode):
    """configure: load the model; activate: serve; deactivate: refuse; cleanup: free."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any):
        super().__init__(node_name, **kwargs)
        self._declare_settings()
        # values the launch loosened against the shipped defaults (WARN in diagnostics)
        self.launch_loosened = loosened(Config().flat(), self._values())
        self.service: NavigationService | None = None  # exists from configure to cleanup
        self.holder: ModelHolder | None = None           # the serving model and its settings
        self.configure_error = ""
        self._serve_group = ReentrantCallbackGroup()
        self._diag_group = MutuallyExclusiveCallbackGroup()
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._query_srv = self.create_service(NavQuery, "~/query", self._on_query,
                                              qos_profile=SERVICE_QOS,
                                              callback_group=self._serve_group)
        self._result_pub = self.create_publisher(QueryResult, "~/query_out", RESULT_QOS)
        self._stats_pub = self.create_publisher(QueryStats, "~/stats", RESULT_QOS)
        self._query_sub = self.create_subscription(QueryRequest, "~/query_in", self._on_query_in,
                                                   INTAKE_QOS, callback_group=self._serve_group)
        self._goal_jobs: dict[bytes, Any] = {}
        self.publish_failures = 0  # publishes that raised (never let out of a callback or worker)
        self._reason_server = ActionServer(
            self, Reason, "~/reason", execute_callback=self._execute_reason,
            goal_callback=lambda _goal: GoalResponse.ACCEPT,
            cancel_callback=self._cancel_reason, callback_group=self._serve_group,
            goal_service_qos_profile=SERVICE_QOS, result_service_qos_profile=SERVICE_QOS)
        self._swapper: ModelSwapper | None = None
        self._diag_timer = None
        self._start_diagnostics_timer(float(self.get_parameter("node.diagnostics_period_s").value))
        self.add_on_set_parameters_callback(self._on_set_parameters)
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
            default = defaults[name]
            desc = descriptor(name, default, f.metadata)
            try:
                self.declare_parameter(name, default, desc)
            except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
                # a bad value in the params file must not take the node down: keep the
                # default and refuse to configure, saying why
                self.declare_parameter(name, default, desc, ignore_override=True)
                self.param_errors.append(f"{name}: {exc}")

    def _values(self) -> dict[str, Any]:
        return {name: self.get_parameter(name).value for name, _, _ in iter_settings()}

    def read_config(self) -> Config:
        """Current parameter values as a validated Config (raises ConfigError)."""
        return config_from_flat(self._values())

    def _on_set_parameters(self, params) -> SetParametersResult:
        """Validate a change as configure would; apply live ones now, swap the model for
        model.*, refuse the ones that need a reload while configured (saying so)."""
        changes = {p.name: p.value for p in params}
        service = self.service
        plan = plan_change(self._values(), changes, service.cfg if service else None,
                           swapping=self._swapper is not None and self._swapper.busy)
        if not plan.ok:
            return SetParametersResult(successful=False, reason=plan.reason)
        if plan.swap is not None:
            try:
                resolve_model_path(plan.swap.model.name)
            except KeyError as exc:
                return SetParametersResult(successful=False, reason=str(exc).strip("'\""))
        self.param_errors = [e for e in self.param_errors if e.split(":", 1)[0] not in changes]
        if plan.live is not None:
            service.apply_settings(plan.live)
            if "node.diagnostics_period_s" in changes:
                self._start_diagnostics_timer(plan.live.node.diagnostics_period_s)
            self.get_logger().info(f"live parameters applied: {', '.join(sorted(changes))}")
        if plan.swap is not None:
            self._swapper.start(plan.swap)
            self.get_logger().info(f"model swap to {plan.swap.model.name} started")
        return SetParametersResult(successful=True)

    def _start_diagnostics_timer(self, period_s: float) -> None:
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
        self._diag_timer = self.create_timer(period_s, self.publish_diagnostics,
                                             callback_group=self._diag_group)

    # ---- lifecycle -------------------------------------------------------------------------
    @property
    def lifecycle_state(self) -> str:
        """The label of rclpy's lifecycle state machine (the one owner of the state)."""
        return self._state_machine.current_state[1]

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
            assembly = assemble(self.read_config())
        except Exception as exc:  # noqa: BLE001 — a failed configure says why, and the node lives
            code = getattr(exc, "code", "CONFIG_INVALID" if isinstance(exc, ConfigError) else "INTERNAL_ERROR")
            self.configure_error = ros_text(f"{code}: {exc}")
            self.get_logger().error(f"configure failed: {self.configure_error}")
            self.publish_diagnostics()
            return TransitionCallbackReturn.FAILURE
        self.holder = ModelHolder.of(assembly)
        self.service = NavigationService(self.holder)
        self._swapper = ModelSwapper(self.holder, self._on_swap)
        report = assembly.report
        self.get_logger().info(
            f"model {report.model_id} loaded in {report.load_ms:.0f} ms ({report.backend}); "
            f"static prefix {assembly.prefix_tokens} tokens warmed in "
            f"{assembly.prefix_cold_ms:.0f} ms")
        self.publish_diagnostics()
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        self.service.start()
        self.get_logger().info("active: serving ~/query and ~/query_in")
        return super().on_activate(state)

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        refused = self.service.stop()
        self.get_logger().info(f"inactive: {refused} queued requests answered {E.SHUTTING_DOWN}")
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self.release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self.release()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: State) -> TransitionCallbackReturn:
        self.release()
        return TransitionCallbackReturn.SUCCESS

    def _on_swap(self, status: SwapStatus) -> None:
        self.get_logger().info(f"model swap: {status.phase.value} (serving {status.serving or 'no model'})")

    def release(self) -> None:
        """Stop serving (queued requests get SHUTTING_DOWN) and free the models."""
        if self._swapper is not None:
            self._swapper.join()  # a swap in flight finishes before its models are freed
            self._swapper = None
        if self.service is not None:
            self.service.stop()  # idempotent: nothing queued once deactivated
            self.service = None
        if self.holder is not None:
            self.holder.close()
            self.holder = None

    # ---- serving ---------------------------------------------------------------------------
    def _submit(self, raw: dict, reply, on_partial=None):
        """Hand a request to the core, which answers NODE_INACTIVE unless its worker is
        serving (activate starts it, deactivate stops it). Every answer also goes to ~/stats.
        Returns the Job."""
        def on_done(resp: NavResponse) -> None:
            reply(resp)
            self._publish(self._stats_pub, lambda: fill_stats(
                QueryStats(), resp, self.get_clock().now().to_msg()))

        service = self.service
        if service is None:  # no model loaded: the answer still carries a usable request id
            on_done(NavResponse.rejected(safe_request_id(raw), E.NODE_INACTIVE,
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
            self._publish(self._result_pub, lambda: fill_response(QueryResult(), resp))
        try:
            self._submit(request_to_raw(msg), publish)
        except Exception as exc:
            publish(NavResponse.rejected("", E.INTERNAL_ERROR, repr(exc)))

    async def _execute_reason(self, goal_handle) -> Reason.Result:
        """Streaming variant: partial text as feedback, cancellable."""
        future: Future = Future(executor=self.executor)
        future.add_done_callback(_noop)
        key = bytes(goal_handle.goal_id.uuid)

        def on_partial(view, text: str, n_tokens: int) -> None:
            # only the safety-checked action is offered as something to act on
            self._publish(goal_handle, lambda: Reason.Feedback(
                checked_action=view.action if view else "", checked_source=view.source if view else "",
                unchecked_partial_text=ros_text(text), tokens_so_far=n_tokens), "publish_feedback")

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
        service, holder = self.service, self.holder
        assembly = holder.assembly if holder is not None else None
        report = assembly.report if assembly else None
        requested = (report.n_gpu_layers_requested if report is not None
                     else int(self.get_parameter("engine.n_gpu_layers").value))
        state = self.lifecycle_state
        swap = self._swapper.status if self._swapper is not None else None
        specs = [diag.model_status(prefix, state, report, self.configure_error, requested, swap)]
        # every status in every state, at the level the state deserves
        if service is not None:
            status = service.status()
            specs.append(diag.latency_status(prefix, status.metrics, status.roofline))
            specs.append(diag.queue_status(prefix, status.queue_depth, status.queue_capacity,
                                           status.accepting,
                                           status.metrics["errors"].get(E.OVERLOADED, 0),
                                           running=status.running, slots=status.slots))
            specs.append(diag.grounding_status(prefix, assembly.grounding))
            if status.remote is not None:
                specs.append(diag.remote_status(prefix, status.remote))
        else:
            specs.append(diag.latency_status(prefix, None, lifecycle=state))
            specs.append(diag.queue_status(prefix, 0, int(self.get_parameter("serving.queue_size").value),
                                           False, 0, state))
            specs.append(diag.grounding_status(prefix, GroundingStatus(
                enabled=bool(self.get_parameter("grounding.enabled").value))))
        specs[1].values["publish_failures"] = self.publish_failures
        specs.append(diag.settings_status(prefix, service.cfg if service else None, state,
                                          self.launch_loosened))
        self._publish(self._diag_pub, lambda: diag.to_message(
            self.get_clock().now().to_msg(), self._hardware_id, specs))

    def _publish(self, target, build, method: str = "publish") -> None:
        """Build a message and publish it; a failure is logged and counted (diagnostics), never
        raised into a callback or the inference worker."""
        try:
            getattr(target, method)(build())
        except Exception as exc:  # noqa: BLE001
            self.publish_failures += 1
            self.get_logger().error(ros_text(f"publish failed ({type(exc).__name__}): {exc}"))
