"""A SentencePiece BPE model  <->  Hugging Face's fast-tokenizer file, tokenizer.json.

transformers and the `tokenizers` package load tokenizer.json without sentencepiece or protobuf;
a folder with only tokenizer.model needs both (or fails). `to_json` writes the pipeline that gives
SentencePiece's ids for a BPE model with the identity rule (Llama 2's and train-vocab's):

    normalizer      Sequence of, in this order, only the steps the .model asks for:
                      Replace " {2,}" -> " ", "\\A " -> ""      remove_extra_whitespaces: squeeze
                                                               runs, drop a leading space
                      Prepend "▁"                              add_dummy_prefix (not on empty text)
                      Replace " " -> "▁"                       escape_whitespaces
                      Replace "▁+\\z" -> ""                    remove_extra_whitespaces: trailing
    pre_tokenizer   null: BPE runs over the whole text, as SentencePiece's does
    model           BPE: vocab piece -> id (every piece), merges, byte_fallback, unk_token
    decoder         Replace "▁" -> " ", ByteFallback, Fuse, Strip one leading space if the
                    dummy prefix added one
    added_tokens    the control and unknown pieces, special (never produced by merges)

Merges. SentencePiece joins the adjacent pair whose concatenation is the highest-scoring NORMAL
piece, the leftmost on ties; Hugging Face's BPE joins the adjacent pair listed earliest in
`merges`, the leftmost on ties. So `merges` lists every split (left, right) of every NORMAL piece
into two NORMAL pieces, ordered by the piece's score, highest first (then id, then split
position): both pick the same pair at every step. A split into pieces that are no NORMAL piece is
left out, since neither side ever forms such a symbol.

`from_json` reads such a file back into a `spm.SentencePieceModel`, also in the two forms
transformers' own Llama conversion writes (a Prepend + Replace normalizer, or a Metaspace
pre-tokenizer with split false). Scores come from merge ranks: a piece's score is minus the rank
of its first merge, so the order of merges, all that BPE encoding uses, is kept; the .model's
own scores are not stored in tokenizer.json.

What tokenizer.json cannot say is refused (ValueError when writing, FormatError naming the field
when reading): Unigram models, normalization rules other than identity, USER_DEFINED and UNUSED
pieces. Text that spells a special piece ("<s>") is that piece to Hugging Face, plain text to
SentencePiece.
"""

import re

import numpy as np

from formats import spm
from formats.errors import FormatError
from formats.vocab import TokenType, Vocab, check_pieces

SPACE = "\u2581"
_BYTE_PIECE = re.compile(r"<0x[0-9A-F]{2}>")
_SPECIAL = (TokenType.UNKNOWN, TokenType.CONTROL)
# The normalizer steps, as `to_json` writes them and `from_json` recognizes them.
_SQUEEZE = [{"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "},
            {"type": "Replace", "pattern": {"Regex": "\\A "}, "content": ""}]
_PREPEND = {"type": "Prepend", "prepend": SPACE}
_ESCAPE = {"type": "Replace", "pattern": {"String": " "}, "content": SPACE}
_STRIP_TAIL = {"type": "Replace", "pattern": {"Regex": SPACE + "+\\z"}, "content": ""}


def merges(vocab):
    """[(left, right)] for every split of a NORMAL piece into two NORMAL pieces, in the order
    SentencePiece would merge them: the piece's score, highest first, then its id, then the split.

    >>> v = Vocab(["<unk>", "a", "b", "c", "ab", "abc", "bc"], [0, -9, -9, -9, -1, -3, -2],
    ...           [2, 1, 1, 1, 1, 1, 1])
    >>> merges(v)
    [('a', 'b'), ('b', 'c'), ('a', 'bc'), ('ab', 'c')]
    """
    normal = {p for p, t in zip(vocab.pieces, vocab.types.tolist()) if t == TokenType.NORMAL}
    ranked = []
    for i, (piece, score) in enumerate(zip(vocab.pieces, vocab.scores.tolist())):
        if piece not in normal:
            continue
        for k in range(1, len(piece)):
            if piece[:k] in normal and piece[k:] in normal:
                ranked.append((-score, i, k, piece[:k], piece[k:]))
    return [(left, right) for *_, left, right in sorted(ranked)]


