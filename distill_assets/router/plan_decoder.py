"""Stage-4 plans whose bookkeeping is right as they are written.

A change plan restates its content three times: each change's ``depends_on`` and ``depended_by`` must be
mutual, every edge must name a change of the plan, and ``execution_order`` must list each affected file
once, dependencies first. One JSON grammar cannot say that (it would have to remember what was written), so
a small model under the task's schema writes the content right and the bookkeeping wrong (as written, 0 %
of the SmolLM2 students' plans were structurally valid: `bench/results/student_gain.md`).

This decoder writes the plan in segments, each under a grammar made from what was written before it:

- the head (``[REASONING] ... [PLAN] {"task_summary": ..., "affected_files": [``);
- each file's opening, whose path is one not written yet;
- each change, whose symbol is one of that file's symbols (as the prompt shows them) not written yet, or a
  new name for ``add``. Its ``depended_by`` names changes still to come (a promise: existing symbols of files
  not closed yet, at most ``max_edges``); its ``depends_on`` is then exactly the earlier changes that promised
  it. A file cannot close, nor the plan's file list, while a promise into it is open;
- ``execution_order``, one file at a time, among the files whose dependencies are already listed;
- the rationale.

So every edge is mutual and names a change of the plan, every edge points back in writing order (no cycle),
no file or existing symbol is written twice, and the order is a permutation of the files that respects the
edges. What the model chooses is unchanged: which files, symbols, actions and words, and which promises.
Left to the model: an ``add`` may name an existing symbol, and text may contain code.

Where a change or a file ends and the model chose to go on, the decoder first reads the model's own
continuation under no grammar (``PEEK_TOKENS``). If that would repeat a symbol of this file or a written path,
which the grammar forbids (so the model would be steered into some other, often invented, name and the plan
would run long), or would leave (open a file where a change was to come, end the list), the separator is taken
back and the model chooses again among the closings the bookkeeping allows (the file's end, the file list's
end); where a promise into the file keeps it open, the next change must keep a promise instead.
``PlanDecode.closed_on_repeat`` counts those.

The default (`router.plan_decoder`, or `prompts.student.decoding(..., bookkeeping=True)`) since version 3:
on click's 40 held-out tasks every plan of the base and of the adapter was valid as written and the adapter's
file recall gain over the base was clear (`student_gain.md`); `router.plan_decoder: false` decodes under one
plan grammar. With it on, the evaluation's cached answers are keyed by ``PLAN_DECODER_VERSION``.

The text is the compact JSON the students are trained on (`datasets.build.plan_completion`). The KV cache is
reused between segments (llama-cpp-python's prefix match), so a segment costs only its own tokens.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from typing import get_args

from distill_assets.plans.schema import MODULE, Action, Role
from distill_assets.prompts.tags import PLAN_TAG, REASONING_TAG

_STRING_RULES = (
    'string ::= "\\"" char* "\\""\n'
    'char ::= [^"\\\\\\x7F\\x00-\\x1F] | "\\\\" (["\\\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])\n'
)
ROLES = get_args(Role)
EXISTING_ACTIONS = tuple(a for a in get_args(Action) if a != "add")


def lit(text: str) -> str:
    """A GBNF literal that matches ``text`` exactly."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def jlit(value: str) -> str:
    """A GBNF literal for ``value`` as a compact JSON string."""
    return lit(json.dumps(value, ensure_ascii=False))


def _alts(options: list[str]) -> str:
    return "(" + " | ".join(options) + ")" if len(options) > 1 else options[0]


NAME_FIRST = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_$"
NAME_CHARS = NAME_FIRST + "0123456789."


def _class(chars: str) -> str:
    return "[" + "".join("\\" + c if c in "\\]^-[" else c for c in chars) + "]"


