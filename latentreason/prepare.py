"""From a recipe to encoded data: read the pairs, choose the output kind (and say why), encode them.

    read_pairs(recipe)                    the train / eval pairs of a built-in task or of the recipe's files
    guess_output_kind(pairs)              aligned or label, from every row; rows that disagree are an error
    prepare_data(recipe, tokenizer)       the encoder and the encoded splits: in memory, streamed
                                          (`data.streaming`) or as text pairs for the LM output paths

`latentreason.pipeline` trains on what this returns; `latentreason.inference` re-encodes new inputs
with the encoder saved beside the run.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import datasets

from . import recipe as recipes
from . import streaming
from .backbone import resolve_base_model
from .config import LM_OUTPUTS
from .data import (
    DataError,
    Encoder,
    PairEncoder,
    infer_label_names,
    load_pairs,
    row_origin,
    row_origins,
    skipped_rows,
    sort_label_names,
)
from .tasks import get_task
from .text_pairs import TextPairEncoder

logger = logging.getLogger(__name__)


@dataclass
class PreparedData:
    """Encoded training and evaluation sets and how they were encoded."""

    train: datasets.Dataset
    eval: datasets.Dataset | None
    encoder: Encoder
    output_kind: str
    label_names: list[str]
    max_length: int
    summary: list[str] = dataclasses.field(default_factory=list)  # what was read, printed when training starts
    answer_slots: int | None = None  # the LM paths: sized from the data when the recipe says auto


@dataclass
class RawPairs:
    """The recipe's pairs as read: splits, output kind, and what to tell the user about them."""

    train: datasets.Dataset
    eval: datasets.Dataset | None
    output_kind: str
    label_names: list[str] | None  # None: inferred from the data
    evidence: str  # why this output kind
    skipped: list[str] = dataclasses.field(default_factory=list)  # "file, lines ...: why", for the summary
    sources: tuple[str, str | None] = ("", None)  # where train and eval came from


def load_tokenizer(recipe: recipes.Recipe) -> Any:
    """The base model's tokenizer (with a padding token: the EOS token when it has none)."""
    from transformers import AutoTokenizer

    base = resolve_base_model(recipe.model.base, recipe.model.revision)  # fails in one line when it cannot load
    tokenizer = AutoTokenizer.from_pretrained(base.path, revision=base.revision, trust_remote_code=recipe.model.trust_remote_code)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"The tokenizer of {recipe.model.base} has neither a padding nor an EOS token; set tokenizer.pad_token.")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def read_pairs(recipe: recipes.Recipe) -> RawPairs:
    """The recipe's raw pairs, with the output kind (said by the recipe or the task, or read from the rows)."""
    data = recipe.data
    if data.task is not None:
        task = get_task(data.task, **data.task_options)
        return RawPairs(task.to_dataset("train"), task.to_dataset("test"), task.output_kind, task.labels(),
                        f"task {data.task!r} says so", sources=(f"task {data.task}, train split", f"task {data.task}, test split"))
    columns = {"input_column": data.input_column, "output_column": data.output_column, "skip_bad_rows": data.skip_bad_rows}
    train_pairs = load_pairs(data.train_file, **columns)
    eval_pairs = load_pairs(data.eval_file, **columns) if data.eval_file else None
    sources = (str(data.train_file), str(data.eval_file) if data.eval_file else None)
    skipped = [f"{name}: {count} malformed row{'s' if count > 1 else ''} (see the warning above)" for name, pairs in zip(sources, (train_pairs, eval_pairs))
               if pairs is not None and (count := skipped_rows(pairs))]
    if text_output(recipe) is not None:  # free-text answers through the LM: nothing to line up
        return RawPairs(train_pairs, eval_pairs, "text", None, f"reasoner.output={text_output(recipe)}", skipped, sources)
    if data.output_kind is None:
        choice = guess_output_kind(train_pairs, sources[0], skip_bad_rows=data.skip_bad_rows)
        output_kind, evidence = choice.kind, choice.evidence
        if choice.skipped:
            skipped.append(f"{row_origins(train_pairs, choice.skipped)}: of the rarer output kind")
            train_pairs = train_pairs.select(sorted(set(range(len(train_pairs))) - set(choice.skipped)))
    else:
        output_kind, evidence = data.output_kind, "data.output_kind says so"
    if output_kind == "aligned":  # every row must line up; a row that does not is named (or skipped), never trained on
        train_pairs, dropped = aligned_rows(train_pairs, sources[0], data.skip_bad_rows)
        skipped += dropped
        if eval_pairs is not None:
            eval_pairs, dropped = aligned_rows(eval_pairs, str(sources[1]), data.skip_bad_rows)
            skipped += dropped
    return RawPairs(train_pairs, eval_pairs, output_kind, None, evidence, skipped, sources)