def _refuse_unsupported(model):
    """ValueError for what no tokenizer.json pipeline above reproduces."""
    if model.model_type != spm.ModelType.BPE:
        raise ValueError(f"a {model.model_type.name} model: tokenizer.json is written for BPE only")
    if model.precompiled_charsmap or model.treat_whitespace_as_suffix:
        raise ValueError(f"normalization rule {model.normalizer_name!r} (or whitespace as suffix): "
                         "tokenizer.json is written for the identity rule only")
    types = model.vocab.types.tolist()
    for kind in (TokenType.USER_DEFINED, TokenType.UNUSED):
        if kind in types:
            i = types.index(kind)
            raise ValueError(f"piece {i} {model.vocab.pieces[i]!r} is {kind.name}: tokenizer.json "
                             "cannot give SentencePiece's ids for it")


def normalizer_steps(model):
    """The normalizer's steps for `model` (see the module docstring)."""
    squeeze = model.remove_extra_whitespaces
    return ((_SQUEEZE if squeeze else []) + ([_PREPEND] if model.add_dummy_prefix else [])
            + ([_ESCAPE] if model.escape_whitespaces else []) + ([_STRIP_TAIL] if squeeze else []))


def to_json(model):
    """tokenizer.json's contents (a dict) for a `spm.SentencePieceModel`."""
    _refuse_unsupported(model)
    vocab = model.vocab
    types = vocab.types.tolist()
    added = [{"id": i, "content": piece, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True}
             for i, (piece, kind) in enumerate(zip(vocab.pieces, types)) if kind in _SPECIAL]
    decoder = [{"type": "Replace", "pattern": {"String": SPACE}, "content": " "},
               {"type": "ByteFallback"}, {"type": "Fuse"}]
    if model.add_dummy_prefix:
        decoder.append({"type": "Strip", "content": " ", "start": 1, "stop": 0})
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": normalizer_steps(model)},
        "pre_tokenizer": None,
        "post_processor": _post_processor(vocab),
        "decoder": {"type": "Sequence", "decoders": decoder},
        "model": {"type": "BPE", "dropout": None, "unk_token": vocab.pieces[vocab.unk_id],
                  "continuing_subword_prefix": None, "end_of_word_suffix": None, "fuse_unk": True,
                  "byte_fallback": model.byte_fallback, "ignore_merges": False,
                  "vocab": {piece: i for i, piece in enumerate(vocab.pieces)},
                  "merges": [list(pair) for pair in merges(vocab)]},
    }


def _post_processor(vocab):
    """BOS before (and EOS after) a text, as the vocabulary's add_bos / add_eos say."""
    before = [vocab.bos_id] if vocab.add_bos and vocab.bos_id >= 0 else []
    after = [vocab.eos_id] if vocab.add_eos and vocab.eos_id >= 0 else []

    def template(seqs):
        items = [{"SpecialToken": {"id": vocab.pieces[i], "type_id": 0}} for i in before]
        for seq in seqs:
            items.append({"Sequence": {"id": seq, "type_id": 0}})
            items += [{"SpecialToken": {"id": vocab.pieces[i], "type_id": 0}} for i in after]
        return items
    special = {vocab.pieces[i]: {"id": vocab.pieces[i], "ids": [i], "tokens": [vocab.pieces[i]]}
               for i in before + after}
    return {"type": "TemplateProcessing", "single": template(["A"]), "pair": template(["A", "B"]),
            "special_tokens": special}


# ------------------------------------------------------------------------------------ reading