def name_not_in(excluded: list[str], prefix: str) -> str:
    """GBNF rules, the first named ``prefix``, for a new symbol name as a JSON string: an identifier (dotted
    for members) that is none of ``excluded``. A trie of the excluded names, where a name may leave the trie
    at any character or end anywhere but at an excluded name."""
    trie: dict = {}
    for name in excluded:
        if name and name[0] in NAME_FIRST and all(c in NAME_CHARS for c in name):
            node = trie
            for ch in name:
                node = node.setdefault(ch, {})
            node[None] = True
    rules: list[str] = []

    def rule(node: dict, name: str, root: bool) -> None:
        kids = [c for c in node if c is not None]
        alts = [] if root or None in node else ['"\\""']
        other = "".join(c for c in (NAME_FIRST if root else NAME_CHARS) if c not in kids)
        if other:
            alts.append(f'{_class(other)} name-char* "\\""')
        for i, ch in enumerate(kids):
            alts.append(f"{lit(ch)} {name}-{i}")
            rule(node[ch], f"{name}-{i}", False)
        rules.insert(0, f"{name} ::= {' | '.join(alts)}")

    rule(trie, f"{prefix}-x", True)
    head = f'{prefix} ::= "\\"" {prefix}-x\nname-char ::= {_class(NAME_CHARS)}\n'
    return head + "\n".join(rules) + "\n"


@dataclass
class PlanSpec:
    """What the task allows: ``paths`` (None: any path), and per path the existing symbols a
    modify/delete/rename may name (``<module>`` is always allowed)."""

    paths: list[str] | None
    symbols: dict[str, list[str]]
    max_files: int = 8
    max_changes: int = 6
    max_edges: int = 5
    reasoning_chars: int = 400

    def existing(self, path: str) -> list[str]:
        return list(dict.fromkeys([*self.symbols.get(path, []), MODULE]))

    @classmethod
    def from_schema(cls, task_schema: dict, context_symbols: list[dict] | None = None) -> "PlanSpec":
        """From the stage-4 task schema (`prompts.schemas.task_schema`): its path enum, and its enum of the
        symbols the prompt shows, bound to the file each is defined in (``context_symbols``: the task's
        symbol rows, ``path``/``name``); without them every shown symbol is allowed in every file."""
        plan = task_schema["properties"]["plan"]
        afile = plan["properties"]["affected_files"]["items"]
        paths = afile["properties"]["path"].get("enum")
        shown: list[str] = []
        for branch in afile["properties"]["changes"]["items"].get("anyOf", []):
            shown += [s for s in branch["properties"]["symbol"].get("enum", []) if s != MODULE]
        shown_set = set(shown)
        symbols: dict[str, list[str]] = {}
        if context_symbols is not None:
            for row in context_symbols:
                if row["name"] in shown_set:
                    symbols.setdefault(row["path"], []).append(row["name"])
        elif paths:
            symbols = {p: list(dict.fromkeys(shown)) for p in paths}
        return cls(
            paths=list(paths) if paths else None,
            symbols={p: list(dict.fromkeys(v)) for p, v in symbols.items()},
            max_files=int(plan["properties"]["affected_files"].get("maxItems", 8)),
            max_changes=int(afile["properties"]["changes"].get("maxItems", 6)),
        )


_K = {  # the compact JSON between the values, as GBNF literals
    "summary": lit('{"task_summary":'),
    "files": lit(',"affected_files":['),
    "path": lit('{"path":'),
    "role": lit(',"role":'),
    "changes": lit(',"changes":['),
    "symbol": lit('{"symbol":'),
    "action": lit(',"action":'),
    "add": lit(',"action":"add"'),
    "description": lit(',"description":'),
    "depends_on": lit(',"depends_on":'),
    "depended_by": lit(',"depended_by":'),
    "close": lit("}"),
    "rationale": lit(',"rationale":'),
}
_OPENING = {  # the start of the next change / file in the model's unconstrained text: its symbol / path
    "change": re.compile(r'\s*\{\s*"symbol"\s*:\s*"((?:[^"\\]|\\.)*)"'),
    "file": re.compile(r'\s*\{\s*"path"\s*:\s*"((?:[^"\\]|\\.)*)"'),
}
_LEAVES = re.compile(r'\s*(\]|"execution_order"|"rationale")')  # the list ends where the model goes on
# what the decoder writes depends on this code: the evaluation's cached answers are keyed by it when it is on
PLAN_DECODER_VERSION = "3"  # 2: the file or plan closes where the model would repeat (`close_instead`);
# 3: out of budget (``closing``), a file with promises into it takes only the promised changes
PEEK_TOKENS = 16  # the model's own continuation read where a change or file starts (`decode_plan`)
ENUMERATED_KEYS = frozenset({"path", "symbol", "depends_on", "depended_by", "execution_order"})
SEPARATORS = {"]}]": "order", "]},": "file", ",": "change"}  # after a change's "]}": what comes next