def _cells(text: str) -> int:
    return len(text.split())


def _row_kinds(pairs: datasets.Dataset) -> tuple[list[int], list[int]]:
    """(rows that line up: as many output cells as input cells, more than one; rows that do not).

    A row with one input cell and one output cell is evidence for neither kind."""
    aligned, unaligned = [], []
    for index, (text_in, text_out) in enumerate(zip(pairs["input"], pairs["output"])):
        cells_in, cells_out = _cells(text_in), _cells(text_out)
        if cells_in != cells_out:
            unaligned.append(index)
        elif cells_out > 1:
            aligned.append(index)
    return aligned, unaligned


@dataclass
class OutputKindChoice:
    """The output kind read from the data, the evidence for it, and the rows skipped because they disagree."""

    kind: str
    evidence: str
    skipped: list[int] = dataclasses.field(default_factory=list)  # indices into the pairs


def guess_output_kind(pairs: datasets.Dataset, where: str = "the pairs", *, skip_bad_rows: bool = False) -> OutputKindChoice:
    """`aligned` when every output lines up with its input cell for cell, `label` when none does.

    Never a guess from a majority: when some rows line up and others do not, a `DataError` names the
    file, lines of both kinds and the fixes. With `skip_bad_rows` the rows of the rarer kind are skipped
    (and reported) instead; `data.output_kind` says the kind outright.
    """
    aligned, unaligned = _row_kinds(pairs)
    if not aligned:
        example = f"e.g. {row_origin(pairs, unaligned[0])}: {_cells(pairs[unaligned[0]]['input'])} input cells, " \
                  f"{_cells(pairs[unaligned[0]]['output'])} output cells" if unaligned else "every output is one cell"
        return OutputKindChoice("label", f"no output lines up with its input cell for cell ({example}): each whole output is a class")
    if not unaligned:
        return OutputKindChoice("aligned", f"all {len(aligned)} rows with more than one cell have one output cell per input cell")
    if not skip_bad_rows:
        first_unaligned = pairs[unaligned[0]]
        raise DataError(
            f"{where}: the rows disagree on the output kind. {len(aligned)} rows line up cell for cell (aligned: one label per "
            f"input cell, e.g. {row_origin(pairs, aligned[0])}), {len(unaligned)} do not (label: one class per whole output, "
            f"{row_origins(pairs, unaligned)}; {row_origin(pairs, unaligned[0]).rsplit(', ', 1)[-1]} has "
            f"{_cells(first_unaligned['input'])} input cells and {_cells(first_unaligned['output'])} output cells). "
            "Fix or remove the rows that are wrong, set data.output_kind=aligned or data.output_kind=label to say which "
            "is meant, or set data.skip_bad_rows=true to skip the rows of the rarer kind."
        )
    kind, keep, skip = ("aligned", aligned, unaligned) if len(aligned) >= len(unaligned) else ("label", unaligned, aligned)
    reason = "do not line up with their inputs" if kind == "aligned" else "line up cell for cell"
    logger.warning("%s: skipped %s: they %s, unlike the other %d rows (data.skip_bad_rows).", where, row_origins(pairs, skip), reason, len(keep))
    return OutputKindChoice(kind, f"{len(keep)} rows are {kind}; {len(skip)} rows that {reason} were skipped", skip)


def aligned_rows(pairs: datasets.Dataset, where: str, skip_bad_rows: bool) -> tuple[datasets.Dataset, list[str]]:
    """`pairs` whose every output lines up with its input, and where the skipped ones came from.

    A misaligned row is an error naming its file and line, or (with `skip_bad_rows`) skipped and reported."""
    bad = [index for index, (i, o) in enumerate(zip(pairs["input"], pairs["output"])) if _cells(i) != _cells(o)]
    if not bad:
        return pairs, []
    if not skip_bad_rows:
        raise DataError(
            f"{row_origins(pairs, bad)}: the output has another number of cells than the input; "
            "aligned outputs need one output cell per whitespace-separated input cell. Fix or remove "
            f"{'it' if len(bad) == 1 else 'them'}, or set data.skip_bad_rows=true to skip {'it' if len(bad) == 1 else 'them'}."
        )
    skipped = row_origins(pairs, bad)
    logger.warning("skipped %s (another number of output cells than input cells; data.skip_bad_rows).", skipped)
    keep = sorted(set(range(len(pairs))) - set(bad))
    return pairs.select(keep), [f"{skipped}: another number of output cells than input cells"]


def text_output(recipe: recipes.Recipe) -> str | None:
    """The recipe's LM output path (`reasoner.output` lm_head or latent_prefix), or None for the label outputs."""
    output = recipe.reasoner.get("output")
    return output if output in LM_OUTPUTS else None


