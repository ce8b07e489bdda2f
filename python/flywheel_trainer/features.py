"""The feature vectors of ``contracts/features.ts``, byte for byte.

A port of ``featurize`` step by step as its doc comment states them (MurmurHash3_x86_32 over
code points, word n-grams over word hashes, char n-grams over the white-space-collapsed text,
±1 buckets, L2 normalisation, the numeric tail), so a model trained here scores the pipeline's
vectors. ``tests/fixtures/features-vectors.json`` (written by the TypeScript code) holds the
shared vectors both test suites check, as float32 bit patterns.

    >>> cfg = FeatureConfig(dims=256, char_ngrams=[])
    >>> len(featurize({"prompt": "2+2?", "response": "4", "steps": [], "rewards": {},
    ...                "logprobs": None, "token_count": 1}, cfg))
    262

Pure Python (no native hash package): vectors are a training-time cost, a few microseconds per
character; featurize a dataset once and cache it if that matters.
"""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "FeatureConfig",
    "featurize",
    "featurize_batch",
    "feature_layout",
    "feature_size",
    "text_features",
    "murmur3",
    "response_text",
    "LOGIT_EPSILON",
]

_M32 = 0xFFFFFFFF
WORD_SEED = 0x77000000
CHAR_SEED = 0x63000000
LOGIT_EPSILON = 1e-6
"""The clamp of a ``logit_rewards`` probability (``LOGIT_EPSILON`` in contracts/features.ts)."""


@dataclass(frozen=True)
class FeatureConfig:
    """The pipeline config's ``features`` block (same defaults as ``featureDefaults``)."""

    dims: int = 1024
    word_ngrams: Sequence[int] = (1, 2)
    char_ngrams: Sequence[int] = (3,)
    reward_names: Sequence[str] = field(default_factory=tuple)
    #: Rewards of ``reward_names`` taken as log(p / (1 - p)), p clamped to [1e-6, 1 - 1e-6].
    logit_rewards: Sequence[str] = field(default_factory=tuple)
    max_chars: int = 20_000

    def __post_init__(self) -> None:
        for name in self.logit_rewards:
            if name not in self.reward_names:
                raise ValueError(f'features.logitRewards names "{name}", which is not in features.rewardNames')

    @staticmethod
    def from_json(block: Mapping[str, Any] | None) -> "FeatureConfig":
        """From the pipeline config's camel-case ``features`` block (missing keys: defaults)."""
        b = dict(block or {})
        d = FeatureConfig()
        return FeatureConfig(
            dims=int(b.get("dims", d.dims)),
            word_ngrams=tuple(b.get("wordNgrams", d.word_ngrams)),
            char_ngrams=tuple(b.get("charNgrams", d.char_ngrams)),
            reward_names=tuple(b.get("rewardNames", d.reward_names)),
            logit_rewards=tuple(b.get("logitRewards", d.logit_rewards)),
            max_chars=int(b.get("maxChars", d.max_chars)),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "dims": self.dims,
            "wordNgrams": list(self.word_ngrams),
            "charNgrams": list(self.char_ngrams),
            "rewardNames": list(self.reward_names),
            "logitRewards": list(self.logit_rewards),
            "maxChars": self.max_chars,
        }


def feature_layout(config: FeatureConfig) -> list[str]:
    """Names of the numeric features after the ``dims`` buckets, in vector order."""
    return [
        "log_chars",
        "log_tokens",
        *(f"reward_logit:{n}" if n in config.logit_rewards else f"reward:{n}" for n in config.reward_names),
        "logprob_mean",
        "logprob_min",
        "logprob_std",
        "logprob_present",
    ]


def feature_size(config: FeatureConfig) -> int:
    return config.dims + len(feature_layout(config))


def response_text(rollout: Mapping[str, Any]) -> str:
    """The response, or the trajectory's step contents joined by "\\n"."""
    response = rollout.get("response")
    if response is not None:
        return response
    return "\n".join(s["content"] for s in rollout.get("steps") or [])


# ---- MurmurHash3_x86_32 over 32-bit values ---------------------------------------------------


def _mix(h: int, k: int) -> int:
    k = (k * 0xCC9E2D51) & _M32
    k = ((k << 15) | (k >> 17)) & _M32
    k = (k * 0x1B873593) & _M32
    h ^= k
    h = ((h << 13) | (h >> 19)) & _M32
    return (h * 5 + 0xE6546B64) & _M32


def _fmix(h: int) -> int:
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _M32
    return h ^ (h >> 16)


def murmur3(values: Iterable[int], seed: int) -> int:
    """MurmurHash3_x86_32 of 32-bit values as little-endian blocks, unsigned.

    >>> hex(murmur3([0x61616161], 0x9747B28C))
    '0x5a97808a'
    """
    h = seed & _M32
    n = 0
    for v in values:
        h = _mix(h, v & _M32)
        n += 1
    return _fmix(h ^ ((n * 4) & _M32))


# ---- character classes (JS semantics) ------------------------------------------------------

_JS_SPACE = frozenset(
    [0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029, 0x202F, 0x205F, 0x3000, 0xFEFF]
)
_word_cache: dict[int, bool] = {}


def _is_word(c: int) -> bool:
    """``/[\\p{L}\\p{N}]/u``: general category L* or N*."""
    w = _word_cache.get(c)
    if w is None:
        w = unicodedata.category(chr(c))[0] in "LN"
        _word_cache[c] = w
    return w


