"""Admission for trainers, with the semantics of ``trainers/admission.ts``: which consumed
examples a trainer trains on (staleness by model version), which it trains on again (a priority
replay buffer), and when it is running out of them (the starvation signal). Pure classes over
explicit times (``now`` in epoch ms is always passed in), so they are deterministic; the client
drives them.

    versions = AnnouncedVersions()
    versions.announce("policy", "v1"); versions.announce("policy", "v2")
    admit_by_staleness(rollout, StalenessConfig(default_max_lag=0), versions)
    # -> StalenessVerdict(admitted=False, reason="stale:model_version", lag=1, ...) for a v1 rollout
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterable, Mapping, TypeVar

T = TypeVar("T")
_M32 = 0xFFFFFFFF

# ─── Staleness ───────────────────────────────────────────────────────────────────────────────


class AnnouncedVersions:
    """Policy versions in announcement order (``operators/filter/staleness-filter.ts``): the later
    announced, the newer; a known version announced again changes nothing; the newest
    ``max_versions_per_model`` per model are kept."""

    def __init__(self, max_versions_per_model: int = 1000) -> None:
        self._positions: dict[str, dict[str, int]] = {}
        self._counts: dict[str, int] = {}
        self._max = max_versions_per_model

    def announce(self, model: str, version: str) -> None:
        versions = self._positions.setdefault(model, {})
        if version in versions:
            return
        count = self._counts.get(model, 0)
        versions[version] = count
        self._counts[model] = count + 1
        if len(versions) > self._max:
            del versions[next(iter(versions))]

    def lag(self, model: str, version: str) -> int | None:
        """Newer versions announced since ``version``; None when it is unknown."""
        position = self._positions.get(model, {}).get(version)
        return None if position is None else self._counts[model] - 1 - position


LagFunction = Callable[[str, str], "int | None"]


@dataclass
class StalenessConfig:
    #: The rollout tag naming the dataset/source an example came from.
    tag: str = "source"
    #: Largest lag admitted per value of ``tag`` (math.inf: no limit).
    max_lag: dict[str, float] = field(default_factory=dict)
    #: For sources not in ``max_lag`` and rollouts without the tag.
    default_max_lag: float = math.inf
    #: A version no announcement named: "admit" or "reject".
    on_unknown: str = "admit"


@dataclass(frozen=True)
class StalenessVerdict:
    admitted: bool
    source: str
    lag: int | None
    reason: str | None = None


def admit_by_staleness(rollout: Mapping[str, Any], config: StalenessConfig, versions: AnnouncedVersions | LagFunction) -> StalenessVerdict:
    """Admitted when the rollout's policy version is at most ``max_lag[tags[tag]]`` (default
    ``default_max_lag``) versions behind the newest announced; reasons as the pipeline's."""
    source = (rollout.get("tags") or {}).get(config.tag, "")
    lag_of = versions.lag if isinstance(versions, AnnouncedVersions) else versions
    lag = lag_of(rollout.get("model_name", ""), rollout["model_version"])
    if lag is None:
        if config.on_unknown == "admit":
            return StalenessVerdict(True, source, None)
        return StalenessVerdict(False, source, None, "stale:unknown_version")
    limit = config.max_lag[source] if source in config.max_lag else config.default_max_lag
    if lag <= limit:
        return StalenessVerdict(True, source, lag)
    return StalenessVerdict(False, source, lag, "stale:model_version")


# ─── Seeded randomness ───────────────────────────────────────────────────────────────────────


def _imul(a: int, b: int) -> int:
    return (a * b) & _M32


class SeededRandom:
    """mulberry32 with its 32-bit state exposed (checkpointed); the same sequence as the TS one."""

    def __init__(self, state: int) -> None:
        self.state = state & _M32

    def next(self) -> float:
        self.state = (self.state + 0x6D2B79F5) & _M32
        t = self.state
        t = _imul(t ^ (t >> 15), t | 1)
        t ^= (t + _imul(t ^ (t >> 7), t | 61)) & _M32
        return ((t ^ (t >> 14)) & _M32) / 4294967296


# ─── Priority replay buffer ──────────────────────────────────────────────────────────────────