def prepare_data(recipe: recipes.Recipe, tokenizer: Any) -> PreparedData:
    """Read, check and tokenize the recipe's data (labels from all splits; max_length from the data when unset)."""
    if recipe.data.streaming:
        return prepare_streamed_data(recipe, tokenizer)
    if text_output(recipe) is not None:
        return prepare_text_data(recipe, tokenizer)
    pairs = read_pairs(recipe)
    train_pairs, eval_pairs, output_kind, label_names = pairs.train, pairs.eval, pairs.output_kind, pairs.label_names
    if output_kind == "text":
        raise recipes.RecipeError(
            f"Task {recipe.data.task!r} answers in free text (output kind 'text': an answer need not line up with the input), "
            "which the label heads cannot write. Train it through a causal LM: reasoner.output=lm_head (or latent_prefix) "
            "with a causal LM as model.base, e.g. packaged:SmolLM2-135M-Instruct (see recipes/arc.yaml)."
        )
    if output_kind not in ("aligned", "label"):
        raise recipes.RecipeError(f"data.output_kind={output_kind!r} is not supported by the trainer yet; use 'aligned' or 'label'.")
    if label_names is None:
        every_split = datasets.concatenate_datasets([train_pairs, eval_pairs]) if eval_pairs is not None else train_pairs
        label_names = infer_label_names(every_split, output_kind)
    encoder = PairEncoder(tokenizer, output_kind, label_names, max_length=recipe.data.max_length)
    train_set = encoder.encode_dataset(train_pairs, desc="Tokenizing train")
    eval_set = encoder.encode_dataset(eval_pairs, desc="Tokenizing eval") if eval_pairs is not None else None
    lengths = [len(ids) for ids in train_set["input_ids"]] + ([len(ids) for ids in eval_set["input_ids"]] if eval_set else [])
    max_length = recipe.data.max_length or max(lengths)
    encoder.max_length = max_length
    shown = " ".join(label_names[:20]) + (f" ... ({len(label_names) - 20} more)" if len(label_names) > 20 else "")
    longest = max(_cells(text) for text in train_pairs["input"])
    summary = [
        *_split_lines(pairs),
        f"output kind: {output_kind} ({pairs.evidence})",
        f"labels: {len(label_names)}{' per cell' if output_kind == 'aligned' else ' classes'}: {shown}",
        f"lengths: inputs up to {longest} cells, {max(lengths)} tokens; max_length {max_length}",
        *(f"skipped: {line}" for line in pairs.skipped),
    ]
    return PreparedData(train_set, eval_set, encoder, output_kind, label_names, max_length, summary)