@dataclass
class PlanWriter:
    """The decoder's state: what was written, which promises are open. Pure Python: each ``*_grammar``
    gives the GBNF of the next segment, each ``take_*`` reads the segment the model wrote under it."""

    spec: PlanSpec
    files: list[str] = field(default_factory=list)
    written: dict[str, list[str]] = field(default_factory=dict)  # path -> symbols written
    promises: dict[tuple[str, str], list[tuple[str, str]]] = field(default_factory=dict)  # to come -> promisers
    file_deps: dict[str, set[str]] = field(default_factory=dict)  # file -> files it depends on
    ordered: list[str] = field(default_factory=list)
    current: str | None = None
    closing: bool = False  # the token budget is running out: keep the promises, start nothing new
    keep_promises: bool = False  # the next change keeps a promise into this file (the model would repeat)

    # ---- what is owed --------------------------------------------------------------------------------
    def owed(self, path: str) -> list[str]:
        """Symbols of ``path`` that a written change promised and that are not written yet."""
        return [s for p, s in self.promises if p == path]

    def promised_files(self) -> list[str]:
        """Files not opened yet that a promise names."""
        return [p for p in dict.fromkeys(p for p, _ in self.promises) if p not in self.written]

    # ---- segments ------------------------------------------------------------------------------------
    def head_grammar(self) -> str:
        n = max(1, int(self.spec.reasoning_chars))
        return (
            f'root ::= "{REASONING_TAG} " reasoning "\\n{PLAN_TAG} " {_K["summary"]} string {_K["files"]}\n'
            f'reasoning ::= [^\\n\\[\\]"]{{1,{n}}}\n' + _STRING_RULES
        )

    def file_grammar(self) -> str:
        promised = self.promised_files()
        if promised and (self.closing or len(self.files) + len(promised) >= self.spec.max_files):
            choices = promised  # the last slots go to the promised files
        elif self.spec.paths is not None:
            choices = [p for p in self.spec.paths if p not in self.written]
        else:
            choices = []
        path = _alts([jlit(p) for p in choices]) if choices else "string"
        roles = _alts([jlit(r) for r in ROLES])
        return f"root ::= {_K['path']} {path} {_K['role']} {roles} {_K['changes']}\n" + _STRING_RULES

    def take_file(self, text: str) -> str:
        path = json.loads(text[: text.rindex(',"changes":[')] + "}")["path"]
        if path in self.written:  # a free-string path is not excluded by the grammar
            raise PlanDecodeError(f"path {path!r} written twice")
        self.files.append(path)
        self.written[path] = []
        self.file_deps[path] = set()
        self.current = path
        return path

    def _targets(self, path: str, symbol: str | None) -> list[tuple[str, str]]:
        """What a change at ``path:symbol`` may promise: existing symbols of its file not written yet (not
        itself) while the file has slots left, and those of indexed files not opened yet while the plan has
        slots left."""
        out = []
        if self.closing:
            return out
        if len(self.written[path]) + 1 + len(self.owed(path)) < self.spec.max_changes:
            out += [(path, s) for s in self.spec.existing(path) if s != symbol and s not in self.written[path]]
        promised = self.promised_files()
        room = len(self.files) + len(promised) < self.spec.max_files
        for p in self.spec.symbols:
            if p not in self.written and (p in promised or room):
                out += [(p, s) for s in self.spec.existing(p)]
        return list(dict.fromkeys(out))

    def _separators(self, symbol: str | None, promise_here: bool, promise_elsewhere: bool) -> list[str]:
        """What may follow a change at ``symbol`` of the current file (None: a new name) that makes new
        promises into this file and/or other files: another change, the file's end, the file list's end."""
        path = self.current
        assert path is not None
        owed = [s for s in self.owed(path) if s != symbol or symbol is None]
        written = len(self.written[path]) + 1
        promised = {p for p in self.promised_files() if p != path}
        left = {k for k in self.promises if k != (path, symbol)}
        out = []
        if owed or promise_here or (written < self.spec.max_changes and not self.closing):
            out.append(",")
        if not owed and not promise_here:
            more = len(self.files) < self.spec.max_files and self._paths_left() and not self.closing
            if promised or promise_elsewhere or more:
                out.append("]},")
            if not left and not promise_elsewhere:
                out.append("]}]")
        return out

    def _tail(self, path: str, symbol: str | None) -> str:
        """depends_on, depended_by, the change's close and what follows it, for a change at ``path:symbol``."""
        promisers = self.promises.get((path, symbol), []) if symbol is not None else []
        dep = lit("[" + ",".join(json.dumps(f"{p}:{s}", ensure_ascii=False) for p, s in promisers) + "]")
        here = [jlit(f"{p}:{s}") for p, s in self._targets(path, symbol) if p == path]
        there = [jlit(f"{p}:{s}") for p, s in self._targets(path, symbol) if p != path]
        n = max(self.spec.max_edges - 1, 0)

        def then(*flags: bool) -> str:
            return _alts([lit("]}" + sep) for sep in self._separators(symbol, *flags)])

        alts = [f'"[" {then(False, False)}']
        if there:
            o = _alts(there)
            alts.append(f'"[" {o} ({lit(",")} {o}){{0,{n}}} {then(False, True)}')
        if here:  # at least one into this file, at most max_edges in all
            h, any_, sep = _alts(here), _alts(here + there), lit(",")
            lists = [f"({any_} {sep}){{{i}}} {h} ({sep} {any_}){{0,{n - i}}}" for i in range(n + 1)]
            alts.append(f'"[" {_alts(lists)} {then(True, bool(there))}')
        return f"{_K['depends_on']} {dep} {_K['depended_by']} {_alts(alts)}"

    def change_grammar(self) -> str:
        """One change, its close, and what follows: ``,`` (another change), ``]},`` (another file) or ``]}]``
        (the file list's end), so that the segment ends where the tokenizer has a token boundary."""
        path = self.current
        assert path is not None
        written, owed = self.written[path], self.owed(path)
        # only the owed changes: the file is full, the model would repeat (``keep_promises``), or the token
        # budget is running out (``closing``: keep the promises, start nothing new)
        full = len(written) + len(owed) >= self.spec.max_changes or (
            (self.keep_promises or self.closing) and bool(owed)
        )
        acts = _alts([jlit(a) for a in EXISTING_ACTIONS])
        branches = [
            f"{_K['symbol']} {jlit(s)} {_K['action']} {acts} {_K['description']} string {self._tail(path, s)}"
            for s in (owed if full else self.spec.existing(path))
            if s not in written
        ]
        rules = _STRING_RULES
        if not full:  # a new name: none of the file's symbols, nor one written already
            new = [s for s in self.spec.existing(path) if s != MODULE] + written
            rules += name_not_in(new, "new-name")
            branches.append(f"{_K['symbol']} new-name {_K['add']} {_K['description']} string {self._tail(path, None)}")
        return f"root ::= {_alts(branches)}\n" + rules

    def take_change(self, text: str) -> str:
        """Reads one change and its separator; returns what comes next: "change", "file" or "order"."""
        for sep, nxt in SEPARATORS.items():
            if text.endswith("}" + sep):
                break
        else:
            raise PlanDecodeError(f"a change without a separator: {text[-40:]!r}")
        change = json.loads(text[: -len(sep)])
        path = self.current
        assert path is not None
        me = (path, change["symbol"])
        self.written[path].append(change["symbol"])
        self.keep_promises = False
        if change["action"] != "add":  # (an add never keeps a promise: its depends_on is empty)
            for p, _ in self.promises.pop(me, []):
                self.file_deps[path].add(p)
        for t in dict.fromkeys(change["depended_by"]):
            target = tuple(t.rpartition(":")[::2])  # the grammar wrote it from (path, symbol): no ':' in symbols
            if me not in self.promises.setdefault(target, []):
                self.promises[target].append(me)
        self.file_deps[path].discard(path)
        if nxt != "change":
            self.current = None
        return nxt

    def closings(self) -> list[str]:
        """After a change was taken: the separators other than ``,`` that the grammar allowed after it (the
        file's end when nothing is owed into it, the file list's end when no promise is open at all)."""
        path = self.current
        if path is None or self.owed(path):
            return []
        out = []
        more = len(self.files) < self.spec.max_files and self._paths_left() and not self.closing
        if self.promised_files() or more:
            out.append("]},")
        if not self.promises:
            out.append("]}]")
        return out

    def retake(self, sep: str) -> str:
        """The change just taken is followed by ``sep`` instead (a closing the model chose when it wanted to
        repeat what was written); returns what comes next."""
        nxt = SEPARATORS[sep]
        if nxt != "change":
            self.current = None
        return nxt

    def wants_out(self, peeked: str, nxt: str) -> bool:
        """Whether ``peeked``, the model's unconstrained continuation where the next change (``nxt`` "change")
        or file ("file") starts, leaves instead: it repeats a symbol of this file or a written path, ends the
        list (``]``, ``"execution_order"``), or, for a change, opens a file."""
        if _LEAVES.match(peeked) or (nxt == "change" and _OPENING["file"].match(peeked)):
            return True
        m = _OPENING[nxt].match(peeked)
        if m is None:
            return False
        try:
            name = json.loads('"' + m.group(1) + '"')
        except ValueError:  # a broken escape: not a name the plan could hold
            return False
        if nxt == "change":
            return self.current is not None and name in self.written[self.current]
        return name in self.written

    def _paths_left(self) -> bool:
        return self.spec.paths is None or any(p not in self.written for p in self.spec.paths)

    def reserve(self, per_change: float) -> int:
        """Tokens that must be left before a new change or file is started: that change (and a file's
        opening), the promised changes, the execution order, the rationale (~``per_change`` tokens a change)."""

        def toks(text: str) -> int:  # ~3 characters a token
            return len(text) // 3 + 2

        owed = sum(per_change + sum(toks(f"{p}:{s}") for p, s in by) for by in self.promises.values())
        files = 25 * len(self.promised_files())
        order = sum(toks(f) for f in self.files)
        return int(1.25 * (per_change + owed + files + order + 80))

    def order_grammar(self) -> str:
        """One file of the execution order, among those whose dependencies are listed, written from inside
        its quotes to the next item's opening quote (``","``) or the list's end (``"]``): token boundaries."""
        ready = [f for f in self.files if f not in self.ordered and self.file_deps[f] <= set(self.ordered)]
        first = lit(',"execution_order":["') + " " if not self.ordered else ""
        end = lit('"]') if len(self.ordered) + 1 == len(self.files) else lit('","')
        return f"root ::= {first}{_alts([lit(json.dumps(f, ensure_ascii=False)[1:-1]) for f in ready])} {end}\n"

    def take_order(self, text: str) -> bool:
        """Reads one file of the execution order; True when the order is complete."""
        item = text.removeprefix(',"execution_order":["')
        item = item[:-3] if item.endswith('","') else item[:-2]
        self.ordered.append(json.loads('"' + item + '"'))
        return len(self.ordered) == len(self.files)

    def tail_grammar(self) -> str:
        return f"root ::= {_K['rationale']} string {_K['close']}\n" + _STRING_RULES