@dataclass
class ReplayConfig:
    capacity: int = 10_000
    #: Replays allowed after the first (fresh) use.
    max_reuse: int = 2
    #: Least time between two uses of one item, the fresh use included.
    cool_down_ms: float = 60_000
    #: Replayed items added to each batch, at most.
    per_batch: int = 16
    recency_weight: float = 1.0
    recency_half_life_ms: float = 15 * 60_000
    score_weight: float = 1.0
    #: Which Decision score is an item's score (missing → 0); None: no score term.
    score_name: str | None = None
    #: Sampling ∝ priority^alpha: 0 uniform, larger greedier.
    alpha: float = 1.0
    seed: int = 1


PRIORITY_FLOOR = 1e-9


class ReplayBuffer(Generic[T]):
    """Bounded priority replay (``ReplayBuffer`` of admission.ts): items enter at their fresh use,
    are drawn again up to ``max_reuse`` times, never within ``cool_down_ms`` of their last use,
    lowest priority evicted first over ``capacity``; draws are weighted sampling without
    replacement (Efraimidis–Spirakis keys log(u)/w, w = priority^alpha) from a seeded generator,
    and ``snapshot``/``from_snapshot`` continue the sequence exactly. Snapshots use the TS field
    names, so a checkpoint's replay state reads on either side."""

    def __init__(self, config: ReplayConfig) -> None:
        self.config = config
        self._items: dict[str, dict[str, Any]] = {}
        self._random = SeededRandom(config.seed)
        self._seq = 0

    @classmethod
    def from_snapshot(cls, config: ReplayConfig, snapshot: Mapping[str, Any]) -> "ReplayBuffer[T]":
        buffer = cls(config)
        for item in snapshot["items"]:
            buffer._items[item["id"]] = dict(item)
        buffer._random.state = int(snapshot["random"]) & _M32
        buffer._seq = int(snapshot["seq"])
        return buffer

    def snapshot(self) -> dict[str, Any]:
        return {"items": [copy.copy(i) for i in self._items.values()], "random": self._random.state, "seq": self._seq}

    def __len__(self) -> int:
        return len(self._items)

    def has(self, item_id: str) -> bool:
        return item_id in self._items

    def uses(self, item_id: str) -> int | None:
        item = self._items.get(item_id)
        return None if item is None else item["uses"]

    def priority(self, item: Mapping[str, Any], now: float) -> float:
        c = self.config
        age = max(0, now - item["at"])
        recency = 0.5 ** (age / c.recency_half_life_ms) if c.recency_half_life_ms > 0 else 0
        return c.recency_weight * recency + c.score_weight * max(0, item["score"]) + PRIORITY_FLOOR

    def add(self, entries: Iterable[Mapping[str, Any]], now: float) -> None:
        """Entries ``{id, value, at, score}`` at their fresh use; an id held already stays as it is."""
        if self.config.max_reuse <= 0 or self.config.capacity <= 0:
            return
        for e in entries:
            if e["id"] in self._items:
                continue
            score = e["score"] if math.isfinite(e["score"]) else 0
            self._items[e["id"]] = {"id": e["id"], "value": e["value"], "at": e["at"], "score": score, "uses": 0, "lastUsed": now, "seq": self._seq}
            self._seq += 1
        excess = len(self._items) - self.config.capacity
        if excess <= 0:
            return
        ranked = sorted(self._items.values(), key=lambda i: (self.priority(i, now), i["seq"]))
        for item in ranked[:excess]:
            del self._items[item["id"]]

    def eligible(self, now: float) -> list[dict[str, Any]]:
        c = self.config
        return [i for i in self._items.values() if i["uses"] < c.max_reuse and now - i["lastUsed"] >= c.cool_down_ms]

    def draw(self, n: int, now: float) -> list[dict[str, Any]]:
        """Up to ``n`` eligible items, priority-weighted without replacement; counts the use."""
        if n <= 0:
            return []
        candidates = self.eligible(now)
        if not candidates:
            return []
        alpha = self.config.alpha
        keyed = []
        for item in candidates:
            p = self.priority(item, now)
            w = 1 if alpha == 0 else p**alpha
            u = 1 - self._random.next()
            keyed.append((math.log(u) / w, item, p))
        keyed.sort(key=lambda k: (-k[0], k[1]["seq"]))
        out = []
        for _, item, p in keyed[:n]:
            item["uses"] += 1
            item["lastUsed"] = now
            if item["uses"] >= self.config.max_reuse:
                del self._items[item["id"]]
            out.append({"id": item["id"], "value": item["value"], "uses": item["uses"], "priority": p})
        return out


