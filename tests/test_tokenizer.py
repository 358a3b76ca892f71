"""reference.tokenizer (the plain algorithm) and reference.runtime.fast_tokenizer (the one the CLI
uses) against sentencepiece, the oracle: identical ids and identical text.

Models: Meta's Llama 2 tokenizer.model; small BPE models trained here on Thai text (identity
normalization, byte fallback exercised by every character outside a 1000-piece vocabulary,
user-defined pieces, remove_extra_whitespaces both ways); and variants of those written by
formats.spm (no byte fallback, no dummy prefix, no space escaping, UNUSED pieces), which
sentencepiece loads too, so each variant is checked against the real thing.
"""

import dataclasses

import numpy as np
import pytest
import sentencepiece as spm
from hypothesis import given, settings
from hypothesis import strategies as st

from formats import gguf, mapping
from formats import spm as spm_format
from formats.vocab import TokenType, Vocab
from reference.runtime.fast_tokenizer import FastTokenizer
from reference.tokenizer import Tokenizer
from tests.support.tokenizer import USER_DEFINED, thai_lines, train_bpe


class Pair:
    """Our tokenizers (the fast one as `ours`, the plain algorithm as `plain`) and sentencepiece's
    processor for the same .model file."""

    def __init__(self, path):
        self.path = path
        self.ours = FastTokenizer.from_spm(path)
        self.plain = Tokenizer.from_spm(path)
        self.sp = spm.SentencePieceProcessor(model_file=str(path))
        self.lossless = not self.ours.remove_extra_whitespaces


@pytest.fixture(scope="module")
def llama(shared_data):
    return Pair(shared_data / "llama2" / "tokenizer.model")


@pytest.fixture(scope="module")
def thai_models(shared_data, tmp_path_factory):
    """name -> Pair, for the trained Thai models and the variants derived from them."""
    lines = thai_lines(shared_data)[:3000]
    folder = tmp_path_factory.mktemp("spm")
    pairs = {}

    def add(name, data=None, model=None):
        path = folder / f"{name}.model"
        if data is not None:
            path.write_bytes(data)
        else:
            spm_format.write(model, path)
        pairs[name] = Pair(path)

    add("thai", train_bpe(lines, remove_extra_whitespaces=False, user_defined_symbols=USER_DEFINED))
    add("thai_squeeze", train_bpe(lines))  # remove_extra_whitespaces defaults to true
    base = spm_format.read(pairs["thai"].path)
    v = base.vocab
    no_bytes = [i for i in range(len(v)) if v.types[i] != TokenType.BYTE]
    add("thai_no_byte_fallback", model=dataclasses.replace(
        base, byte_fallback=False,
        vocab=Vocab([v.pieces[i] for i in no_bytes], v.scores[no_bytes], v.types[no_bytes])))
    add("thai_no_dummy_prefix", model=dataclasses.replace(
        base, vocab=dataclasses.replace(v, add_space_prefix=False)))
    squeeze = spm_format.read(pairs["thai_squeeze"].path)
    add("thai_squeeze_unescaped", model=dataclasses.replace(squeeze, escape_whitespaces=False))
    # One in five multi-character pieces UNUSED: merged, then split back (bpe_model.cc rev_merge).
    types = v.types.copy()
    multi = [i for i in range(len(v)) if types[i] == TokenType.NORMAL and len(v.pieces[i]) > 1]
    types[np.random.default_rng(0).choice(multi, len(multi) // 5, replace=False)] = TokenType.UNUSED
    add("thai_unused", model=dataclasses.replace(base, vocab=dataclasses.replace(v, types=types)))
    return pairs


THAI_NAMES = ["thai", "thai_squeeze", "thai_no_byte_fallback", "thai_no_dummy_prefix",
              "thai_squeeze_unescaped", "thai_unused"]

# Text that stresses the normalizer and the merges: arbitrary Unicode (no lone surrogates, which
# have no UTF-8), whitespace runs, typed '▁', emoji with modifiers, combining marks, Thai, the
# user-defined pieces and strings that look like special pieces.
FRAGMENTS = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=6),
    st.sampled_from([" ", "  ", "   ", "\n", "\t", "\r\n", "\u2581", "\u3000", "🎉", "👍🏽", "e\u0301",
                     " the", "Hello", "ครับ", "555", "<s>", "</s>", "<unk>", "<0x41>", "\x00"]),
    st.text(alphabet="กขคงจฉชซดตทนบปผพมยรลวสหอะัาำิีึืุู่้๊๋เแโใไ ", max_size=10),
)
TEXTS = st.lists(FRAGMENTS, max_size=10).map("".join)


def check_encode(pair, text):
    assert pair.ours.encode(text, bos=False) == pair.sp.encode(text), repr(text)


def check_decode(pair, ids):
    text = pair.ours.decode(ids)
    assert text == pair.sp.decode(ids), ids
    stream = pair.ours.stream_decoder()
    assert "".join(stream.feed(i) for i in ids) + stream.flush() == text


