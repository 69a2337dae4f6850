"""Warehouse vocabulary the lexical stage normalizes before matching.

``SYNONYMS`` maps what people say to the words the map uses. It is applied to
goal words AND to place names/descriptions/aliases (both sides meet on the
same canonical words), longest phrase first, before stop words and numbers
are handled. Keys and values are plain English; they are stemmed when the
table is compiled, so plurals and -ing forms match too ("chargers",
"lorries" needs its own key because the stemmer is tiny).

Keep it small and generic: words a warehouse worker uses for the same thing,
not paraphrases of particular goals. Nothing here names a place id.

``ORDINALS``: "first".."twentieth" are numbers ("the second dock" = dock 2);
"1st", "2nd", "3rd", "4th" are handled in ``text.words``.

``NUMBER_MARKERS``: "number", "no", "nr", "num" directly before a number are
dropped ("aisle number 7" = "aisle 7"); elsewhere they stay words.
"""

from __future__ import annotations

SYNONYMS: dict[str, str] = {
    # charging docks
    "charger": "charging dock",
    "recharger": "charging dock",
    "charging station": "charging dock",
    "charging point": "charging dock",
    "charge point": "charging dock",
    "charging spot": "charging dock",
    "charging pad": "charging dock",
    "charging bay": "charging dock",
    "recharge station": "charging dock",
    "recharge point": "charging dock",
    "recharge spot": "charging dock",
    "recharging station": "charging dock",
    "recharge": "charging",
    "recharging": "charging",
    "battery station": "charging dock",
    # cold storage
    "fridge": "cold storage",
    "fridges": "cold storage",
    "freezer": "cold storage",
    "refrigerator": "cold storage",
    "refrigerated": "cold storage",
    "chilled": "cold storage",
    "chiller": "cold storage",
    "cooler": "cold storage",
    "cold room": "cold storage",
    "cold store": "cold storage",
    # vehicles and lifting
    "lorry": "truck",
    "lorries": "truck",
    "hgv": "truck",
    "fork lift": "forklift",
    "fork truck": "forklift",
    "forklift truck": "forklift",
    "lift": "elevator",
    "hoist": "elevator",
    "cargo": "freight",
    # shelving and stock
    "rack": "shelving",
    "racking": "shelving",
    "shelf": "shelving",
    "shelves": "shelving",
    "canned goods": "cans",
    "canned food": "cans",
    "tinned goods": "cans",
    "tinned food": "cans",
    "canned": "cans",
    "tinned": "cans",
    "tins": "cans",
    "tall": "high",
    "high bay": "high shelving",
    "broad": "wide",
    # areas
    "loading dock": "loading bay",
    "shipping dock": "loading bay",
    "dock door": "loading bay door",
    "goods out": "shipping",
    "dispatch": "shipping",
    "outbound": "shipping",
    "packaging": "packing",
    "wrapping": "packing",
    "box up": "pack",
    "get boxed": "get packed",
    "are boxed": "are packed",
    "packer": "packing",
    "corridor": "aisle",
    "lane": "aisle",
}

ORDINALS: dict[str, int] = {
    "first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6,
    "seventh": 7, "eighth": 8, "ninth": 9, "tenth": 10, "eleventh": 11, "twelfth": 12,
    "thirteenth": 13, "fourteenth": 14, "fifteenth": 15, "sixteenth": 16,
    "seventeenth": 17, "eighteenth": 18, "nineteenth": 19, "twentieth": 20,
}

NUMBER_MARKERS = frozenset({"number", "no", "nr", "num"})

# Nouns that say "a place" without saying which kind ("the shipping area"):
# never a place kind (see lexical.LexicalMatcher.kinds).
GENERIC_PLACE_WORDS = frozenset({"area", "zone", "section", "region", "place", "spot",
                                 "location", "point", "side", "part"})