# ─── Starvation ──────────────────────────────────────────────────────────────────────────────


@dataclass
class StarvationConfig:
    idle_ms: float = 30_000
    #: Examples/s below which (over ``window_ms``) the trainer starves; None: off.
    min_rate: float | None = None
    window_ms: float = 60_000
    repeat_ms: float = 30_000
    check_every_ms: float = 1_000
    publish: bool = True


class StarvationMonitor:
    """The admitted-example rate of one trainer (``StarvationMonitor`` of admission.ts): signals
    "starvation" on entering, again every ``repeat_ms`` while it lasts, "starvation-cleared" once
    on leaving. The signal dicts are the JSON the control topic carries."""

    def __init__(self, trainer: str, config: StarvationConfig, start: float) -> None:
        self.trainer = trainer
        self.config = config
        self._start = start
        self._window: list[tuple[float, int, dict[str, int]]] = []
        self._last_admitted_at: float | None = None
        self._admitted_total = 0
        self._starving: dict[str, Any] | None = None

    def record(self, admitted: int, now: float, rejected: Mapping[str, int] | None = None) -> None:
        self._window.append((now, admitted, dict(rejected or {})))
        if admitted > 0:
            self._last_admitted_at = now
            self._admitted_total += admitted
        self._prune(now)

    def _prune(self, now: float) -> None:
        while self._window and now - self._window[0][0] > self.config.window_ms:
            self._window.pop(0)

    def _rate(self, now: float) -> float:
        span = min(self.config.window_ms, max(1, now - self._start))
        return sum(e[1] for e in self._window) / (span / 1000)

    def _condition(self, now: float) -> tuple[str, float] | None:
        last = self._last_admitted_at if self._last_admitted_at is not None else self._start
        if now - last > self.config.idle_ms:
            return ("idle", last)
        c = self.config
        if c.min_rate is not None and now - self._start >= c.window_ms and self._rate(now) < c.min_rate:
            return ("rate", now - c.window_ms)
        return None

    def status(self, now: float) -> dict[str, Any]:
        self._prune(now)
        cond = self._condition(now)
        since = self._starving["since"] if self._starving else (cond[1] if cond else None)
        return {
            "starving": cond is not None,
            "reason": cond[0] if cond else None,
            "since": since,
            "admitted_rate": self._rate(now),
            "last_admitted_at": self._last_admitted_at,
            "idle_ms": now - (self._last_admitted_at if self._last_admitted_at is not None else self._start),
            "admitted_total": self._admitted_total,
        }

    def check(self, now: float) -> dict[str, Any] | None:
        """The signal to publish at ``now``, if any."""
        self._prune(now)
        cond = self._condition(now)
        if cond is None:
            if self._starving is None:
                return None
            since = self._starving["since"]
            self._starving = None
            return self._signal("starvation-cleared", None, since, now)
        if self._starving is None:
            self._starving = {"reason": cond[0], "since": cond[1], "last": now}
            return self._signal("starvation", cond[0], cond[1], now)
        self._starving["reason"] = cond[0]
        if now - self._starving["last"] < self.config.repeat_ms:
            return None
        self._starving["last"] = now
        return self._signal("starvation", cond[0], self._starving["since"], now)

    def _signal(self, kind: str, reason: str | None, since: float, now: float) -> dict[str, Any]:
        rejected: dict[str, int] = {}
        for _, _, r in self._window:
            for k, n in r.items():
                rejected[k] = rejected.get(k, 0) + n
        return {
            "kind": kind,
            "trainer": self.trainer,
            "since": since,
            "at": now,
            "reason": reason,
            "admitted_rate": self._rate(now),
            "min_rate": self.config.min_rate,
            "window_ms": self.config.window_ms,
            "idle_ms": now - (self._last_admitted_at if self._last_admitted_at is not None else self._start),
            "last_admitted_at": self._last_admitted_at,
            "rejected": rejected,
        }