def _code_points(s: str) -> list[int]:
    # A Python str is already code points; a lone surrogate stays one value, as in the TS loop.
    return [ord(ch) for ch in s]


# ---- steps 1-4 -------------------------------------------------------------------------------


def _hash_text(first: str, second: str | None, config: FeatureConfig, out: np.ndarray) -> None:
    """Steps 1-4 on ``first + "\\n" + second`` (or ``first``) into zeroed ``out[:dims]``."""
    dims = config.dims
    if dims < 1:
        raise ValueError(f"features.dims must be a positive integer, got {dims}")
    utf16 = _utf16_len(first) + (0 if second is None else 1 + _utf16_len(second))
    if utf16 > config.max_chars:
        # The TS side tests the UTF-16 length, then cuts by code points (a str slice here).
        joined = first if second is None else f"{first}\n{second}"
        text = joined[: config.max_chars].lower()
    else:
        # Lower-cased part by part, as the TS side does (same result: final sigma does not look
        # across the line break).
        text = first.lower() if second is None else f"{first.lower()}\n{second.lower()}"
    cps = _code_points(text)
    counts: dict[int, int] = {}
    mask = dims - 1 if dims & (dims - 1) == 0 else -1

    def add(g: int) -> None:
        bucket = g & mask if mask >= 0 else g % dims
        counts[bucket] = counts.get(bucket, 0) + (-1 if g >= 0x80000000 else 1)

    if config.word_ngrams:
        hashes: list[int] = []
        h, length = 0, 0
        for c in cps:
            if _is_word(c):
                h = _mix(h, c)
                length += 1
            elif length > 0:
                hashes.append(_fmix(h ^ (length * 4)))
                h, length = 0, 0
        if length > 0:
            hashes.append(_fmix(h ^ (length * 4)))
        for n in config.word_ngrams:
            for i in range(len(hashes) - n + 1):
                add(murmur3(hashes[i : i + n], WORD_SEED + n))
    if config.char_ngrams:
        chars = [0x20]
        started = space = False
        for c in cps:
            if c in _JS_SPACE:
                space = started
            else:
                if space:
                    chars.append(0x20)
                chars.append(c)
                started, space = True, False
        chars.append(0x20)
        for n in config.char_ngrams:
            for i in range(len(chars) - n + 1):
                add(murmur3(chars[i : i + n], CHAR_SEED + n))
    squares = 0
    for v in counts.values():
        squares += v * v
    if squares == 0:
        return
    scale = 1 / math.sqrt(squares)
    for bucket, v in counts.items():
        out[bucket] = np.float32(v * scale)


def _utf16_len(s: str) -> int:
    return len(s.encode("utf-16-le", "surrogatepass")) // 2


def text_features(text: str, config: FeatureConfig) -> np.ndarray:
    """Steps 1-4 alone on ``text`` (float32, length ``dims``), as ``textFeatures``."""
    out = np.zeros(config.dims, dtype=np.float32)
    _hash_text(text, None, config, out)
    return out


def featurize(rollout: Mapping[str, Any], config: FeatureConfig) -> np.ndarray:
    """A rollout (a dict as the Avro deserializer gives it) as the pipeline's float32 vector.

    Raises ValueError on a non-finite reward or log-prob (the pipeline dead-letters those).
    """
    out = np.zeros(feature_size(config), dtype=np.float32)
    prompt: str = rollout["prompt"]
    response = response_text(rollout)
    _hash_text(prompt, response, config, out)
    i = config.dims
    out[i] = math.log1p(_utf16_len(prompt) + 1 + _utf16_len(response))
    out[i + 1] = math.log1p(max(0, int(rollout.get("token_count") or 0)))
    i += 2
    rewards = rollout.get("rewards") or {}
    for name in config.reward_names:
        if name not in rewards:
            i += 1  # missing: 0, raw or as a logit (that of 0.5)
            continue
        value = float(rewards[name])
        if not math.isfinite(value):
            raise ValueError(f"reward {name} is not finite ({value})")
        if name in config.logit_rewards:
            p = min(max(value, LOGIT_EPSILON), 1 - LOGIT_EPSILON)
            value = math.log(p / (1 - p))
        with np.errstate(over="ignore"):  # beyond float32's range: ±inf, as a Float32Array stores it
            out[i] = value
        i += 1
    logprobs = rollout.get("logprobs")
    if not logprobs:
        return out
    total, low = 0.0, math.inf
    for lp in logprobs:
        lp = float(lp)
        if not math.isfinite(lp):
            raise ValueError(f"log-prob {lp} is not finite")
        total += lp
        if lp < low:
            low = lp
    mean = total / len(logprobs)
    squares = 0.0
    for lp in logprobs:
        d = float(lp) - mean
        squares += d * d  # JS `x ** 2` is fdlibm pow, which returns x*x for y == 2
    out[i] = mean
    out[i + 1] = low
    out[i + 2] = math.sqrt(squares / len(logprobs))
    out[i + 3] = 1.0
    return out


def featurize_batch(rollouts: Iterable[Mapping[str, Any]], config: FeatureConfig) -> np.ndarray:
    """``featurize`` of each rollout, stacked: float32 ``[N, feature_size(config)]``."""
    rows = [featurize(r, config) for r in rollouts]
    if not rows:
        return np.zeros((0, feature_size(config)), dtype=np.float32)
    return np.stack(rows)
