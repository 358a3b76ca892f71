"""A SentencePiece-compatible BPE tokenizer in plain Python, built from a `Vocab`: the algorithm.

Maths, read 8th of reference/'s eight (reference/__init__.py gives the order; it stands alone):
one merge at a time, as on paper, O(n^2) in the length of the text. FastTokenizer
(reference/runtime/fast_tokenizer.py) gives the same ids fast, a word at a time through a cache and
a heap of candidate pairs; the CLI uses that one.

It gives the ids sentencepiece gives for a BPE model with the identity normalization (Llama 2's
tokenizer.model, and the vocabularies `train-vocab` makes), and it loads from a .model file, a
llama2.c tokenizer.bin or a GGUF without the sentencepiece package. Facts checked against
sentencepiece 0.2 (normalizer.cc, bpe_model.cc, sentencepiece_processor.cc) and the tests.

Encoding, step by step (Llama 2's model: add_dummy_prefix, keep extra whitespace, byte fallback):

    "Hi  there"
    1. normalize  "▁Hi▁▁there"          dummy-prefix space; every ' ' becomes '▁'
    2. symbols    ▁ H i ▁ ▁ t h e r e   one per character (a user-defined piece: one symbol)
    3. merge      ▁Hi ▁ ▁there          repeatedly join the adjacent pair whose concatenation is
                                        the highest-scoring piece, the leftmost pair on ties
    4. ids        6324 29871 727        a symbol that is no piece becomes its UTF-8 bytes as
                                        <0xXX> pieces (byte fallback: "\n" -> <0x0A> = 13)
    5. BOS/EOS    1 6324 29871 727      as the vocabulary's add_bos/add_eos say

Decoding reverses it: pieces are joined with '▁' turned back into ' ', runs of byte pieces are
decoded as UTF-8 (a byte that starts no valid character becomes U+FFFD, one per byte, as in
sentencepiece), control pieces vanish, <unk> prints as " ⁇ ", and the leading space the dummy
prefix added is dropped once, from the first piece. `StreamDecoder` does the same one id at a
time and only lets a multibyte character out once all its bytes have arrived.
"""

import codecs
import re

from formats.vocab import TokenType

SPACE = "\u2581"  # '▁', SentencePiece's visible space
_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")
# Pieces the BPE merges may build (ModelInterface::pieces_ in sentencepiece); the others
# (UNKNOWN, CONTROL, BYTE) are only ever emitted whole.
_MERGEABLE = (TokenType.NORMAL, TokenType.USER_DEFINED, TokenType.UNUSED)


def _replace_one_byte(error):
    """UTF-8 error handler: one U+FFFD for the first bad byte, then resume at the next byte.

    That is sentencepiece's rule (each byte that starts no valid character is one U+FFFD), not
    Python's "replace", which spends one U+FFFD on a whole truncated sequence:
    b"\\xe0\\xb8".decode("utf-8", "replace") == "\\ufffd", sentencepiece gives "\\ufffd\\ufffd".
    """
    return "\ufffd", error.start + 1


codecs.register_error("sentencepiece_replace", _replace_one_byte)