def _field(obj, key, kind, path, where):
    """obj[key] checked to be of `kind`; FormatError naming `where` otherwise."""
    if not isinstance(obj, dict) or key not in obj:
        raise FormatError(path, where, None, "missing")
    value = obj[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise FormatError(path, where, None, f"{str(value)[:80]!r} is not a {getattr(kind, '__name__', kind)}")
    return value


def _whitespace_flags(tokenizer, path):
    """(add_dummy_prefix, remove_extra_whitespaces, escape_whitespaces) from the normalizer and
    pre_tokenizer; FormatError for a pipeline other than the three this module knows."""
    normalizer, pre = tokenizer.get("normalizer"), tokenizer.get("pre_tokenizer")
    if normalizer is not None and not isinstance(normalizer, dict):
        raise FormatError(path, "normalizer", None, "must be an object or null")
    steps = [] if normalizer is None else (normalizer.get("normalizers") if normalizer.get("type") == "Sequence"
                                           else [normalizer])
    if pre is None:
        for prefix in (True, False):
            for squeeze in (True, False):
                for escape in (True, False):
                    model = spm.SentencePieceModel(Vocab([], [], [], add_space_prefix=prefix),
                                                   remove_extra_whitespaces=squeeze, escape_whitespaces=escape)
                    if steps == normalizer_steps(model):
                        return prefix, squeeze, escape
        raise FormatError(path, "normalizer", None, f"{str(normalizer)[:200]}: not a SentencePiece "
                                                    "identity normalizer this reader knows")
    if steps or not isinstance(pre, dict) or pre.get("type") != "Metaspace" or pre.get("split") is not False \
            or pre.get("replacement") != SPACE or pre.get("prepend_scheme") not in ("first", "never"):
        raise FormatError(path, "pre_tokenizer", None, f"{str(pre)[:200]}: only null, or Metaspace "
                                                       "without split and no normalizer, is read")
    return pre["prepend_scheme"] == "first", False, True


def from_json(tokenizer, path, special_tokens=None):
    """tokenizer.json's dict -> spm.SentencePieceModel.

    special_tokens: {"bos_token", "eos_token", "unk_token"} -> piece (tokenizer_config.json's),
    defaulting to "<s>", "</s>" (an id of -1 when the vocabulary lacks the piece) and "<unk>" (the
    unknown piece when model.unk_token is null; it must be in the vocabulary).
    """
    if not isinstance(tokenizer, dict):
        raise FormatError(path, "tokenizer", None, "must be a JSON object")
    model = _field(tokenizer, "model", dict, path, "model")
    if model.get("type") != "BPE":
        raise FormatError(path, "model.type", None, f"{model.get('type')!r}: only BPE is read")
    for key in ("continuing_subword_prefix", "end_of_word_suffix"):
        if model.get(key) is not None:
            raise FormatError(path, f"model.{key}", None, f"{model[key]!r}: SentencePiece has none")
    if model.get("ignore_merges"):
        raise FormatError(path, "model.ignore_merges", None, "true: SentencePiece always merges")
    table = _field(model, "vocab", dict, path, "model.vocab")
    pieces = [None] * len(table)
    for piece, i in table.items():
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(pieces) or pieces[i] is not None:
            raise FormatError(path, f"model.vocab[{piece[:40]!r}]", None,
                              f"id {str(i)[:40]}: ids must be 0..{len(pieces) - 1}, each once")
        pieces[i] = piece
    check_pieces(pieces, [TokenType.NORMAL] * len(pieces), path, "model.vocab", "model.vocab")
    byte_fallback = _field(model, "byte_fallback", bool, path, "model.byte_fallback")
    types = [TokenType.BYTE if byte_fallback and _BYTE_PIECE.fullmatch(p) else TokenType.NORMAL for p in pieces]
    for n, token in enumerate(_field(tokenizer, "added_tokens", list, path, "added_tokens")):
        i = _field(token, "id", int, path, f"added_tokens[{n}].id")
        if not 0 <= i < len(pieces) or _field(token, "content", str, path, f"added_tokens[{n}].content") != pieces[i]:
            raise FormatError(path, f"added_tokens[{n}]", None, "not a piece of model.vocab under its id")
        if not token.get("special"):
            raise FormatError(path, f"added_tokens[{n}].special", None, "false: only special tokens are read")
        types[i] = TokenType.CONTROL
    names = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", **(special_tokens or {})}
    unk = names["unk_token"] if model.get("unk_token") is None else model["unk_token"]
    if not isinstance(unk, str) or unk not in table:
        raise FormatError(path, "model.unk_token", None, f"{unk!r} is not in model.vocab")
    types[table[unk]] = TokenType.UNKNOWN

    # Score: minus the rank of the piece's first merge; pieces no merge forms come after all.
    ranked = _field(model, "merges", list, path, "model.merges")
    scores = np.full(len(pieces), -float(len(ranked)), np.float32)
    for rank, pair in enumerate(ranked):
        parts = pair.split(" ") if isinstance(pair, str) else pair if isinstance(pair, list) else []
        if len(parts) != 2 or not all(isinstance(p, str) for p in parts) or "".join(parts) not in table:
            raise FormatError(path, f"model.merges[{rank}]", None, f"{str(pair)[:80]!r}: not two pieces "
                                                                   "joining into a piece of model.vocab")
        left, right = parts
        i = table[left + right]
        scores[i] = max(scores[i], -rank)
    scores[[i for i, t in enumerate(types) if t != TokenType.NORMAL]] = 0.0

    prefix, squeeze, escape = _whitespace_flags(tokenizer, path)
    bos, eos = (table.get(names[key], -1) for key in ("bos_token", "eos_token"))
    vocab = Vocab(pieces, scores, [int(t) for t in types], unk_id=table[unk], bos_id=bos, eos_id=eos,
                  add_bos=bos >= 0, add_eos=False, add_space_prefix=prefix)
    return spm.SentencePieceModel(vocab, byte_fallback=byte_fallback, remove_extra_whitespaces=squeeze,
                                  escape_whitespaces=escape)
