"""A mixture of token tasks: one model trained on several at once (target tasks beside stand-ins for ordinary
text, say), over one shared vocabulary, with every example still a pure function of (seed, split, i).

`get_token_task("token-mixture", components=[{"name": "mqar", "weight": 3, "vocab_size": 64},
{"name": "count3", "length": 16}]).example(seed, "train", i)` gives one sequence. On the command line the list
is JSON: `seqlab train task.name=token-mixture 'task.components=[{"name": "mqar", "weight": 3}, ...]'`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pydantic import Field, field_validator

from seqlab.core.configs import parse_config, shown_value
from seqlab.core.errors import BadInput
from seqlab.tasks.base import SPLITS
from seqlab.tasks.token_base import IGNORE, TOKEN_TASKS, TokenConfig, TokenExample, TokenTask, register_token_task

NAME = "token-mixture"
# Where errors say a component is. A mixture is always read as a run's (or `seqlab sample`'s) task section,
# whose errors are prefixed "task." (get_token_task).
WHERE = "task.components"
OWN_KEYS = ("name", "weight")  # a component's keys that are the mixture's, not its task's
DEFAULT_COMPONENTS = ({"name": "mqar", "weight": 1.0}, {"name": "count3", "weight": 1.0})


def shift(ids: np.ndarray, pad: int, offset: int) -> np.ndarray:
    """A component's ids in the mixture's space: its pad id becomes 0, an id above the pad id t + offset, one
    below it t + offset + 1 (so the component's non-pad ids fill offset + 1 .. offset + vocab - 1); IGNORE stays."""
    ids = np.asarray(ids, dtype=np.int64)
    moved = np.where(ids == pad, 0, ids + offset + (ids < pad))
    return np.where(ids == IGNORE, IGNORE, moved)


def unshift(ids: np.ndarray, pad: int, offset: int) -> np.ndarray:
    """The inverse of `shift` on the ids of one component (and 0 and IGNORE)."""
    ids = np.asarray(ids, dtype=np.int64)
    local = ids - offset
    moved = np.where(ids == 0, pad, local - (local <= pad))
    return np.where(ids == IGNORE, IGNORE, moved)


def _named(message: str, at: str) -> str:
    """A component's one-line error, naming the component, in a form the config reader passes on unchanged
    (it repeats messages that start "unknown " or "invalid value for '", and wraps any other)."""
    if at in message and message.startswith(("unknown ", "invalid value for '")):
        return message
    whole = f"invalid {at}: "  # parse_config's form for a check across a component's own fields
    return f"invalid value for '{at}': {message[len(whole):] if message.startswith(whole) else message}"


def component_task(k: int, entry: Any) -> tuple[TokenTask, float]:
    """Component k of the list: its task, its settings read by that task's own config, and its weight;
    BadInput naming the component for anything wrong. A bare name is that task at its defaults, weight 1."""
    at = f"{WHERE}[{k}]"
    if isinstance(entry, str):
        entry = {"name": entry}
    if not isinstance(entry, dict) or "name" not in entry:
        raise BadInput(f"invalid value for '{at}': a component is a mapping with a token task's name, optionally a "
                       f"weight and that task's settings (got {shown_value(entry)})")
    name = entry["name"]
    if not isinstance(name, str) or (name not in TOKEN_TASKS and TOKEN_TASKS.renamed(name) is None):
        raise BadInput(f"invalid value for '{at}.name': {TOKEN_TASKS.unknown(str(name))}")
    name = TOKEN_TASKS.canonical(name)
    if name == NAME:
        raise BadInput(f"invalid value for '{at}.name': a component cannot itself be a {NAME}; list its components here")
    weight = entry.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight <= 0:
        raise BadInput(f"invalid value for '{at}.weight': a weight is a finite number above 0 (got {shown_value(weight)})")
    cls = TOKEN_TASKS[name]
    settings = {key: value for key, value in entry.items() if key not in OWN_KEYS}
    try:
        return cls(parse_config(cls.Config, settings, prefix=f"{at}.")), float(weight)
    except (BadInput, ValueError) as e:  # a config, or a task built from it, that refuses the settings
        raise BadInput(_named(str(e), at)) from None


class TokenMixtureConfig(TokenConfig):
    """components: a list of {name: a token task, weight: > 0 (default 1), and that task's own settings}."""

    components: list[Any] = Field(default_factory=lambda: [dict(c) for c in DEFAULT_COMPONENTS], validate_default=True)

    @field_validator("components")
    @classmethod
    def _check_components(cls, components: list[Any]) -> list[dict[str, Any]]:
        if not components:
            raise ValueError("a mixture needs at least one component")
        # Stored with every knob filled in, as a run's task section is, so config.json says the whole mixture.
        out = []
        for k, entry in enumerate(components):
            task, weight = component_task(k, entry)
            out.append({"name": task.name, "weight": weight, **task.config.to_json()})
        return out


@register_token_task
class TokenMixture(TokenTask):
    """Several token tasks mixed by weight in one vocabulary: each example is one component's, ids shifted apart.

    Components k = 0, 1, ... with vocabularies V_k and pad ids p_k share one id space:

    - id 0 is the pad id of every component (and of the mixture's padding);
    - component k's other ids are shifted by offsets[k] = sum over j < k of (V_j - 1): an id t > p_k becomes
      t + offsets[k], an id t < p_k becomes t + offsets[k] + 1 (with p_k = 0, as every token task has now,
      simply t + offsets[k]). Component k owns ids offsets[k] + 1 .. offsets[k] + V_k - 1; no two components
      share an id but 0. `component_of(id)` says whose an id is; `shift` and `unshift` map whole arrays;
    - vocab_size = 1 + sum of (V_k - 1); max_length = the longest component's.

    A component whose own tokens use its pad id (MQAR's filler 0, Count3's value 0) keeps it as id 0: that
    is the one id the components share.

    Example i of a split: its component k is drawn with probability weight_k / sum of weights from the stream
    (token-mixture, seed, split, i), and the example is component k's own example i of the same seed and
    split, its tokens and targets shifted (IGNORE stays IGNORE). The choice is independent of the component's
    stream, so each component shows its own split's distribution; its split keeps train and test apart, and
    ids keep components apart. A batch is right-padded to max_length with 0 and IGNORE.

    meta: the component's own meta (in its own ids), with "component" (its task's name), "component_index"
    (k) and "offset" (offsets[k]). `component_batch` gives one component's examples alone in the mixture's
    ids, to score a mixture-trained model on one task.
    """

    name = NAME
    Config = TokenMixtureConfig

    def __init__(self, config: TokenMixtureConfig | None = None):
        super().__init__(config)
        built = [component_task(k, entry) for k, entry in enumerate(self.config.components)]
        self.components: list[TokenTask] = [task for task, _ in built]
        weights = np.array([w for _, w in built], dtype=np.float64)
        weights /= weights.max()  # first, so that two weights near the float limit do not sum to inf
        self.shares = weights / weights.sum()
        sizes = [task.vocab_size for task in self.components]
        self.offsets: list[int] = [int(x) for x in np.cumsum([0] + [v - 1 for v in sizes[:-1]])]
        self._vocab_size = 1 + sum(v - 1 for v in sizes)
        names = [task.name for task in self.components]
        # A task that appears twice (two MQAR settings) is told apart by its index.
        self.labels: list[str] = [n if names.count(n) == 1 else f"{n}#{k}" for k, n in enumerate(names)]

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def max_length(self) -> int:
        return max(task.max_length for task in self.components)

    # -- the id space ---------------------------------------------------------------------------------
    def component_of(self, token: int) -> int | None:
        """The index of the component that owns a mixture id; None for 0, the pad id they all share."""
        if not 0 <= token < self.vocab_size:
            raise BadInput(f"token id {token} is outside this mixture's vocabulary [0, {self.vocab_size})")
        if token == 0:
            return None
        # Component k owns offsets[k] + 1 .. offsets[k + 1].
        return int(np.searchsorted(self.offsets, token, side="left")) - 1

    def to_mixture(self, k: int, ids) -> np.ndarray:
        return shift(ids, self.components[k].pad_id, self.offsets[k])

    def to_component(self, k: int, ids) -> np.ndarray:
        return unshift(ids, self.components[k].pad_id, self.offsets[k])

    def component_index(self, component: int | str) -> int:
        """A component by index, label or (where it occurs once) task name."""
        if isinstance(component, (int, np.integer)) and not isinstance(component, bool):
            if 0 <= component < len(self.components):
                return int(component)
        elif component in self.labels:
            return self.labels.index(component)
        raise BadInput(f"no component {component!r} in this mixture (components: {', '.join(self.labels)})")

    def token_name(self, token: int) -> str:
        k = self.component_of(token)
        if k is None:
            return "<pad>"
        return f"{self.labels[k]}:{self.components[k].token_name(int(self.to_component(k, token)))}"

    # -- examples -----------------------------------------------------------------------------------
    def choose(self, seed: int, split: str, i: int) -> int:
        """The component of example i: drawn by weight from the mixture's own stream (seed, split, i)."""
        return int(self._rng(seed, split, i).choice(len(self.components), p=self.shares))

    def component_indices(self, seed: int, split: str, start: int, n: int) -> np.ndarray:
        """The component of each of examples start .. start + n - 1 (a batch's rows), without drawing them."""
        return np.array([self.choose(seed, split, start + j) for j in range(n)], dtype=np.int64)

    def example(self, seed: int, split: str, i: int) -> TokenExample:
        if split not in SPLITS:
            raise BadInput(f"unknown split '{split}' (use train or test)")
        if i < 0:
            raise BadInput(f"example indices start from 0, got {i}")
        k = self.choose(seed, split, i)
        own = self.components[k].example(seed, split, i)
        meta = {**own.meta, "component": self.components[k].name, "component_index": k, "offset": self.offsets[k]}
        return TokenExample(tuple(self.to_mixture(k, own.tokens).tolist()),
                            tuple(self.to_mixture(k, own.targets).tolist()), meta)

    def own_example(self, ex: TokenExample) -> TokenExample:
        """A mixture example as its component wrote it: its own ids."""
        k = ex.meta["component_index"]
        return TokenExample(tuple(self.to_component(k, ex.tokens).tolist()),
                            tuple(self.to_component(k, ex.targets).tolist()), ex.meta)

    def problem_key(self, ex: TokenExample) -> bytes:
        """The component and its own canonical problem (the split itself is the component's)."""
        k = ex.meta["component_index"]
        return k.to_bytes(4, "little") + self.components[k].problem_key(self.own_example(ex))

    def component_batch(self, seed: int, split: str, start: int, n: int, component: int | str) -> tuple[np.ndarray, np.ndarray]:
        """One component's examples start .. start + n - 1 of a split, alone, in the mixture's ids: (n, that
        component's max_length) tokens and targets, right-padded with 0 and IGNORE. These are the examples the
        mixture shows at those indices where it picks that component; right padding leaves a causal model's
        scores unchanged, so the shorter width is the same test."""
        k = self.component_index(component)
        tokens, targets = self.components[k].batch(seed, split, start, n)
        return self.to_mixture(k, tokens), self.to_mixture(k, targets)

    def render(self, ex: TokenExample) -> tuple[str, str]:
        """The component's own rendering of its example, after the component's label."""
        k = ex.meta["component_index"]
        prompt, target = self.components[k].render(self.own_example(ex))
        return f"{self.labels[k]}: {prompt}", target
