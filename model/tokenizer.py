"""The XMed tokenizer: byte-level BPE trained offline, coordinate tokens and a chat template.

* :func:`train_tokenizer` trains a byte-level BPE (``tokenizers``) on conversation texts and wraps
  it as a ``transformers.PreTrainedTokenizerFast`` that saves/loads with
  ``save_pretrained``/``from_pretrained`` (``tokenizer.json`` + ``chat_template.jinja``).
* Reserved tokens: :data:`SPECIAL_TOKENS` (``<pad> <s> </s> <unk> <|im_start|> <|im_end|> <image>
  <audio>``; skipped when decoding with ``skip_special_tokens=True``) and :data:`GROUNDING_TOKENS`
  (``<ref> </ref> <box> </box>``; whole tokens that are KEPT when decoding, because the answer's
  boxes must survive into the text that ``model.data.boxes.parse_boxes`` reads).
* Coordinate tokens: every integer "0".."1000" is one added token, so ``"347"`` is one token and
  ``"[[120, 340, 560, 780]]"`` is brackets, commas and spaces plus exactly four coordinate tokens.
  Added tokens are matched leftmost-longest before BPE, so any digit run splits into integers of
  at most 1000 (``"1234"`` -> ``"123" "4"``). BPE training splits digits individually, so no
  multi-digit merges waste vocabulary.
* Chat template (InternVL2 / ChatML): ``<|im_start|>user\\n...<|im_end|>\\n<|im_start|>assistant\\n
  ...<|im_end|>\\n``; generation stops at ``<|im_end|>`` (the tokenizer's ``eos_token``). No BOS is
  prepended.

CLI: ``python -m model.tokenizer --shards data/ci/curated/shards --out runs/ci/tokenizer
--config model/configs/model/ci.yaml`` (or ``--vocab-size N``).
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import yaml
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from model.data.io import atomic_dir, iter_parquet_rows

__all__ = [
    "CHAT_TEMPLATE",
    "COORDINATE_MAX",
    "GROUNDING_TOKENS",
    "ROLE_NAMES",
    "SPECIAL_TOKENS",
    "coordinate_token_ids",
    "iter_training_texts",
    "load_tokenizer",
    "main",
    "train_tokenizer",
]

#: Control tokens, in id order 0..7 (``<pad>`` is id 0).
SPECIAL_TOKENS: tuple[str, ...] = (
    "<pad>",
    "<s>",
    "</s>",
    "<unk>",
    "<|im_start|>",
    "<|im_end|>",
    "<image>",
    "<audio>",
)
#: Grounding markup tokens (ids 8..11); not "special", so decoding keeps them.
GROUNDING_TOKENS: tuple[str, ...] = ("<ref>", "</ref>", "<box>", "</box>")
#: Coordinates in text are integers 0..COORDINATE_MAX (InternVL's 0-1000 scale).
COORDINATE_MAX = 1000
#: Conversation roles of the instruction data -> chat-template roles.
ROLE_NAMES: dict[str, str] = {"human": "user", "gpt": "assistant", "system": "system"}

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _bpe_skeleton() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    return tok


_RESERVED_RE = re.compile("|".join(re.escape(t) for t in SPECIAL_TOKENS + GROUNDING_TOKENS))


def _split_reserved(texts: Iterable[str]) -> Iterator[str]:
    """Yield the pieces of each text between reserved tokens, as the encoder will see them.

    At encoding time added tokens are split out before BPE; training on the same pieces keeps
    BPE from spending merges on fragments such as ``<|`` or ``imag``.
    """
    for text in texts:
        yield from (piece for piece in _RESERVED_RE.split(text) if piece)


def train_tokenizer(
    texts: Iterable[str],
    *,
    vocab_size: int,
    out_dir: str | os.PathLike | None = None,
    coordinate_tokens: bool = True,
) -> PreTrainedTokenizerFast:
    """Train the byte-level BPE tokenizer and add the reserved and coordinate tokens.

    Args:
        texts: training texts (e.g. :func:`iter_training_texts`); streamed, not held in memory.
        vocab_size: size of the learned BPE vocabulary INCLUDING the 256 byte symbols and the
            12 reserved tokens; the 991 coordinate tokens "10".."1000" come on top ("0".."9"
            are byte symbols already), so ``len(tok) == vocab_size + 991`` when the corpus
            supports that many merges (fewer otherwise).
        out_dir: if given, ``save_pretrained`` there atomically.
        coordinate_tokens: add the coordinate tokens (False: numbers stay BPE digit pieces, for
            the localisation ablation only; the platform's models always have them).

    Returns:
        The wrapped tokenizer with the chat template set.

    Raises:
        ValueError: ``vocab_size`` cannot even hold the byte alphabet and reserved tokens.
    """
    reserved = list(SPECIAL_TOKENS) + list(GROUNDING_TOKENS)
    minimum = 256 + len(reserved)
    if vocab_size < minimum:
        raise ValueError(f"vocab_size={vocab_size} is below the byte alphabet + reserved tokens ({minimum})")
    tok = _bpe_skeleton()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=reserved,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_split_reserved(texts), trainer)
    # Re-declare the reserved tokens as added tokens (same ids): control tokens special,
    # grounding tokens normal so that decode(skip_special_tokens=True) keeps them.
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in GROUNDING_TOKENS])
    if coordinate_tokens:
        tok.add_tokens(
            [AddedToken(str(v), special=False, normalized=False) for v in range(COORDINATE_MAX + 1)]
        )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="<|im_end|>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens=["</s>", "<|im_start|>", "<image>", "<audio>"],
        model_max_length=1 << 30,
    )
    wrapped.chat_template = CHAT_TEMPLATE
    if out_dir is not None:
        with atomic_dir(out_dir) as tmp:
            wrapped.save_pretrained(tmp)
    return wrapped


def load_tokenizer(path: str | os.PathLike) -> PreTrainedTokenizerFast:
    """Load a tokenizer saved by :func:`train_tokenizer` (offline; ``local_files_only``).

    Raises:
        FileNotFoundError: ``path`` has no ``tokenizer.json``.
    """
    if not (Path(path) / "tokenizer.json").is_file():
        raise FileNotFoundError(
            f"no tokenizer.json in {path}; train one with model.tokenizer.train_tokenizer"
        )
    return PreTrainedTokenizerFast.from_pretrained(str(path), local_files_only=True)


def coordinate_token_ids(tokenizer: PreTrainedTokenizerFast) -> list[int]:
    """Token ids of "0".."1000" in value order (ids are NOT contiguous: "0".."9" are byte symbols)."""
    return tokenizer.convert_tokens_to_ids([str(v) for v in range(COORDINATE_MAX + 1)])


def iter_training_texts(shards_dir: str | os.PathLike) -> Iterator[str]:
    """Stream one text per curated instruction row: its turns joined by newlines.

    Args:
        shards_dir: a curated ``shards/`` folder (or one Parquet file) of INSTRUCTION_SCHEMA rows.

    Raises:
        FileNotFoundError: no Parquet files there.
        ValueError: a row has no conversations (names the file row id).
    """
    for row in iter_parquet_rows(shards_dir, columns=["id", "conversations"]):
        turns = row.get("conversations") or []
        if not turns:
            raise ValueError(f"{shards_dir}: instruction {row.get('id')!r}: field 'conversations' is empty")
        yield "\n".join(t["value"] for t in turns)


def main(argv: list[str] | None = None) -> None:
    """Train a tokenizer on curated shards and save it (vocab size given or read from a model YAML)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", required=True, help="curated shards folder")
    ap.add_argument("--out", required=True, help="output folder (save_pretrained)")
    size = ap.add_mutually_exclusive_group(required=True)
    size.add_argument("--vocab-size", type=int, help="learned BPE vocabulary size")
    size.add_argument("--config", help="model/configs/model/<profile>.yaml (its tokenizer.vocab_size)")
    args = ap.parse_args(argv)
    vocab_size = args.vocab_size
    if args.config:
        with open(args.config, encoding="utf-8") as fh:
            vocab_size = int(yaml.safe_load(fh)["tokenizer"]["vocab_size"])
    tok = train_tokenizer(iter_training_texts(args.shards), vocab_size=vocab_size, out_dir=args.out)
    print(f"tokenizer with {len(tok)} tokens written to {args.out}")


if __name__ == "__main__":
    main()
