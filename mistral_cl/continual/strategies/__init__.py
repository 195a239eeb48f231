"""The strategies of a continual run, by name: one small module each, and this registry.

A new strategy is a `Strategy` subclass in its own module (overriding only what differs from
sequential fine-tuning, see `base.py`) plus one entry in `STRATEGIES`. On the command line a strategy
is `name` or `name:field=value[:field=value]`, e.g. `ewc:lam=300`, its fields being hyperparameters.
"""

from __future__ import annotations

import dataclasses

from mistral_cl.continual.strategies.adapters import Adapters
from mistral_cl.continual.strategies.agem import AGEM
from mistral_cl.continual.strategies.base import Setting, Strategy, StrategyState
from mistral_cl.continual.strategies.cumulative import Cumulative
from mistral_cl.continual.strategies.ewc import EWC
from mistral_cl.continual.strategies.joint import Joint
from mistral_cl.continual.strategies.lwf import LwF
from mistral_cl.continual.strategies.naive import Naive
from mistral_cl.continual.strategies.replay import AveragedReplay, Replay, SnapshotReplay
from mistral_cl.errors import InputError

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (Joint, Cumulative, Naive, Replay, AveragedReplay, SnapshotReplay, EWC, LwF, AGEM, Adapters)
}

__all__ = ["STRATEGIES", "Setting", "Strategy", "StrategyState", "build_strategy", "parse_strategies"]


def build_strategy(spec: str) -> Strategy:
    """The strategy named by `spec` (`name` or `name:field=value:...`)."""
    name, *settings = spec.strip().split(":")
    if name not in STRATEGIES:
        raise InputError(f"unknown strategy {name!r}", hint=f"choose from {', '.join(STRATEGIES)}")
    cls = STRATEGIES[name]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for setting in settings:
        field, _, text = setting.partition("=")
        if field not in fields:
            known = ", ".join(fields) or "none"
            raise InputError(f"strategy {name!r} has no setting {field!r}",
                             hint=f"its settings: {known}; write e.g. {name}:{next(iter(fields), 'x')}=1")
        try:
            values[field] = type(fields[field].default)(text)
        except ValueError:
            raise InputError(f"{spec!r}: {field} must be a {type(fields[field].default).__name__}, "
                             f"got {text!r}") from None
    return cls(**values)


def parse_strategies(text: str, mode: str) -> list[Strategy]:
    """Comma-separated strategy specs, each checked against the adaptation `mode`."""
    strategies = [build_strategy(part) for part in text.split(",") if part.strip()]
    if not strategies:
        raise InputError("no strategy given", hint=f"e.g. `continual.strategies=naive,replay`; known: "
                                                   f"{', '.join(STRATEGIES)}")
    specs = [s.spec for s in strategies]
    repeated = sorted({s for s in specs if specs.count(s) > 1})
    if repeated:
        raise InputError(f"strategy listed twice: {', '.join(repeated)}")
    for strategy in strategies:
        if mode not in strategy.modes:
            raise InputError(f"strategy {strategy.name!r} does not work in {mode!r} mode",
                             hint=f"use `adaptation.mode={' or '.join(strategy.modes)}`")
    return strategies
