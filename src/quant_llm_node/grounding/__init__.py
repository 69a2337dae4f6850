"""Goal grounding: free-text goal -> map place id (exact id, lexical, INT8 embeddings)."""

from .config import GroundingSettings
from .embedder import Embedder
from .factory import open_place_index
from .index import GroundingResult, PlaceIndex
from .places import Place, load_places

__all__ = ["Embedder", "GroundingSettings", "GroundingResult", "Place", "PlaceIndex",
           "load_places", "open_place_index"]
