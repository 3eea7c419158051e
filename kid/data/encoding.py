"""A split's prompts as token ids: prompted and tokenised once per host, with a report of
what fitting them to their budgets left out.

`encode_split` gives an `EncodedSplit` (a grain data source) whose prompts fit a token
budget (`prompts.Prompter` drops items in a fixed order, never the question) and whose
targets are the normalised SQL + EOS; `format_report` makes its report one line.
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np

from kid.data import prompts, spider
from kid.data import tokenizer as tokenizer_lib


@dataclasses.dataclass(frozen=True)
class EncodedSplit:
    """Token ids of one split; a grain data source of {"prompt", "target", "index"}."""

    examples: tuple[spider.Example, ...]
    prompts: tuple[np.ndarray, ...]  # int32, special tokens (encoder inputs: + EOS) included
    targets: tuple[np.ndarray, ...]  # int32, normalised SQL + EOS
    report: dict  # what was left out: prompt items, databases, target tokens (format_report)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict:
        return {"prompt": self.prompts[index], "target": self.targets[index], "index": index}


class _RecentEncodings:
    """Prompt token ids, remembered for the last few texts measured: the prompt the
    Prompter settles on is among them, so it is not tokenised a second time.

    With `end_with_eos` the ids end with exactly one EOS (appended when the tokenizer did
    not add it): the Prompter's budget counts these ids, so it counts that EOS too.
    """

    def __init__(self, tok: tokenizer_lib.Tokenizer, *, end_with_eos: bool = False, size: int = 4):
        self._tok = tok
        self._end_with_eos = end_with_eos
        self._size = size
        self._ids: collections.OrderedDict[str, list[int]] = collections.OrderedDict()

    def _encode(self, text: str) -> list[int]:
        ids = self._tok.encode([text], add_special_tokens=True)[0]
        if not self._end_with_eos:
            return ids
        eos = self._tok.eos_id
        end = len(ids)
        while end and ids[end - 1] == eos:
            end -= 1
        return ids[:end] + [eos]

    def ids(self, text: str) -> list[int]:
        if text in self._ids:
            self._ids.move_to_end(text)
        else:
            self._ids[text] = self._encode(text)
            if len(self._ids) > self._size:
                self._ids.popitem(last=False)
        return self._ids[text]

    def count(self, text: str) -> int:
        return len(self.ids(text))


def encode_split(
    dataset: spider.Dataset,
    tok: tokenizer_lib.Tokenizer,
    options: prompts.PromptOptions,
    *,
    prompt_budget: int,
    max_target_len: int,
    end_with_eos: bool = False,
) -> EncodedSplit:
    """Prompts and tokenises every example.

    Prompts fit `prompt_budget` tokens (see `prompts.Prompter`), special tokens included;
    with `end_with_eos` (encoder inputs) each ends with exactly one EOS, within the budget.
    Targets are the normalised SQL + EOS, and longer than `max_target_len` they are cut
    (EOS lost) and counted in the report.
    """
    encodings = _RecentEncodings(tok, end_with_eos=end_with_eos)
    prompter = prompts.Prompter(
        dataset.schemas,
        dataset.db_dir,
        options,
        count_tokens=encodings.count,
        budget=prompt_budget,
    )
    prompt_ids = [encodings.ids(prompter(e).text) for e in dataset.examples]
    sql = [prompts.normalize_sql(e.query) for e in dataset.examples]
    target_ids = [ids + [tok.eos_id] for ids in tok.encode(sql, add_special_tokens=False)]
    cut = sum(len(t) > max_target_len for t in target_ids)
    report = {
        "examples": len(prompt_ids),
        "prompts": prompter.stats.summary(),
        "schema_only": prompter.stats.schema_only,
        "missing_schema": prompter.stats.missing_schema,
        "truncated_prompts": prompter.stats.truncated,
        "dropped_prompt_items": dict(prompter.stats.dropped),
        "truncated_targets": cut,
        "prompt_budget": prompt_budget,
        "max_target_len": max_target_len,
    }
    return EncodedSplit(
        tuple(dataset.examples),
        tuple(np.asarray(p, np.int32) for p in prompt_ids),
        tuple(np.asarray(t[:max_target_len], np.int32) for t in target_ids),
        report,
    )


def lost_anything(report: dict) -> bool:
    """Whether prompts or targets lost content (items, schemas, values, tokens)."""
    keys = ("truncated_prompts", "truncated_targets", "schema_only", "missing_schema")
    return any(report.get(k) for k in keys)


def format_report(report: dict) -> str:
    """`EncodedSplit.report` as one line for a log or a console."""
    text = report["prompts"]
    if "prompt_budget" in report:
        text += f" (budget {report['prompt_budget']} tokens)"
    cut = report["truncated_targets"]
    limit = report.get("max_target_len")
    if cut:
        text += f"; {cut} of {report['examples']} targets cut to {limit} tokens (EOS lost)"
    else:
        text += f"; no target cut{f' (at most {limit} tokens)' if limit else ''}"
    return text


def tokenizer_corpus(dataset: spider.Dataset, options: prompts.PromptOptions) -> list[str]:
    """Untruncated prompts and normalised SQL: the text to train a BPE tokenizer on."""
    prompter = prompts.Prompter(dataset.schemas, dataset.db_dir, options)
    return [prompter(e).text for e in dataset.examples] + [
        prompts.normalize_sql(e.query) for e in dataset.examples
    ]
