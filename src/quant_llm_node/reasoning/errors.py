"""Stable error codes carried in responses (``error_code``), one place for all of them."""
from quant_llm_node.errors import CodedError

# Request rejected before it reached the model (success = false).
EMPTY_QUERY = "EMPTY_QUERY"
QUERY_TOO_LONG = "QUERY_TOO_LONG"
INVALID_TEXT = "INVALID_TEXT"              # control characters, invalid UTF-8, lone surrogates
INVALID_REQUEST_ID = "INVALID_REQUEST_ID"
INVALID_GOAL = "INVALID_GOAL"
INVALID_STATE = "INVALID_STATE"            # negative / non-finite / out-of-range numbers
INVALID_CONTEXT_JSON = "INVALID_CONTEXT_JSON"
INVALID_DEADLINE = "INVALID_DEADLINE"
INVALID_PRIORITY = "INVALID_PRIORITY"
UNKNOWN_PLACE = "UNKNOWN_PLACE"            # goal could not be grounded to a map place
AMBIGUOUS_PLACE = "AMBIGUOUS_PLACE"
OVERLOADED = "OVERLOADED"                  # queue full
NODE_INACTIVE = "NODE_INACTIVE"            # lifecycle state is not active
SHUTTING_DOWN = "SHUTTING_DOWN"            # deactivated / cleaned up while queued
CANCELLED = "CANCELLED"                    # the client cancelled (action goals)
INTERNAL_ERROR = "INTERNAL_ERROR"

# The decision is a fallback (success = true, decision.source = fallback); the code says why.
DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
MODEL_OUTPUT_INVALID = "MODEL_OUTPUT_INVALID"
MODEL_UNAVAILABLE = "MODEL_UNAVAILABLE"
CONTEXT_OVERFLOW = "CONTEXT_OVERFLOW"      # prompt longer than the context window


class RequestError(CodedError, ValueError):
    """A request that cannot be served; ``code`` is one of the codes above."""
