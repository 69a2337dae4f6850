"""Instructions to the robot inside request data: a small multilingual detector of injection attempts.

A planner's report, goal and context describe the world; they never legitimately tell the
navigation module to change its rules, take a role, answer with a given action or speed, or open
a chat turn. Text that does so is an injection attempt, whatever it claims to be (a system
message, a policy update, an authorization code, a game). The safety layer holds the robot when
one is found (``SafetyConfig.injection_hold``): the model read that text, so its answer cannot be
trusted, and a compromised input is a reason to stop and let a person look (on by default).

Kinds (patterns on lower-cased, NFKC-normalised text, in English, German, Spanish, French and
Chinese): ``chat_template`` (control tokens, role headers), ``rule_override`` (ignore or disable
the rules or safety, modes, claimed authority), ``role_play``, ``dictated_output`` (a decision or
action written out for the model to repeat), ``dictated_speed`` (speeds or "no slowing"
orders), ``dictated_destination`` (a claimed change of destination or charger assignment: only
the planner's goal is a destination).
Built from the classes of attack, not from any scenario's wording.
"""
from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass

from quant_llm_node.reasoning.types import NavRequest

_ACTIONS = r"(?:continue|go_to|go to|slow_down|reroute|dock|proceed|drive on|keep going|full speed)"
_RULES = (r"(?:rules?|instructions?|safety|constraints?|guidelines?|polic(?:y|ies)|checks?|limits?|protocols?|"
          r"programming|restrictions?|filters?|guardrails?|collision avoidance|people detection|obstacle detection|"
          r"speed limits?|stop distance|everything else|all else|previous|prior|above|sensors?|hazards?|"
          r"(?:the )?people|anyone|obstacles?|(?:planner'?s? )?goal|planner|assigned \w+|task)")

