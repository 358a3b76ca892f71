"""reference/tokenizer.py's BPE, fast: the same ids, the text encoded a word at a time.

Runtime side of reference/: read reference/tokenizer.py first, which says what is computed. What
is different here, and why (bench/bench_tokenizer.py: Tiny Shakespeare, 1.1M characters, ~0.4 s
cold where sentencepiece's C++ takes ~0.7 s):

- The normalized text is cut into chunks that BPE may encode apart (`_chunk_pattern`: for Llama
  2, each word with its leading spaces), and each distinct chunk is encoded once and cached: text
  repeats its words, so most chunks cost one dictionary lookup.
- A chunk's merges keep their candidate pairs in a heap with a linked list over the symbols, as
  sentencepiece's bpe_model.cc does: O(n log n) where the plain loop rescans every pair per merge.
- With UNUSED pieces in the vocabulary chunks are not independent (which pair an UNUSED piece
  splits back into is decided by the last time it was seen anywhere in the text): the text is
  then encoded whole, still through the heap.

tests/test_tokenizer.py holds both against sentencepiece and against each other.
"""

import heapq
import re

from reference.tokenizer import Tokenizer

# Chunks remembered before the cache is emptied (bounds memory on endless distinct text).
_CACHE_SIZE = 1 << 17


def _char_class(chars):
    """A regex character class matching exactly `chars` (which may be empty)."""
    if not chars:
        return r"[^\s\S]"
    return "[" + "".join(re.escape(c) for c in sorted(chars)) + "]"


def _chunk_pattern(pieces, space):
    """A regex whose matches cut normalized text into chunks that BPE can encode one at a time.

    BPE only joins adjacent symbols into a piece of the vocabulary, and a user-defined piece only
    matches text equal to it. So if no such piece contains the two characters on either side of a
    cut, no symbol ever spans the cut, and each side's merges are exactly those it would make
    alone: the pairs a merge creates or destroys lie on its own side, and the order of merges
    within a side (highest score, then leftmost) is unaffected by merges on the other. Two kinds
    of cut are safe by that argument, and both are decided from the vocabulary:
    - on both sides of a character that occurs in no multi-character piece ("\\n" for Llama 2):
      it can never join anything;
    - before a `space` that follows a character c, when no piece contains c + space. In Llama 2
      only '▁' itself precedes '▁' inside pieces ("▁▁▁"), so every word with its leading spaces
      is a chunk: "▁Hi", "▁▁there".
    When some other character precedes `space` inside a piece, only the first kind is used.
    """
    joined = set()  # characters that occur in some multi-character piece
    before_space = set()  # characters that precede `space` inside some piece
    for piece in pieces:
        if len(piece) > 1:
            joined.update(piece)
            before_space.update(piece[i - 1] for i in range(1, len(piece)) if piece[i] == space)
    if before_space <= {space}:
        word = _char_class(joined - {space})
        s = re.escape(space)
        return re.compile(f"{s}*{word}+|{s}+|.", re.S)
    return re.compile(f"{_char_class(joined)}+|.", re.S)


class FastTokenizer(Tokenizer):
    """A Tokenizer whose `encode` gives the same ids fast (see the module docstring); loaders,
    decoding and the rest are Tokenizer's."""

    def __init__(self, vocab, **options):
        super().__init__(vocab, **options)
        self._chunk_re = None if self._unused else _chunk_pattern(
            list(self._merge_score), self.space)
        self._cache = {}                # chunk -> its ids

    def encode(self, text, bos=None, eos=None):
        """Token ids of `text`, as Tokenizer.encode gives them."""
        normalized = self.normalize(text)
        if self._chunk_re is None:
            return self.with_bos_eos(self._encode_chunk(normalized), bos, eos)
        ids = []
        cache = self._cache
        if len(cache) > _CACHE_SIZE:
            cache.clear()
        for chunk in self._chunk_re.findall(normalized):
            chunk_ids = cache.get(chunk)
            if chunk_ids is None:
                chunk_ids = cache[chunk] = self._encode_chunk(chunk)
            ids += chunk_ids
        if not self.byte_fallback:
            ids = self._squeeze_unknown(ids)
        return self.with_bos_eos(ids, bos, eos)

    def _squeeze_unknown(self, ids):
        """One unk id per run of unknown symbols, as sentencepiece merges them (chunks can end and
        start with one)."""
        unk = self.vocab.unk_id
        return [i for k, i in enumerate(ids) if i != unk or k == 0 or ids[k - 1] != unk]

    def _encode_chunk(self, text):
        """Tokenizer.encode's steps 2-4 on normalized text, with the heap merge."""
        return self.piece_ids(*self._merge(self.symbols(text)))

    def _merge(self, symbols):
        """Tokenizer.merge, same (pieces, formed_by), in O(n log n).

        A heap of candidate pairs ordered by (-score, left index) and a doubly linked list over
        the symbols, as in bpe_model.cc. A popped pair is stale when either side has been merged
        away or has grown since it was pushed, which the summed length detects (symbols only ever
        grow to the right by absorbing their right neighbour).
        """
        n = len(symbols)
        formed_by = {}
        if n < 2:
            return symbols, formed_by
        unused = self._unused
        nxt = list(range(1, n + 1))
        nxt[-1] = -1
        prv = list(range(-1, n - 1))
        heap = []

        def candidate(left, right):
            a, b = symbols[left], symbols[right]
            s = self.pair_score(a, b)
            if s is not None:
                heapq.heappush(heap, (-s, left, right, len(a) + len(b)))
                if a + b in unused:
                    formed_by[a + b] = (a, b)

        for k in range(n - 1):
            candidate(k, k + 1)
        while heap:
            _, left, right, size = heapq.heappop(heap)
            a, b = symbols[left], symbols[right]
            if not a or not b or len(a) + len(b) != size:
                continue
            symbols[left] = a + b
            symbols[right] = ""
            after = nxt[left] = nxt[right]
            if after >= 0:
                prv[after] = left
            if prv[left] >= 0:
                candidate(prv[left], left)
            if after >= 0:
                candidate(left, after)
        return [s for s in symbols if s], formed_by
