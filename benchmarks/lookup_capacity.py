"""How many examples the demo LLM needs before it can look a word up in its prompt (an experiment).

Multiple-choice letters ("which option line names CT?") and closed "Is the imaging modality X?"
answers need an in-context match: find the prompt position holding a given word and read what
stands next to it. Small transformers learn such associative recall only after a plateau at
chance (the induction-head phase change); this script measures where that plateau ends for the
LLM of the demo architecture (``model/configs/model/demo.yaml``: Llama layers, width, heads, MLP)
on the cleanest form of the task, so the SFT budget can be read against it.

Tasks (``--task``), every ``w`` one token of ``--words`` distinct words:

* ``lookup``: ``Q w ; A w1 B w2 C w3 D w4 ; ->`` (four different options, ``w`` one of them),
  answer the letter of ``w`` (4-way, chance 0.25): the multiple-choice letter.
* ``letter``: ``; A . w1 \n B . w2 \n C . w3 \n D . w4 ; w (``, answer the letter of ``w`` (4-way):
  the multiple-choice letter in ``data.mcq_format: bracket`` ("The answer is CT (B)."), the letter
  two tokens before the option's text in the prompt, the option's text right before the answer.
* ``compare``: ``Q w1 ; f1 .. fk ; w2 ->`` with ``--fill`` distractor tokens between, answer
  yes/no for ``w1 == w2`` (half of them equal, chance 0.5): the closed "Is the imaging modality X?"
  answer after the model has named the modality. With ``--no-arrow`` the prompt ends at ``w2``, so
  the position that predicts the answer holds ``w2`` itself (one matching attention step decides
  it) instead of a token after it (the model must first move ``w2`` one position on): the
  ``adjacent`` and ``sentence`` forms of ``data.modality_format``.

Fresh random examples every step (no repetition); accuracy on ``--eval`` held-out examples every
``--every`` steps, with the examples seen so far. ``--mimetic`` initialises the attention with
:func:`model.vlm.modeling.init_mimetic_attention` (every head; the architecture key ``mimetic_heads``);
``--induction 1,2`` builds the LLM with attention biases and an induction circuit
(:func:`model.vlm.modeling.init_induction_heads`, the architecture key ``induction_offsets``; the
mimetic heads then start at the second layer).

Run: ``python benchmarks/lookup_capacity.py [--task compare --words 6 --mimetic --steps 3000
--batch 64 --lr 1e-3]``; prints one line per evaluation and writes
``benchmarks/out/lookup_capacity.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import yaml
from transformers import LlamaConfig, LlamaForCausalLM

from model.vlm.modeling import init_induction_heads, init_mimetic_attention

ROOT = Path(__file__).resolve().parents[1]
#: special token ids of the synthetic vocabulary; words follow them
Q, SEP, ARROW, LETTERS, DOT, NEWLINE, BRACKET = 0, 1, 2, (3, 4, 5, 6), 7, 8, 9
N_SPECIAL = 10


def lookup_batch(n: int, words: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` lookup prompts ``(n, 13)`` and the letter token each answers with ``(n,)``."""
    options = torch.stack([torch.randperm(words, generator=g)[:4] for _ in range(n)]) + N_SPECIAL
    pick = torch.randint(4, (n,), generator=g)
    named = options[torch.arange(n), pick]
    letters = torch.tensor(LETTERS).expand(n, 4)
    pairs = torch.stack([letters, options], dim=2).reshape(n, 8)
    q, sep, arrow = (torch.full((n, 1), v) for v in (Q, SEP, ARROW))
    prompts = torch.cat([q, named[:, None], sep, pairs, sep, arrow], dim=1)
    return prompts, torch.tensor(LETTERS)[pick]