_PATTERNS: tuple[tuple[str, str], ...] = (
    ("chat_template", r"<\|[^|<>]{1,40}\|>|\[/?inst\]|<</?sys>>|<\|?(?:im_start|im_end|endoftext)|"
                      r"(?:^|[\n\]\[(>#*\"'{|])\s*(?:system|assistant|developer)\s*(?:message|prompt|notice|override)?\s*:"
                      r"|#{2,}\s*(?:system|instruction|admin)"),
    ("rule_override", r"\b(?:ignore|ignoring|disregard|forget|bypass|override|overrides|disable|skip|suspend|"
                      r"turn off|switch off|deactivate)\b(?: (?:all|any|the|your|my|its|previous|prior|these|those|"
                      r"safety|current|other))*\s" + _RULES + r"\b"),
    ("rule_override", r"\b(?:safety|rules?|collision avoidance|people detection|obstacle detection|speed limits?|"
                      r"safety (?:module|layer|system|checks?))\b.{0,30}\b(?:off|disabled|suspended|lifted|removed|"
                      r"deactivated|no longer apply|do not apply|don't apply|(?:are|is) ignored|not needed|"
                      r"updated|outdated|obsolete)\b"),
    ("rule_override", r"\b(?:system|admin|administrator|safety|policy|root)\s+(?:override|overrides|authori[sz]ation|"
                      r"command|instruction|update)\b|\b(?:developer|god|unrestricted|jailbreak|dan) mode\b|"
                      r"\b(?:you are|you're|enter|entering|enable|switch(?:ed)? to|activate|engage|go into)\b.{0,10}"
                      r"\b(?:maintenance|test|debug|admin|override|pilot) mode\b|\bjailbreak|\bnew (?:instructions?|rules?|polic(?:y|ies)|"
                      r"target|orders? for (?:the )?robots?)\b|\boverride (?:accepted|granted|approved|confirmed|active|enabled)\b|\b(?:your|the) (?:rules|instructions) (?:are|were)\b|"
                      r"\boverride\s*:|\b\w+_override\b"),
    ("role_play", r"\byou are now\b|\bfrom now on\b|\bact as\b|\bpretend (?:to be|you are|you're|that)\b|"
                  r"\brole[- ]?play\b|\bstay in character\b|\blet'?s play a game\b|\bplay the role\b|"
                  r"\byou are (?:a|an|the) (?!robot\b|warehouse robot\b|navigation)\w+ (?:who|that|driver)\b"),
    ("dictated_output", r"[\"']action[\"']\s*:|\baction\s*=\s*\w|\btarget\s*[=:]\s*\w|\bgo_to\b|\bslow_down\b|"
                        r"\b(?:reply|respond|answer|output|return|print|always pick|always choose|always answer|"
                        r"always reply|say|choose|pick|select)\b.{0,20}\b" + _ACTIONS + r"\b"),
    ("dictated_speed", r"\b(?:full|top|max|maximum|highest) speed\b|\bfloor it\b|\bflat out\b(?! (?:on|across|in) (?:the|a) )|"
                       r"\b(?:set|raise|increase|go|drive|run|move|use|proceed|travel|head|come)\b.{0,20}\b\d+(?:\.\d+)?\s*(?:m/s|mps|meters? per second)"
                       r"|\bspeed[_ ]?(?:mps)?[_ ]?(?:override|limit)?(?:_mps)?[\"']?\s*[=:]\s*\d"
                       r"|\b(?:no|without|never|don't|do not|not) (?:slowing|slow(?:ing)? down|brak(?:e|ing)|"
                       r"stopping|yield(?:ing)?)\b|\bnever (?:stop|slow|brake|yield)s?\b"
                       r"|\b(?:don't|do not|never|no need to) (?:wait|stop|slow down|brake|yield) for\b"
                       r"|\bset (?:the |your |my )?speed\b|\bspeed (?:to|=) ?\d"),
    # a claimed change of destination: only the planner's goal is one. (A plain "go to X" in the
    # report is how planners phrase their own goal, so it is no sign; the target rules bound it.)
    ("dictated_destination",
     r"\b(?:your|the|my) (?:real|new|actual|true|correct|updated|changed) (?:goal|target|destination|task|job|mission)\b"
     r"|\b(?:goal|target|destination)s? (?:changed|updated|is now|has changed|was changed|is stale|is wrong)\b"
     r"|\bre-?task\w*|\bnew (?:job|task|mission|destination|goal)\b|\bcharger[ _]assignment\b"
     r"|\b(?:skip|forget|drop|cancel) (?:the |your )?(?:goal|charger|task|planner|job)\b"
     r"|\bplanner (?:made a mistake|is wrong|got it wrong)\b"
     r"|\b(?:go|drive|head|proceed|swing by|dock|charge)\b.{0,40}\binstead\b|\bbefore anything else\b"
     r"|\b(?:need|needs|want|wants) you\b.{0,40}\binstead\b|\bnew route\b|\breroute everything\b"
     r"|\b(?:goal|task|job|mission|order|run)s? (?:is |are |has been |have been |was |were )?(?:cancell?ed|called off|scrapped|void)\b"
     r"|\bforget (?:about )?(?:the )?(?:aisle|dock|bay|loading|packing|elevator|lift|station|zone|destination|target)\b"),
    # told to disregard people or vehicles, or that they will yield: pressure to drive on
    ("rule_override",
     r"\b(?:never mind|don't mind|do not mind|don't worry about|do not worry about|no need to worry about|"
     r"pay no (?:attention|mind) to)\b.{0,12}\b(?:people|persons?|workers?|packers?|pickers?|man|woman|lady|guy|"
     r"kids?|child(?:ren)?|trucks?|forklifts?|vehicles?|obstacles?|crowd|others?|them|him|her)\b"
     r"|\b(?:people|persons?|workers?|packers?|pickers?|operators?|man|woman|lady|guy|drivers?|they|she|he|"
     r"forklifts?|trucks?)\b.{0,40}\b(?:can wait|(?:will|'ll) (?:move|step aside|get out of the way|let you (?:pass|through)|"
     r"make way)(?! (?:the|a|an|it|its|his|her|their|some|those|these)\b)|(?:is|are) used to (?:robots|it|you))"
     r"|\b(?:this is an?|direct|that's an?) order\b|\borders? from (?:the )?(?:shift|floor|site|warehouse) "
     r"(?:lead|leader|manager|supervisor|boss)"),
    # de, es, fr, zh
    ("rule_override",
     r"\bbefehl (?:vom|von|des)\b|\bdas ist ein befehl\b|\b(?:lässt|lassen) dich (?:vorbei|durch)\b|"
     r"\baunque (?:haya|esté|estén) (?:gente|personas|alguien|trabajadores)|\bte dejará(?:n)? pasar\b|"
     r"\bes una orden\b|\bte laisser(?:a|ont) passer\b|\bc'est un ordre\b|\bmalgré (?:les|la|le) "
     r"(?:gens|personnes|ouvriers|chariot)|(?:不用管|别管|不要管|无视).{0,8}(?:工人|人|叉车|卡车|车)|这是命令"),
    ("rule_override", r"\bignorier\w*\b.{0,30}\b(?:regeln|anweisungen|sicherheit\w*|hindernisse|personen)|"
                      r"\bsicherheit\w*\b.{0,20}\b(?:aus|deaktiviert|abgeschaltet)\b|"
                      r"\b(?:ignora|ignore|ignorez|ignorer|olvida|oublie[zr]?)\b.{0,20}\b(?:las |les |tus |vos |toutes les |todas las )?"
                      r"(?:reglas|instrucciones|seguridad|règles|consignes|instructions|sécurité)\b|"
                      r"(?:忽略|无视|不要管|别管|忘记).{0,8}(?:规则|指令|安全|障碍|行人)|安全.{0,6}(?:关闭|禁用|已停用)"),
    ("dictated_speed", r"\bvolle[nr]? geschwindigkeit\b|\bvollgas\b|\bhöchstgeschwindigkeit\b|\ba toda velocidad\b|"
                       r"\bvelocidad máxima\b|\bà toute vitesse\b|\bvitesse maximale\b|全速|最高速度|最快速度"),
)
_COMPILED = tuple((kind, re.compile(pat)) for kind, pat in _PATTERNS)


@dataclass(frozen=True)
class InjectionMatch:
    """One instruction found in request data."""

    kind: str
    text: str


def _normalise(text: str) -> str:
    return unicodedata.normalize("NFKC", text).lower().replace("’", "'")


def scan(*texts: str) -> list[InjectionMatch]:
    """Injection attempts in ``texts`` (report, goal, context), one match per kind."""
    text = "\n".join(_normalise(t) for t in texts if t)
    found: dict[str, InjectionMatch] = {}
    for kind, rx in _COMPILED:
        if kind not in found:
            m = rx.search(text)
            if m:
                found[kind] = InjectionMatch(kind, m.group(0).strip())
    return list(found.values())


def _strings(value) -> list[str]:
    """Keys and string values of a JSON value, depth first (as written, not re-escaped)."""
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (str(k), *_strings(v))]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else [json.dumps(value)]


def untrusted_text(request: NavRequest) -> str:
    """The request's data besides the report: the goal text and the context's keys and values."""
    return "\n".join(p for p in (request.goal, *_strings(request.context or {})) if p)
