"""Vocabulary adaptation: a T5-style tokenizer in which every gene, cell type and drug is one token.

ChatCell added gene symbols to a T5 tokenizer with `add_tokens`; each added word then costs two
tokens (a standalone "▁" and the word), about 200 tokens per 100-gene sentence. We instead put each
new word into the Unigram model itself as the piece "▁WORD" with score 0, the highest a piece can
have (scores are log-probabilities). The Metaspace pre-tokenizer turns " WORD" into "▁WORD", and
Viterbi segmentation then always prefers the single piece, so a 100-gene sentence is 100 tokens
plus EOS and decodes back to the exact space-joined sentence. Multi-word cell types become one
piece ("▁CD4+/CD25▁T▁Reg") because the pre-tokenizer does not split on spaces (`split=False`).

New pieces are appended after the highest existing id, so every base id stays put; a word that is
already a piece keeps its id (its score is raised to 0) and is recorded as a collision.

Offline (the default, since no pretrained T5 tokenizer ships with the package) the base is a
Unigram model trained on the instruction text with the words to be added removed, in T5's id
layout: <pad>=0, </s>=1, <unk>=2.
"""

from __future__ import annotations

import io
import json
import logging
import re
import string
from dataclasses import dataclass
from pathlib import Path

from chatcell_jax.atomic import atomic_dir
from chatcell_jax.errors import InputError
from chatcell_jax.singlecell import manifest as manifest_lib
from chatcell_jax.singlecell.manifest import Manifest

log = logging.getLogger(__name__)

VOCAB_FILE = "chatcell_vocab.json"
SPECIALS = ("<pad>", "</s>", "<unk>")
META = "\u2581"
_BAD_CHARS = re.compile(r"[\s\x00-\x1f\x7f]")


@dataclass(frozen=True)
class NewWords:
    """The whole-word tokens to add, in their deterministic order."""

    genes: list[str]
    cell_types: list[str]
    drugs: list[str]

    def all(self) -> list[str]:
        seen, out = set(), []
        for word in [*self.genes, *self.cell_types, *self.drugs]:
            if word not in seen:
                seen.add(word)
                out.append(word)
        return out


def words_from_manifest(manifest: Manifest) -> NewWords:
    """Genes by frequency (then name), cell types and drugs sorted: a stable order for stable ids."""
    genes = list(manifest.genes)
    words = NewWords(genes, sorted(manifest.labels.cell_type), sorted(manifest.labels.drug))
    if not words.all():
        raise InputError("the manifest has no genes, cell types or drugs to add; prepare the data first")
    for word in genes:
        if _BAD_CHARS.search(word) or not word:
            raise InputError(
                f"gene symbol {word!r} contains whitespace or control characters; fix the symbols "
                "(chatcell prepare replaces whitespace with '_')"
            )
    for word in [*words.cell_types, *words.drugs]:
        if re.search(r"[\x00-\x1f\x7f]", word) or not word.strip():
            raise InputError(f"label {word!r} is empty or contains control characters")
    return words


# --- the base model --------------------------------------------------------------------------------


def _training_text(data_dir: Path, words: NewWords) -> list[str]:
    """Instruction text with the words to be added removed, so the base vocabulary spends its
    pieces on the language around them."""
    from chatcell_jax.singlecell.records import iter_all

    drop = set(words.all())
    lines = []
    for record in iter_all(data_dir, ("train",)):
        for text in (record["source"], record["target"]):
            for label in words.cell_types + words.drugs:
                text = text.replace(label, " ")
            kept = " ".join(w for w in text.split() if w.strip(".,:;?!") not in drop)
            if kept:
                lines.append(kept)
    return lines


def train_base(lines: list[str], vocab_size: int, required_chars: str = ""):
    """A Unigram tokenizer in T5's layout, trained with SentencePiece on `lines`.

    SentencePiece (one thread, input in sorted order) gives the same model byte for byte on every
    run; the `tokenizers` trainer does not (its hash maps order ties at random). The pieces are
    then loaded into a `tokenizers` Unigram model so the result is a standard fast tokenizer.
    Every printable ASCII character (and `required_chars`) gets a piece, so an unknown gene splits
    into pieces and still decodes exactly instead of becoming <unk>.
    """
    import sentencepiece as spm
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers

    required = sorted(
        set(string.ascii_letters + string.digits + string.punctuation + required_chars) - set(string.whitespace)
    )
    if vocab_size < len(required) + 3:
        raise InputError(
            f"--sp-vocab-size {vocab_size} is too small: the base needs at least {len(required) + 3} "
            "pieces (every printable character and the three special tokens)"
        )
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sorted(set(lines))),
        model_writer=buffer,
        model_type="unigram",
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        pad_piece="<pad>",
        eos_piece="</s>",
        unk_piece="<unk>",
        normalization_rule_name="identity",
        character_coverage=1.0,
        num_threads=1,
        shuffle_input_sentence=False,
        minloglevel=2,
        required_chars="".join(required),
    )
    processor = spm.SentencePieceProcessor(model_proto=buffer.getvalue())
    vocab = [(processor.id_to_piece(i), processor.get_score(i)) for i in range(processor.get_piece_size())]
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    tokenizer.normalizer = normalizers.Sequence([normalizers.Replace(" {2,}", " "), normalizers.Strip()])
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=META, prepend_scheme="always", split=False)
    tokenizer.decoder = decoders.Sequence([decoders.Replace(META, " "), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS])
    return tokenizer


