"""The fixed prompts every implementation and tokenizer runs, and how long greedy continuations are.

Each prompt exercises a different part of the tokenizer and the model: plain English (merges),
Thai (multi-byte UTF-8, no spaces between words, byte fallback in small vocabularies),
emoji/bytes (4-byte characters, tabs, newlines, runs of spaces: byte pieces and whitespace
handling), and a text repeated until it fills the whole context (RoPE and attention at every
position up to max_seq_len).
"""

# Greedy continuations run this many tokens (llama2.c's and llama.cpp's demos print about as
# many), fewer when the context is shorter.
GREEDY_TOKENS = 128

PROMPTS = {
    "english": "Once upon a time, there was a little girl named Lily. She loved to play outside in the sun.",
    "thai": "สวัสดีครับ วันนี้อากาศดีมาก",
    "emoji": "Emoji 🦙🚀 and bytes:\tcafé ñ 中文\nnew line,  two  spaces 😀!",
}
FULL_CONTEXT = "full_context"
_FULL_CONTEXT_TEXT = (
    "The king stood at the window of the old castle and watched the rain fall on the hills. "
    "\"Tomorrow we ride north,\" he said, and his daughter nodded without a word. "
    "In the morning there were 12 horses in the yard, 3 wagons and one small dog that barked at "
    "everything. They travelled for 7 days, through forests and over rivers, until they reached "
    "the sea. ทะเลสีฟ้า — the blue sea! Nobody had seen it before; the children ran into the "
    "waves, laughing, and the old men sat on the sand and told stories of other journeys.\n"
)


def prompt_texts(tokenize, max_seq_len):
    """{name: text}: the fixed prompts, plus the full-context text repeated until its ids fill
    max_seq_len."""
    texts = dict(PROMPTS)
    per_copy = max(len(tokenize(_FULL_CONTEXT_TEXT)) - 1, 1)      # BOS is counted once
    text = _FULL_CONTEXT_TEXT * (max_seq_len // per_copy + 1)
    while len(tokenize(text)) < max_seq_len:                      # merges at the seams may save a few
        text += _FULL_CONTEXT_TEXT
    texts[FULL_CONTEXT] = text
    return texts


def greedy_prompt(ids, max_seq_len):
    """The prompt a greedy continuation starts from: short enough to leave room for
    GREEDY_TOKENS new tokens, or half the context when the context is too small for that.
    >>> len(greedy_prompt(list(range(300)), 160))
    80
    """
    keep = max(max_seq_len - GREEDY_TOKENS, max_seq_len // 2, 1)
    return list(ids[:keep])