class Tokenizer:
    """Encode text to ids and decode ids to text with a SentencePiece BPE vocabulary.

    `byte_fallback` defaults to whether the vocabulary has BYTE pieces. `remove_extra_whitespaces`
    (strip leading/trailing spaces, squeeze runs) is a .model normalizer flag that GGUF and
    tokenizer.bin do not carry; Llama 2 and llama.cpp leave it off. `unk_surface` is what decoding
    prints for the unknown piece.
    """

    def __init__(self, vocab, *, byte_fallback=None, remove_extra_whitespaces=False,
                 escape_whitespaces=True, unk_surface=" \u2047 "):
        self.vocab = vocab
        known = {t.value for t in TokenType}
        for i, t in enumerate(vocab.types.tolist()):
            if t not in known:
                raise ValueError(f"piece {i} {vocab.pieces[i]!r} has unknown token type {t}")
        types = [TokenType(t) for t in vocab.types.tolist()]
        self.types = types
        self.byte_fallback = (TokenType.BYTE in types) if byte_fallback is None else byte_fallback
        self.remove_extra_whitespaces = remove_extra_whitespaces
        self.escape_whitespaces = escape_whitespaces
        self.unk_surface = unk_surface
        self.space = SPACE if escape_whitespaces else " "

        self.piece_to_id = {}
        for i, piece in enumerate(vocab.pieces):
            if not piece:
                raise ValueError(f"piece {i} is empty")
            if piece in self.piece_to_id:
                raise ValueError(f"piece {i} {piece!r} repeats piece {self.piece_to_id[piece]}")
            self.piece_to_id[piece] = i
        scores = vocab.scores.tolist()
        self._merge_score = {p: scores[i] for i, p in enumerate(vocab.pieces) if types[i] in _MERGEABLE}
        self._unused = {p for i, p in enumerate(vocab.pieces) if types[i] == TokenType.UNUSED}
        user = [p for i, p in enumerate(vocab.pieces) if types[i] == TokenType.USER_DEFINED]
        self._user = set(user)
        # Longest user-defined piece first, so the regex alternation takes the longest match, as
        # sentencepiece's PrefixMatcher does.
        self._symbol_re = re.compile(
            "|".join(re.escape(p) for p in sorted(user, key=len, reverse=True)) + "|.", re.S
        ) if user else None

        # byte value -> id of its <0xXX> piece, and back
        self._byte_value = {}
        for i, piece in enumerate(vocab.pieces):
            if types[i] == TokenType.BYTE:
                m = _BYTE_PIECE.fullmatch(piece)
                if m is None:
                    raise ValueError(f"piece {i} {piece!r} has type BYTE but is not <0xXX>")
                self._byte_value[i] = int(m.group(1), 16)
        self._byte_ids = [self.piece_to_id.get(f"<0x{b:02X}>", vocab.unk_id) for b in range(256)]

    # ------------------------------------------------------------------------------- loaders
    # formats/ parses the files; these hand its Vocab to `cls`, so FastTokenizer.from_spm(path)
    # gives a FastTokenizer.

    @classmethod
    def from_spm(cls, path, data=None):
        """Load a SentencePiece .model file (parsed by formats.spm, no sentencepiece needed), or
        its bytes `data` where they are not on disk (`path` then only names them in messages)."""
        from formats import spm
        model = spm.read(path) if data is None else spm.from_bytes(data, path)
        if model.model_type != spm.ModelType.BPE:
            raise ValueError(f"{path}: a {model.model_type.name} model; only BPE is supported")
        if model.precompiled_charsmap:
            raise ValueError(f"{path}: normalization rule {model.normalizer_name!r} is not "
                             "supported (only the identity rule)")
        if model.treat_whitespace_as_suffix:
            raise ValueError(f"{path}: treat_whitespace_as_suffix is not supported")
        return cls(model.vocab, byte_fallback=model.byte_fallback,
                   remove_extra_whitespaces=model.remove_extra_whitespaces,
                   escape_whitespaces=model.escape_whitespaces, unk_surface=model.unk_surface)

    @classmethod
    def from_llama2c(cls, path, vocab_size):
        """Load a llama2.c tokenizer.bin; its vocabulary size comes from the model's config."""
        from formats import llama2c
        return cls(llama2c.read_tokenizer(path, vocab_size))

    @classmethod
    def from_gguf(cls, gguf_file):
        """Load the `tokenizer.ggml.*` vocabulary of a `formats.gguf.GGUFFile`."""
        from formats import mapping
        vocab = mapping.vocab_from_metadata(gguf_file.metadata, gguf_file.path or "<gguf>")
        if vocab is None:
            raise ValueError(f"{gguf_file.path or '<gguf>'}: the GGUF holds no tokenizer")
        return cls(vocab)

    # ------------------------------------------------------------------------------- encoding

    def normalize(self, text):
        """The text BPE sees: SentencePiece's normalizer with the identity rule.

            " a  b "  ->  "▁▁a▁▁b▁"   Llama 2: dummy prefix, every space kept
            " a  b "  ->  "▁a▁b"      remove_extra_whitespaces: ends stripped, runs squeezed
            ""        ->  ""          no dummy prefix on empty text (nor on all-space text
                                      when extra whitespace is removed)

        With remove_extra_whitespaces, trailing '▁' characters typed in the text go too: the
        normalizer strips its output's tail, where a typed '▁' looks like an escaped space.
        """
        if self.remove_extra_whitespaces:
            text = re.sub(" {2,}", " ", text.lstrip(" "))
        if not text:
            return ""
        if self.vocab.add_space_prefix:
            text = " " + text
        if self.escape_whitespaces:
            text = text.replace(" ", SPACE)
        if self.remove_extra_whitespaces:
            text = text.rstrip(self.space)
        return text

    def encode(self, text, bos=None, eos=None):
        """Token ids of `text`; `bos`/`eos` default to the vocabulary's add_bos/add_eos."""
        symbols = self.symbols(self.normalize(text))                   # step 2
        pieces, formed_by = self.merge(symbols)                          # step 3
        return self.with_bos_eos(self.piece_ids(pieces, formed_by), bos, eos)   # steps 4, 5

    def symbols(self, text):
        """Normalized text cut into the symbols BPE starts from: one per character, except that a
        user-defined piece is one symbol (the longest one that matches, as sentencepiece's
        PrefixMatcher takes it), which no merge ever joins to its neighbours.

        With the user-defined piece "555": "a5555" -> ["a", "555", "5"].
        """
        return list(text) if self._symbol_re is None else self._symbol_re.findall(text)

    def pair_score(self, left, right):
        """The score of merging adjacent symbols `left` and `right`: that of the piece left+right,
        or None when it is no piece merges may build or either side is a user-defined piece.

        A user-defined symbol is always one that `symbols` cut out: no merge can rebuild one,
        since the text it spans starts where `symbols` would have cut that piece (or a longer one).
        """
        if left in self._user or right in self._user:
            return None
        return self._merge_score.get(left + right)

    def merge(self, symbols):
        """BPE: repeatedly join the adjacent pair with the best score (the leftmost on ties) until
        no adjacent pair forms a piece. Returns (pieces, formed_by).

        Toy vocabulary {"▁a": -1, "ab": -2, "▁ab": -3}, text "▁ab":
            ▁ a b   candidates ▁a (-1), ab (-2)  -> merge ▁a
            ▁a b    candidates ▁ab (-3)          -> merge ▁ab
            ▁ab

        formed_by maps an UNUSED piece to the pair it was last seen forming: UNUSED pieces may be
        merged through but never emitted, and `piece_ids` splits one back into that pair. "Last"
        follows sentencepiece (bpe_model.cc's rev_merge): a pair is seen when it becomes adjacent,
        first every pair left to right, then after each merge the new symbol's pairs with its left
        and its right neighbour. Each step rescans every pair: O(n^2) for n symbols, clear for a
        sentence; reference/runtime/fast_tokenizer.py keeps the candidates in a heap instead.
        """
        symbols = list(symbols)
        formed_by = {}

        def seen(k):
            """Symbols k and k+1 have just become adjacent."""
            if 0 <= k < len(symbols) - 1 and self.pair_score(symbols[k], symbols[k + 1]) is not None:
                if symbols[k] + symbols[k + 1] in self._unused:
                    formed_by[symbols[k] + symbols[k + 1]] = (symbols[k], symbols[k + 1])

        for k in range(len(symbols) - 1):
            seen(k)
        while True:
            # (score, -k): the highest score first, then the lowest k
            candidates = [(score, -k) for k, score in
                          enumerate(self.pair_score(a, b) for a, b in zip(symbols, symbols[1:]))
                          if score is not None]
            if not candidates:
                return symbols, formed_by
            k = -max(candidates)[1]
            symbols[k:k + 2] = [symbols[k] + symbols[k + 1]]
            seen(k - 1)
            seen(k)

    def piece_ids(self, pieces, formed_by):
        """The ids of the merged symbols, in order (see `_emit`)."""
        ids = []
        for piece in pieces:
            self._emit(piece, formed_by, ids)
        return ids

    def _emit(self, piece, formed_by, ids):
        """Append the id(s) of one merged symbol: its piece's id; an UNUSED piece's pair (see
        `merge`); for no piece (or the unknown piece), its UTF-8 bytes as <0xXX> pieces with byte
        fallback, else one unk id per run of unknown symbols, as sentencepiece merges them."""
        i = self.piece_to_id.get(piece)
        if i is None or self.types[i] == TokenType.UNKNOWN:
            if self.byte_fallback:
                ids.extend(self._byte_ids[b] for b in piece.encode("utf-8"))
            elif not ids or ids[-1] != self.vocab.unk_id:
                ids.append(self.vocab.unk_id)
        elif piece in formed_by:
            left, right = formed_by[piece]
            self._emit(left, formed_by, ids)
            self._emit(right, formed_by, ids)
        else:
            ids.append(i)

    def with_bos_eos(self, ids, bos, eos):
        """`ids` with BOS before and EOS after, as asked; None means the vocabulary's add_bos /
        add_eos. Asking for a piece the vocabulary lacks (id -1) is an error."""
        vocab = self.vocab
        add_bos = vocab.add_bos if bos is None else bos
        add_eos = vocab.add_eos if eos is None else eos
        if (add_bos and vocab.bos_id < 0) or (add_eos and vocab.eos_id < 0):
            raise ValueError("BOS/EOS requested but the vocabulary has no such piece (id -1)")
        return [vocab.bos_id] * bool(add_bos) + ids + [vocab.eos_id] * bool(add_eos)

    # ------------------------------------------------------------------------------- decoding

    def decode(self, ids):
        """The text of `ids`, exactly as sentencepiece's DecodeIds gives it."""
        stream = StreamDecoder(self)
        return "".join([stream.feed(i) for i in ids]) + stream.flush()

    def stream_decoder(self):
        """A fresh `StreamDecoder` over this vocabulary."""
        return StreamDecoder(self)