# ------------------------------------------------------------------------------- Llama 2


def test_known_answers(llama):
    # "a  b" keeps both spaces in Llama 2 (docs/formats.md); BOS is added by default.
    assert llama.ours.encode("a  b") == [1, 263, 29871, 289]
    assert llama.ours.encode("Hi  there", eos=True) == [1, 6324, 29871, 727, 2]
    assert llama.ours.encode("a\nb", bos=False) == [263, 13, 29890]  # "\n" -> <0x0A>
    assert llama.ours.encode("") == [1]
    assert llama.ours.decode([1, 263, 29871, 289, 2]) == "a  b"


def test_tinyshakespeare_every_line(llama, shared_data):
    lines = (shared_data / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8").split("\n")
    assert [llama.ours.encode(line, bos=False) for line in lines] == llama.sp.encode(lines)


def test_tinyshakespeare_whole_file(llama, shared_data):
    text = (shared_data / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    ids = llama.ours.encode(text, bos=False)
    assert ids == llama.sp.encode(text)
    assert llama.ours.decode(ids) == text


@pytest.mark.parametrize("name", ["neg", "neu", "pos"])
def test_thai_every_line(llama, shared_data, name):
    lines = thai_lines(shared_data, name)
    assert [llama.ours.encode(line, bos=False) for line in lines] == llama.sp.encode(lines)


@settings(max_examples=300)
@given(text=TEXTS)
def test_llama_hypothesis_text(llama, text):
    check_encode(llama, text)
    ids = llama.ours.encode(text, bos=False)
    check_decode(llama, ids)
    # Lossless for Llama 2, except that a typed '▁' comes back as a space.
    assert llama.ours.decode(ids) == text.replace("\u2581", " ")


@settings(max_examples=300)
@given(ids=st.lists(st.one_of(st.integers(0, 300), st.integers(0, 31999),
                              st.sampled_from([29871, 259, 1, 2, 0])), max_size=12))
def test_llama_decode_any_ids(llama, ids):
    # Control/unknown pieces, lone and truncated UTF-8 bytes, leading '▁' pieces in any order.
    check_decode(llama, ids)


def test_stream_holds_partial_characters(llama):
    stream = llama.ours.stream_decoder()
    thai_ko = [0xE0 + 3, 0xB8 + 3, 0x81 + 3]  # the UTF-8 bytes of "ก" as <0xXX> ids (byte + 3)
    assert [stream.feed(i) for i in [1, 29871, *thai_ko]] == ["", "", "", "", "ก"]
    # A character cut short by a normal piece: one U+FFFD per byte, as sentencepiece decodes it.
    assert [stream.feed(i) for i in [*thai_ko[:2], 263]] == ["", "", "\ufffd\ufffd a"]  # 263 is "▁a"
    assert stream.feed(thai_ko[0]) == "" and stream.flush() == "\ufffd"
    assert llama.ours.decode([*thai_ko[:2], 263]) == llama.sp.decode([*thai_ko[:2], 263])


def test_loaders_agree(llama, shared_data, tmp_path):
    """The same ids from the .model file (our parser), tokenizer.bin and a GGUF that formats/ wrote."""
    from_bin = FastTokenizer.from_llama2c(shared_data / "llama2" / "tokenizer.bin", 32000)
    gguf.write(gguf.GGUFFile(metadata=mapping.vocab_to_metadata(llama.ours.vocab)), tmp_path / "t.gguf")
    from_gguf = FastTokenizer.from_gguf(gguf.read(tmp_path / "t.gguf"))
    text = (shared_data / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")[:200_000]
    text += "".join(thai_lines(shared_data)[:200]) + " 🎉\x00<s>"
    expected = llama.ours.encode(text)
    for other in (from_bin, from_gguf):
        assert other.vocab == llama.ours.vocab
        assert other.encode(text) == expected
        assert other.decode(expected) == llama.ours.decode(expected)


# ------------------------------------------------------------------------------- small trained models


@pytest.mark.parametrize("name", THAI_NAMES)
def test_thai_models_every_line(thai_models, shared_data, name):
    pair = thai_models[name]
    lines = [line for name in ("neg", "neu", "pos") for line in thai_lines(shared_data, name)]
    assert [pair.ours.encode(line, bos=False) for line in lines] == pair.sp.encode(lines)


@pytest.mark.parametrize("name", THAI_NAMES)
@settings(max_examples=150)
@given(text=TEXTS)
def test_thai_models_hypothesis_text(thai_models, name, text):
    pair = thai_models[name]
    check_encode(pair, text)
    ids = pair.ours.encode(text, bos=False)
    check_decode(pair, ids)
    if pair.lossless and pair.ours.byte_fallback:
        assert pair.ours.decode(ids) == text.replace("\u2581", " ")


@pytest.mark.parametrize("name", THAI_NAMES)
@settings(max_examples=100)
@given(data=st.data())
def test_thai_models_decode_any_ids(thai_models, name, data):
    pair = thai_models[name]
    n = len(pair.ours.vocab)
    check_decode(pair, data.draw(st.lists(st.one_of(st.integers(0, n - 1), st.integers(0, 12)), max_size=12)))


def test_trained_model_exercises_the_paths(thai_models):
    """Guard against a fixture that tests less than it claims."""
    thai = thai_models["thai"]
    ids = thai.ours.encode("ครับ 555\n🙈🦜", bos=False)
    assert set(USER_DEFINED) <= {thai.ours.vocab.pieces[i] for i in ids}
    assert sum(thai.ours.types[i] == TokenType.BYTE for i in ids) >= 4  # byte fallback
    no_bf = thai_models["thai_no_byte_fallback"]
    assert no_bf.ours.encode("🦜🦜 🦜", bos=False) == no_bf.sp.encode("🦜🦜 🦜")
    assert no_bf.ours.vocab.unk_id in no_bf.ours.encode("🦜🦜", bos=False)
    assert thai_models["thai_unused"].ours._chunk_re is None  # whole-text path


# ------------------------------------------------------------------------------- the plain algorithm


def test_plain_merge_known_answer():
    """The toy example of Tokenizer.merge's docstring, one merge at a time."""
    normal = TokenType.NORMAL
    vocab = Vocab(["<unk>", "\u2581", "a", "b", "\u2581a", "ab", "\u2581ab"], [0, 0, 0, 0, -1, -2, -3],
                  [TokenType.UNKNOWN] + [normal] * 6, bos_id=-1, eos_id=-1, add_bos=False)
    tok = Tokenizer(vocab)
    assert tok.merge(["\u2581", "a", "b"]) == (["\u2581ab"], {})
    assert tok.encode("ab") == [6]
    assert tok.encode("ba") == [1, 3, 2]            # "▁b" and "ba" are no pieces


def test_plain_known_answers(llama):
    assert llama.plain.encode("a  b") == [1, 263, 29871, 289]
    assert llama.plain.encode("Hi  there", eos=True) == [1, 6324, 29871, 727, 2]
    assert llama.plain.encode("a\nb", bos=False) == [263, 13, 29890]
    assert llama.plain.encode("") == [1]


def test_plain_tinyshakespeare_lines(llama, shared_data):
    """The plain merge loop is O(n^2) in a line's length: the first 2000 lines, not the file."""
    lines = (shared_data / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8").split("\n")[:2000]
    assert [llama.plain.encode(line, bos=False) for line in lines] == llama.sp.encode(lines)


@pytest.mark.parametrize("name", ["llama", *THAI_NAMES])
@settings(max_examples=100)
@given(text=TEXTS)
def test_plain_equals_sentencepiece_and_fast(llama, thai_models, name, text):
    """Every model variant (byte fallback or not, UNUSED pieces, user-defined pieces): the plain
    algorithm, the fast encoder and sentencepiece give the same ids."""
    pair = llama if name == "llama" else thai_models[name]
    assert pair.plain.encode(text, bos=False) == pair.sp.encode(text) == pair.ours.encode(text, bos=False)


# ------------------------------------------------------------------------------- chunking


@pytest.mark.parametrize("name", ["llama", "thai", "thai_squeeze", "thai_no_byte_fallback"])
@settings(max_examples=200)
@given(text=TEXTS)
def test_chunked_encoding_equals_whole_text_bpe(llama, thai_models, name, text):
    """The per-chunk cache changes nothing: BPE over the whole normalized text gives the same ids."""
    tok = llama.ours if name == "llama" else thai_models[name].ours
    whole = tok._encode_chunk(tok.normalize(text))
    assert tok.encode(text, bos=False) == whole


def test_llama_chunks_are_words(llama):
    chunks = llama.ours._chunk_re.findall(llama.ours.normalize("Hi  there,\nyou"))
    assert chunks == ["▁Hi", "▁▁there,", "\n", "you"]


# ------------------------------------------------------------------------------- errors


def test_unsupported_models_are_refused(llama, tmp_path):
    model = spm_format.read(llama.path)
    for change in ({"model_type": spm_format.ModelType.UNIGRAM},
                   {"precompiled_charsmap": b"\x04\0\0\0rule", "normalizer_name": "nmt_nfkc"},
                   {"treat_whitespace_as_suffix": True}):
        spm_format.write(dataclasses.replace(model, **change), tmp_path / "m.model")
        with pytest.raises(ValueError, match="not supported|only BPE"):
            Tokenizer.from_spm(tmp_path / "m.model")


def test_bad_ids_and_vocabularies(llama):
    with pytest.raises(ValueError, match="outside"):
        llama.ours.decode([32000])
    with pytest.raises(ValueError, match="repeats"):
        Tokenizer(Vocab(["a", "b", "a"], [0, 0, 0], [1, 1, 1]))
    with pytest.raises(ValueError, match="BYTE"):
        Tokenizer(Vocab(["<unk>", "<0xZZ>"], [0, 0], [2, 6]))