class PlanDecodeError(RuntimeError):
    """The decoder could not go on (a free-string path written twice)."""


@dataclass
class PlanDecode:
    text: str
    tokens_in: int
    tokens_out: int
    segments: int
    error: str | None = None  # "length" when the token budget ran out mid-plan
    closed_on_repeat: int = 0  # where the model wanted a repeat: a file or the plan closed, or a promise kept


def decode_plan(
    llm,
    messages: list[dict],
    spec: PlanSpec,
    *,
    max_tokens: int,
    repeat_penalty: float,
    logits_processor=None,
) -> PlanDecode:
    """The greedy stage-4 answer of ``llm`` to ``messages``, segment by segment (module docstring).
    ``logits_processor``: a factory of a fresh LogitsProcessorList per segment with free text (it must leave
    the strings of ``ENUMERATED_KEYS`` alone). Out of tokens mid-plan, the
    text is cut where the budget ended, as a plain decode's would be."""
    from llama_cpp import LlamaGrammar

    left, tokens, parts, tokens_in, closed = max_tokens, [], [], 0, 0

    def segment(grammar: str, free_text: bool = False) -> str | None:
        """The segment's text; None when the budget ran out in it. ``free_text``: it has free strings (the
        logits processor caps them); the others only enumerated ones, which a cap must not cut."""
        nonlocal left, tokens, tokens_in
        kw: dict = dict(
            grammar=LlamaGrammar.from_string(grammar, verbose=False),
            temperature=0.0,
            max_tokens=left,
            repeat_penalty=repeat_penalty,
        )
        if logits_processor is not None and free_text:
            kw["logits_processor"] = logits_processor()
        if not parts:
            out = llm.create_chat_completion(messages=messages, **kw)
            text = out["choices"][0]["message"]["content"] or ""
            tokens_in = int((out.get("usage") or {}).get("prompt_tokens") or 0)
        else:
            out = llm.create_completion(prompt=tokens, **kw)
            text = out["choices"][0]["text"]
        parts.append(text)
        left -= int((out.get("usage") or {}).get("completion_tokens") or 0)
        if out["choices"][0]["finish_reason"] == "length":
            return None
        tokens = list(llm.input_ids[: llm.n_tokens])  # the prompt and every token written so far
        return text

    def result(error: str | None = None) -> PlanDecode:
        return PlanDecode("".join(parts), tokens_in, max_tokens - left, len(parts), error, closed)

    def peek() -> str:
        """The model's own greedy continuation of what was written, under no grammar (not kept)."""
        out = llm.create_completion(
            prompt=tokens, max_tokens=PEEK_TOKENS, temperature=0.0, repeat_penalty=repeat_penalty
        )
        return out["choices"][0]["text"]

    def unwrite(sep: str) -> str | None:
        """Take the separator ``sep`` that ends the text back out of the text and the token stream; returns the
        text before it that the dropped tokens held (to be written again), or None where the tokens do not end
        in ``sep`` as the text does."""
        nonlocal tokens, left
        want = sep.encode()
        for k in range(1, min(8, len(tokens) - tokens_in) + 1):
            tail = llm.detokenize(tokens[-k:])
            if len(tail) < len(want):
                continue
            if not tail.endswith(want):
                return None
            try:
                text = tail.decode()
            except UnicodeDecodeError:
                continue
            if not parts[-1].endswith(text):
                return None
            parts[-1] = parts[-1][: len(parts[-1]) - len(text)]
            tokens, left = tokens[:-k], left + k
            return text[: len(text) - len(sep)]
        return None

    def close_instead(step: str, w: PlanWriter) -> str:
        """Where the model, past the separator it chose, would repeat a symbol of this file or a written path
        (which the grammar forbids, so that it would be steered into another name), the file or the plan is
        closed instead, by the model's choice among the closings the bookkeeping allows. Where a promise into
        this file keeps it open, the next change keeps a promise instead."""
        nonlocal closed
        while step in ("change", "file") and left > PEEK_TOKENS:
            options = w.closings() if step == "change" else (["]}]"] if not w.promises else [])
            owed = step == "change" and bool(w.owed(w.current or ""))
            if not (options or owed) or not w.wants_out(peek(), step):
                return step
            if owed:
                w.keep_promises = True
                closed += 1
                return step
            sep = "," if step == "change" else "]},"
            again = unwrite(sep)
            if again is None:
                return step
            text = segment(f"root ::= {lit(again) + ' ' if again else ''}{_alts([lit(o) for o in options])}\n")
            if text is None:
                return "length"
            closed += 1
            step = w.retake(text[len(again) :]) if step == "change" else "order"
        return step

    w = PlanWriter(spec)
    try:
        if segment(w.head_grammar(), free_text=True) is None:
            return result("length")
        step = "file"
        while step != "done":
            if left <= 0:
                return result("length")
            if step == "file":
                text = segment(w.file_grammar())
                if text is not None:
                    w.take_file(text)
                    step = "change"
            elif step == "change":
                n_changes = sum(len(v) for v in w.written.values())
                w.closing = left < w.reserve((max_tokens - left) / max(n_changes, 1))
                text = segment(w.change_grammar(), free_text=True)
                if text is not None:
                    step = close_instead(w.take_change(text), w)
                    if step == "length":
                        return result("length")
            elif step == "order":
                text = segment(w.order_grammar())
                if text is not None and w.take_order(text):
                    step = "tail"
            else:
                text = segment(w.tail_grammar(), free_text=True)
                step = "done"
            if text is None:
                return result("length")
    except (PlanDecodeError, ValueError, KeyError) as exc:  # json.JSONDecodeError is a ValueError
        return result(f"plan decoder: {exc}"[:300])
    return result()