def load_base(base: str) -> dict:
    """tokenizer.json of an existing T5-style tokenizer (local directory, or hub id when online)."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(base, use_fast=True)
    except Exception as err:  # missing files, offline hub id, broken JSON
        raise InputError(
            f"cannot load a tokenizer from {base!r} ({type(err).__name__}: {err}); give a local "
            "directory with tokenizer.json or spiece.model"
        ) from None
    spec = json.loads(tok.backend_tokenizer.to_str())
    problems = []
    if spec["model"]["type"] != "Unigram":
        problems.append(f"its model is {spec['model']['type']}, not Unigram")
    if tok.convert_tokens_to_ids("</s>") != 1 or tok.pad_token_id != 0:
        problems.append("</s> is not id 1 or <pad> is not id 0")
    if problems:
        raise InputError(f"{base} is not a T5-style tokenizer: {'; '.join(problems)}")
    return spec


# --- adding whole words ---------------------------------------------------------------------------


def add_whole_words(spec: dict, words: list[str]) -> tuple[dict, dict]:
    """Append "▁WORD" pieces (score 0) to a Unigram tokenizer spec; returns (spec, record)."""
    vocab = spec["model"]["vocab"]
    pieces = {piece: i for i, (piece, _) in enumerate(vocab)}
    added_ids = [t["id"] for t in spec.get("added_tokens", [])]
    base_size = max([len(vocab) - 1, *added_ids]) + 1
    while len(vocab) < base_size:  # ids taken by added tokens outside the model: keep them reserved
        vocab.append([f"<reserved_{len(vocab)}>", -100.0])
    collisions, new_ids = {}, {}
    for word in words:
        piece = META + word.replace(" ", META)
        if piece in pieces:
            collisions[word] = pieces[piece]
            vocab[pieces[piece]][1] = 0.0
            continue
        pieces[piece] = len(vocab)
        new_ids[word] = len(vocab)
        vocab.append([piece, 0.0])
    # Metaspace must not split on spaces, or multi-word labels could never match one piece.
    spec["pre_tokenizer"] = {"type": "Metaspace", "replacement": META, "prepend_scheme": "always", "split": False}
    # Every "▁" becomes a space (Metaspace's decoder would only turn a token's first one), then the
    # leading space goes: multi-word pieces decode to their words.
    spec["decoder"] = {
        "type": "Sequence",
        "decoders": [
            {"type": "Replace", "pattern": {"String": META}, "content": " "},
            {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0},
        ],
    }
    record = {
        "base_vocab_size": base_size,
        "vocab_size": len(vocab),
        "n_new": len(new_ids),
        "first_new_id": base_size,
        "new_ids": new_ids,
        "collisions": collisions,
    }
    if collisions:
        log.warning(
            "%d word(s) already were pieces and keep their ids: %s", len(collisions), ", ".join(list(collisions)[:10])
        )
    return spec, record


def _wrap(spec: dict):
    """A transformers fast tokenizer (T5 conventions) around a tokenizers spec."""
    from tokenizers import Tokenizer, processors
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer.from_str(json.dumps(spec))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=1_000_000,
        padding_side="right",
    )


def build_tokenizer(
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    base: str | None = None,
    sp_vocab_size: int = 8000,
    overwrite: bool = False,
) -> dict:
    """Write an HF tokenizer directory + chatcell_vocab.json; returns the vocabulary record."""

    data_dir, out_dir = Path(data_dir), Path(out_dir)
    words = words_from_manifest(manifest_lib.load(data_dir))
    if out_dir.exists() and not overwrite:  # checked before the (slow) training, too
        raise InputError(f"{out_dir} already exists; pass --overwrite to replace it")
    if base is None:
        lines = _training_text(data_dir, words)
        if not lines:
            raise InputError(f"{data_dir}/train.jsonl has no text to train a base vocabulary on")
        spec = json.loads(train_base(lines, sp_vocab_size, "".join(set("".join(words.all())))).to_str())
    else:
        spec = load_base(base)
    spec, record = add_whole_words(spec, words.all())
    record.update(
        base=base or "trained from scratch",
        sp_vocab_size=None if base else sp_vocab_size,
        genes=len(words.genes),
        cell_types=words.cell_types,
        drugs=words.drugs,
        data=str(data_dir),
    )
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        _wrap(spec).save_pretrained(str(tmp))
        (tmp / VOCAB_FILE).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    log.info("tokenizer: %d base ids + %d new whole words -> %s", record["base_vocab_size"], record["n_new"], out_dir)
    return record


def uncovered_words(tokenizer, words: list[str]) -> list[str]:
    """The words the tokenizer does not hold as one piece (a bare leading "▁" piece allowed, as
    in ChatCell's own tokenizer), i.e. words a model trained with it cannot read as one token."""
    if not words:
        return []
    pieces = tokenizer(words, add_special_tokens=False)["input_ids"]
    unk = tokenizer.unk_token_id
    meta = tokenizer.convert_tokens_to_ids(META)

    def one_piece(ids: list[int]) -> bool:
        ids = ids[1:] if len(ids) == 2 and ids[0] == meta else ids
        return len(ids) == 1 and ids[0] != unk

    return [w for w, ids in zip(words, pieces) if not one_piece(ids)]


def check_covers(tokenizer, manifest: Manifest, tokenizer_dir: str | Path) -> None:
    """InputError when the tokenizer was built for other data: a gene, cell type or drug of the
    data is not one of its pieces."""
    words = words_from_manifest(manifest).all()
    missing = uncovered_words(tokenizer, words)
    if missing:
        raise InputError(
            f"the tokenizer {tokenizer_dir} does not hold {len(missing)} of the data's {len(words)} genes and "
            f"labels as single tokens (e.g. {', '.join(missing[:5])}): it was built for other data; build it "
            "for this data with `chatcell tokenizer --data DATA_DIR`"
        )
