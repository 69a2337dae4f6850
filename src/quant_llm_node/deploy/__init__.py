"""Deployment: device profiles (config/profiles/*.yaml) and the memory budget check.

Configure-time use::

    profile = load_profile(cfg.node.device_profile)          # ProfileError if bad
    verdict = check_profile_memory(gguf_info, profile)        # uses /proc/meminfo
    if not verdict.ok: fail configure with verdict.message    # reason + advice
"""
from quant_llm_node.deploy.memory_budget import (
    BudgetVerdict, MemoryEstimate, available_memory_bytes, check_budget, check_profile_memory,
    estimate_memory)
from quant_llm_node.deploy.profiles import (
    DeviceProfile, ProfileError, list_profiles, load_profile)

__all__ = [
    "BudgetVerdict", "DeviceProfile", "MemoryEstimate", "ProfileError", "available_memory_bytes",
    "check_budget", "check_profile_memory", "estimate_memory", "list_profiles", "load_profile",
]