class StreamDecoder:
    """Decode ids one at a time; text comes out as soon as it is certain.

    With Llama 2's vocabulary, feeding BOS, '▁' (29871) and the three byte pieces of "ก"
    (<0xE0> <0xB8> <0x81>, ids byte + 3) gives "", "", "", "" and then "ก": BOS prints nothing,
    the first '▁' is the dummy prefix, and the character waits for its last byte. Call `flush`
    at the end of the stream: bytes still pending then come out as U+FFFD.

    The dummy-prefix rule follows sentencepiece's Decode: while no text has come out yet, the
    first non-control piece loses one leading '▁' (when the model adds a dummy prefix or removes
    extra whitespace; with the latter every leading '▁' piece goes until some text appears).
    Prime the decoder with the prompt's ids to continue a generation in mid-text.
    """

    def __init__(self, tokenizer):
        self.tok = tokenizer
        self._bytes = codecs.getincrementaldecoder("utf-8")("sentencepiece_replace")
        self._emitted = False  # any text so far
        self._bos_ws = True  # a leading '▁' may still be dropped
        self._bos_ws_seen = False  # the previous piece had its leading '▁' dropped
        self._strip_leading = tokenizer.vocab.add_space_prefix or tokenizer.remove_extra_whitespaces

    def feed(self, token_id):
        """Return the text that `token_id` completes (often '' while a character is pending)."""
        tok = self.tok
        if not 0 <= token_id < len(tok.types):
            raise ValueError(f"token id {token_id} is outside the {len(tok.types)}-piece vocabulary")
        byte = tok._byte_value.get(token_id)
        if byte is not None:
            text = self._bytes.decode(bytes((byte,)))
            self._emitted = self._emitted or bool(text)
            return text
        text = self.flush()
        if self._bos_ws_seen or self._emitted:
            self._bos_ws = False
        kind = tok.types[token_id]
        self._bos_ws_seen = False
        if kind == TokenType.CONTROL:
            surface = ""
        elif kind == TokenType.UNKNOWN:
            surface = tok.unk_surface
        else:
            piece = tok.vocab.pieces[token_id]
            if self._bos_ws and self._strip_leading and piece.startswith(SPACE):
                piece = piece[1:]
                self._bos_ws_seen = not tok.remove_extra_whitespaces
            surface = piece.replace(SPACE, " ")
        self._emitted = self._emitted or bool(surface)
        return text + surface

    def flush(self):
        """End a run of byte pieces: whatever bytes are pending come out (U+FFFD if incomplete)."""
        text = self._bytes.decode(b"", final=True)
        self._bytes.reset()
        self._emitted = self._emitted or bool(text)
        return text