def prepare_streamed_data(recipe: recipes.Recipe, tokenizer: Any) -> PreparedData:
    """`data.streaming`: the pairs files as streams (`latentreason.streaming`), after a first pass over each that checks
    every row and finds what the in-memory path reads off the held rows (row count, output kind, labels, max_length)."""
    data, training = recipe.data, recipe.training
    needs = [
        (data.task is not None, "data.train_file (a built-in task is generated in memory: set data.streaming: false)"),
        (text_output(recipe) is not None, "a label output: the LM paths (reasoner.output lm_head, latent_prefix) read their data "
                                          "into memory (set data.streaming: false)"),
        (training.use_feature_cache, "training.use_feature_cache=false (the cache stores the features of a finite dataset; the "
                                     "backbone then runs once per batch)"),
        (recipe.model.layer == "auto", "a numbered model.layer (auto probes the layers on rows held in memory), e.g. model.layer=-1"),
        (training.schedule != "per_batch", "training.schedule=per_batch (the persistent batch takes examples by index)"),
        (bool(training.calibrate_halting), "training.calibrate_halting=0 (it holds out a random slice, which needs the rows by index)"),
    ]
    missing = [need for failing, need in needs if failing]
    if missing:
        raise recipes.RecipeError("data.streaming: true needs " + "; and ".join(missing) + ".")
    columns = {"input_column": data.input_column, "output_column": data.output_column, "skip_bad_rows": data.skip_bad_rows}
    measure = tokenizer if data.max_length is None else None  # token lengths only when max_length comes from the data
    scans = [streaming.scan_pairs(path, **columns, tokenizer=measure) for path in (data.train_file, data.eval_file) if path]
    guessed = data.output_kind is None
    if guessed:
        output_kind, evidence = scans[0].kind(data.skip_bad_rows)
    else:
        output_kind, evidence = data.output_kind, "data.output_kind says so"
    keeps = [scan.keep(output_kind, guessed and index == 0) for index, scan in enumerate(scans)]
    if output_kind == "aligned" and not data.skip_bad_rows:
        bad = next((scan for scan in scans if scan.misaligned), None)
        if bad is not None:
            raise DataError(
                f"{bad.first_misaligned}: the output has another number of cells than the input ({bad.misaligned} such rows in "
                f"{bad.path}); aligned outputs need one output cell per whitespace-separated input cell. Fix or remove them, "
                "or set data.skip_bad_rows=true to skip them."
            )
    label_names = sort_label_names(set().union(*(scan.label_names(output_kind) for scan in scans)))
    encoder = PairEncoder(tokenizer, output_kind, label_names, max_length=data.max_length)
    max_length = data.max_length or max(scan.longest_tokens for scan in scans)
    encoder.max_length = max_length
    streams = [
        streaming.EncodedStream(
            streaming.stream_pairs(scan.path, **columns, keep=keep), encoder, scan.count(keep),
            shuffle_buffer=data.shuffle_buffer if index == 0 else 0, seed=training.seed, name=scan.path,
        )
        for index, (scan, keep) in enumerate(zip(scans, keeps))
    ]
    shown = " ".join(label_names[:20]) + (f" ... ({len(label_names) - 20} more)" if len(label_names) > 20 else "")
    order = f"shuffled {data.shuffle_buffer} rows at a time" if data.shuffle_buffer else "in file order"
    summary = [
        f"train: {len(streams[0])} rows streamed from {data.train_file} ({order}; a first pass checked every row)",
        f"eval: {len(streams[1])} rows streamed from {data.eval_file}" if len(streams) > 1 else
        "eval: none (set data.eval_file to score held-out rows after training)",
        f"output kind: {output_kind} ({evidence})",
        f"labels: {len(label_names)}{' per cell' if output_kind == 'aligned' else ' classes'}: {shown}",
        f"lengths: inputs up to {max(scan.longest_cells for scan in scans)} cells"
        + (f", {max_length} tokens" if data.max_length is None else "") + f"; max_length {max_length}",
        *(f"skipped: {scan.path}: {scan.skipped} malformed row(s)" for scan in scans if scan.skipped),
        *(f"skipped: {scan.path}: {scan.rows - len(stream)} row(s) of the other output kind" for scan, stream in zip(scans, streams)
          if scan.rows != len(stream)),
    ]
    return PreparedData(streams[0], streams[1] if len(streams) > 1 else None, encoder, output_kind, label_names, max_length, summary)


def _split_lines(pairs: RawPairs) -> list[str]:
    train_source, eval_source = pairs.sources
    lines = [f"train: {len(pairs.train)} rows from {train_source}"]
    if pairs.eval is not None:
        lines.append(f"eval: {len(pairs.eval)} rows from {eval_source}")
    else:
        lines.append("eval: none (set data.eval_file to score held-out rows after training)")
    return lines


def prepare_text_data(recipe: recipes.Recipe, tokenizer: Any) -> PreparedData:
    """Tokenize text pairs for an LM output path with `TextPairEncoder` (answers are token ids of the base LM).

    The pairs come from data.train_file / data.eval_file, or from a built-in task (its train and test
    splits): a task's output is text like any file's, so e.g. ARC's answer grids go through the same encoder.
    """
    output = text_output(recipe)
    data = recipe.data
    pairs = read_pairs(recipe)
    train_pairs, eval_pairs = pairs.train, pairs.eval
    every_answer = list(train_pairs["output"]) + (list(eval_pairs["output"]) if eval_pairs is not None else [])
    longest_answer = max(len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in every_answer)
    if output == "lm_head" and recipe.reasoner.get("num_answer_slots") is None:
        slots, how = longest_answer + 1, "sized from the data: the longest answer + its end token"
    else:
        slots = recipe.reasoner_config(output=output).answer_slots
        how = "latent thoughts the LM reads" if output == "latent_prefix" else "reasoner.num_answer_slots"
    # Without data.max_length every prompt is accepted, and max_length becomes the longest one.
    encoder = TextPairEncoder(tokenizer, output, num_slots=slots, max_length=data.max_length or 1_000_000)

    train_set = encoder.encode_dataset(train_pairs, desc="Tokenizing train")
    eval_set = encoder.encode_dataset(eval_pairs, desc="Tokenizing eval") if eval_pairs is not None else None
    lengths = [len(ids) for ids in train_set["input_ids"]] + ([len(ids) for ids in eval_set["input_ids"]] if eval_set else [])
    encoder.max_length = data.max_length or max(lengths)
    summary = [
        *_split_lines(pairs),
        f"output: text through the LM (reasoner.output={output})",
        f"lengths: prompts up to {max(lengths)} tokens (max_length {encoder.max_length}); answers up to {longest_answer} tokens; "
        f"{slots} answer slots ({how})",
        *(f"skipped: {line}" for line in pairs.skipped),
    ]
    return PreparedData(train_set, eval_set, encoder, output, [], encoder.max_length, summary, answer_slots=slots)