def letter_batch(n: int, words: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` bracket-form prompts ``(n, 20)`` ending "w (" and the letter of ``w`` each answers with."""
    options = torch.stack([torch.randperm(words, generator=g)[:4] for _ in range(n)]) + N_SPECIAL
    pick = torch.randint(4, (n,), generator=g)
    named = options[torch.arange(n), pick]
    col = lambda v: torch.full((n, 1), v)
    lines = [t for j in range(4) for t in (col(LETTERS[j]), col(DOT), options[:, j : j + 1], col(NEWLINE))]
    prompts = torch.cat([col(SEP), *lines, col(SEP), named[:, None], col(BRACKET)], dim=1)
    return prompts, torch.tensor(LETTERS)[pick]


def compare_batch(
    n: int, words: int, fill: int, g: torch.Generator, *, arrow: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` comparison prompts ``(n, 6 + fill)`` and their answers (yes = ``LETTERS[0]``, no = ``LETTERS[1]``).

    Distractors are drawn from another ``words`` tokens (ids after the compared words). Without
    ``arrow`` the prompts end at the second compared word (``(n, 5 + fill)``).
    """
    a = torch.randint(words, (n,), generator=g)
    same = torch.rand(n, generator=g) < 0.5
    b = torch.where(same, a, (a + torch.randint(1, words, (n,), generator=g)) % words)
    filler = torch.randint(words, (n, fill), generator=g) + N_SPECIAL + words
    q, sep = (torch.full((n, 1), v) for v in (Q, SEP))
    parts = [q, a[:, None] + N_SPECIAL, sep, filler, sep, b[:, None] + N_SPECIAL]
    prompts = torch.cat([*parts, torch.full((n, 1), ARROW)] if arrow else parts, dim=1)
    return prompts, torch.where(same, LETTERS[0], LETTERS[1])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--architecture", default=str(ROOT / "model/configs/model/demo.yaml"))
    p.add_argument("--task", choices=("lookup", "letter", "compare"), default="lookup")
    p.add_argument("--words", type=int, default=60)
    p.add_argument("--fill", type=int, default=8, help="distractor tokens between the compared words")
    p.add_argument(
        "--no-arrow", action="store_true", help="compare: the answer is predicted at the second word itself"
    )
    p.add_argument("--mimetic", action="store_true", help="mimetic attention initialisation")
    p.add_argument(
        "--induction",
        default="",
        help="offsets of the first layer's positional heads (e.g. 1,2): an induction circuit",
    )
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--every", type=int, default=250)
    p.add_argument("--eval", type=int, default=500)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "benchmarks/out/lookup_capacity.json"))
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)

    arch = yaml.safe_load(Path(args.architecture).read_text())["architecture"]
    cfg = LlamaConfig(
        vocab_size=N_SPECIAL + 2 * args.words,
        hidden_size=arch["text_hidden"],
        intermediate_size=arch["intermediate"],
        num_hidden_layers=arch["text_layers"],
        num_attention_heads=arch["heads"],
        num_key_value_heads=arch["heads"],
        max_position_embeddings=arch["max_positions"],
        attention_bias=bool(args.induction),
    )
    model = LlamaForCausalLM(cfg)
    offsets = [int(x) for x in args.induction.split(",") if x]
    if args.mimetic:
        init_mimetic_attention(model.model.layers[1:] if offsets else model.model.layers)
    if offsets:
        init_induction_heads(
            model.model.layers,
            model.model.rotary_emb.inv_freq,
            offsets,
            span=cfg.max_position_embeddings,
            embed_std=cfg.initializer_range,
        )

    def batch(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        if args.task == "lookup":
            return lookup_batch(n, args.words, g)
        if args.task == "letter":
            return letter_batch(n, args.words, g)
        return compare_batch(n, args.words, args.fill, g, arrow=not args.no_arrow)

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    g_train = torch.Generator().manual_seed(args.seed + 1)
    test_x, test_y = batch(args.eval, torch.Generator().manual_seed(args.seed + 2))
    print(
        f"LLM {arch['text_layers']} layers x {arch['text_hidden']} wide, {arch['heads']} heads; "
        f"{'mimetic' if args.mimetic else 'default'} init{f', induction {offsets}' if offsets else ''}; {args.task}{' (no arrow)' if args.no_arrow else ''}, "
        f"{args.words} words, "
        f"batch {args.batch}, lr {args.lr}"
    )
    rows = []
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        x, y = batch(args.batch, g_train)
        loss = torch.nn.functional.cross_entropy(model(x).logits[:, -1], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % args.every == 0:
            with torch.no_grad():
                acc = (model(test_x).logits[:, -1].argmax(-1) == test_y).float().mean().item()
            row = {
                "step": step,
                "examples": step * args.batch,
                "loss": round(loss.item(), 3),
                "accuracy": round(acc, 3),
                "seconds": round(time.perf_counter() - start, 1),
            }
            rows.append(row)
            print(
                f"step {step:5d}  examples {row['examples']:7d}  loss {row['loss']:.3f}  "
                f"held-out accuracy {acc:.3f}  ({row['seconds']:.0f} s)",
                flush=True,
            )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "architecture": arch, "curve": rows}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
