"""Training data for the trainer process: JSONL files in a run folder, tokenised with span weights,
ordered by a curriculum sampler. Imports no table libraries: the run folder is all a GPU host needs."""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch.utils.data import Sampler

from distill_assets.training.io import read_jsonl, write_jsonl  # noqa: F401 - re-exported
from distill_assets.training.spans import weighted_example

DIFFICULTY_RANK = {"easy": 0, "medium": 1, "hard": 2}


def _messages(value) -> list[dict]:
    return json.loads(value) if isinstance(value, str) else list(value)


def _assistant_text(value) -> str:
    msgs = _messages(value)
    if not msgs or msgs[-1].get("role") != "assistant":
        raise ValueError("a completion must be a list ending with one assistant message")
    return msgs[-1]["content"]


@dataclass
class TokenisedSFT:
    input_ids: list[list[int]] = field(default_factory=list)
    labels: list[list[int]] = field(default_factory=list)
    loss_weights: list[list[float]] = field(default_factory=list)
    difficulty: list[int] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)
    reasoning_tokens: int = 0
    plan_tokens: int = 0

    def as_dict(self) -> dict:
        return {
            "input_ids": self.input_ids,
            "labels": self.labels,
            "loss_weights": self.loss_weights,
            "difficulty": self.difficulty,
        }

    def __len__(self) -> int:
        return len(self.input_ids)


def tokenise_sft(
    rows: list[dict], tokenizer, *, reasoning_weight: float, plan_weight: float, max_length: int
) -> TokenisedSFT:
    """SFT rows (TRL conversational prompt/completion) -> input_ids, labels (-100 on the prompt) and the
    per-token loss weights. A row longer than ``max_length`` is dropped and counted, never truncated: a
    plan cut in half would teach broken JSON."""
    out = TokenisedSFT()
    for r in rows:
        try:
            prompt, completion = _messages(r["prompt"]), _assistant_text(r["completion"])
        except (ValueError, KeyError, TypeError):
            out.dropped["malformed"] += 1
            continue
        ex = weighted_example(tokenizer, prompt, completion, reasoning_weight=reasoning_weight, plan_weight=plan_weight)
        if len(ex.input_ids) > max_length:
            out.dropped["longer_than_max_length"] += 1
            continue
        if not any(w > 0 for w in ex.weights):
            out.dropped["no_completion_tokens"] += 1
            continue
        out.input_ids.append(ex.input_ids)
        out.labels.append([t if w > 0 else -100 for t, w in zip(ex.input_ids, ex.weights)])
        out.loss_weights.append(ex.weights)
        out.difficulty.append(DIFFICULTY_RANK.get(r.get("difficulty") or "medium", 1))
        out.reasoning_tokens += ex.reasoning_tokens
        out.plan_tokens += ex.plan_tokens
    return out


def preference_rows(rows: list[dict]) -> list[dict]:
    """DPO pairs -> TRL's conversational preference format (prompt messages, chosen/rejected answers)."""
    return [
        {"prompt": _messages(r["prompt"]), "chosen": _messages(r["chosen"]), "rejected": _messages(r["rejected"])}
        for r in rows
    ]


def prompt_rows(rows: list[dict]) -> list[dict]:
    """Prompts only (on-policy distillation generates the completions)."""
    return [{"prompt": _messages(r["prompt"])} for r in rows]


class CurriculumSampler(Sampler[int]):
    """Easy -> medium -> hard within every epoch; a seeded shuffle inside each difficulty level, fresh
    per epoch (``set_epoch``), so runs and resumed runs see the same order."""

    def __init__(self, difficulty: list[int], seed: int = 42):
        self.difficulty = list(difficulty)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def order(self) -> list[int]:
        rng = random.Random(self.seed * 100_003 + self.epoch)
        levels: dict[int, list[int]] = {}
        for i, d in enumerate(self.difficulty):
            levels.setdefault(d, []).append(i)
        out: list[int] = []
        for d in sorted(levels):
            idx = levels[d]
            rng.shuffle(idx)
            out.extend(idx)
        return out

    def __iter__(self) -> Iterator[int]:
        return iter(self.order())

    def __len__(self) -> int:
        return len(self.difficulty)


class SpanWeightCollator:
    """Wraps TRL's collator: it pads input_ids and labels (or, padding-free, flattens them with per-row
    position ids from a packed batch's ``seq_lengths``); the loss weights are padded (or concatenated)
    alongside, so weight[b, t] always belongs to input_ids[b, t]."""

    def __init__(self, base):
        self.base = base

    def __call__(self, examples: list[dict]) -> dict:
        weights = [list(ex["loss_weights"]) for ex in examples]
        feats = [{k: v for k, v in ex.items() if k in ("input_ids", "labels", "seq_lengths")} for ex in examples]
        batch = self.base(feats)
        ids = batch["input_ids"]
        total = sum(len(w) for w in weights)
        if ids.shape[0] == 1 and len(weights) > 1 and ids.shape[1] >= total:  # padding-free: one row
            flat = [x for w in weights for x in w]
            t = torch.zeros(1, ids.shape[1], dtype=torch.float32)
            t[0, : len(flat)] = torch.tensor(flat)
        else:
            if ids.shape[0] != len(weights):
                raise ValueError("the collator changed the batch size; span weights cannot follow")
            t = torch.zeros(ids.shape, dtype=torch.float32)
            left = getattr(self.base, "padding_side", "right") == "left"
            for b, w in enumerate(weights):
                if left:
                    t[b, ids.shape[1] - len(w) :] = torch.tensor(w)
                else:
                    t[b, : len(w)] = torch.tensor(w)
        batch["loss_weights"] = t
        return batch
