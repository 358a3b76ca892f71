"""The parity report behind `llama2-scratch verify`: does an exported file compute what was trained?

Up to three implementations run the same token ids and are compared pair by pair:

    torch      trainer/model.py on the ckpt.pt weights (the model as trained; needs --ckpt)
    numpy      reference/model.py on MODEL (a GGUF or a llama2.c .bin, as the file stores it)
    llama.cpp  llama-cpp-python on MODEL (a GGUF; needs --llama-cpp)

and up to three tokenizers encode the same prompts:

    sentencepiece  the trained .model (the bytes stored in ckpt.pt, or --tokenizer X.model)
    numpy          reference/tokenizer.py on MODEL's vocabulary (ours; the GGUF's tokenizer.ggml.*)
    llama.cpp      llama.cpp's own tokenizer on MODEL

Checks (each one a row of the report; the JSON schema is in ../shared/SPEC.md):

    config       torch vs file       hyperparameters in the file = those in the ckpt (GGUF keys named)
    load         per implementation  the file loads at all
    tokenizer/P  sentencepiece vs *  identical ids on prompt P
    logits/P     every pair          max |Δ|, NMSE, KL(ref || cand), top-1 agreement at every position
    greedy/P     every pair          each implementation's own greedy continuation (argmax, lowest id
                                     on ties; up to GREEDY_TOKENS tokens, bounded by the context):
                                     the fraction of tokens identical before the first divergence

In the JSON, `config` and `load` rows have candidate "file" (reference: torch, or the loader);
each row also carries `pass_if` ("<=" or ">=": how value meets threshold) and `detail` (where
it failed: the first differing position, token or field, or the loader's error).

Thresholds depend on the file's dtype and on the pair: against torch a lossy file carries its
rounding error; NumPy and llama.cpp read the same rounded weights, so between them only the
arithmetic differs (llama.cpp rounds activations to the weight's dot-product type: f16, bf16 or
q8_0 blocks). Every number is a named constant below with the measurement it came from.

torch and llama_cpp are imported inside the functions that use them: this module imports with
NumPy alone, so `verify MODEL --llama-cpp` runs without torch.
"""

import dataclasses
import math
import os

import numpy as np

from formats import detect, gguf, llama2c, mapping
from formats.ggml import GGMLType

# Greedy continuations run this many tokens (llama2.c's and llama.cpp's demos print about as
# many), fewer when the context is shorter.
GREEDY_TOKENS = 128

TORCH, NUMPY, LLAMA_CPP, SENTENCEPIECE = "torch", "numpy", "llama.cpp", "sentencepiece"
DTYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "int8")   # int8: llama2.c v2 (runq.c) groups

# ------------------------------------------------------------------------------------ prompts

# Fixed prompts. Each exercises a different part of the tokenizer and the model:
# plain English (merges), Thai (multi-byte UTF-8, no spaces between words, byte fallback in
# small vocabularies), emoji/bytes (4-byte characters, tabs, newlines, runs of spaces: byte
# pieces and whitespace handling), and a text repeated until it fills the whole context (RoPE
# and attention at every position up to max_seq_len).
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

# --------------------------------------------------------------------------------- thresholds


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """Pass limits for one (dtype, pair): logits in logit units (natural-log softmax inputs)."""
    max_abs_diff: float     # max over positions and vocabulary of |cand - ref|
    nmse: float             # sum((cand - ref)^2) / sum(ref^2) over the prompt
    kl: float               # mean over positions of KL(softmax(ref) || softmax(cand)), nats
    top1: float             # fraction of positions whose argmax agrees (lowest id on ties)
    greedy: float           # fraction of the continuation identical before the first divergence


# Measured with llama-cpp-python 0.3.36 and torch 2.13.0 (CPU) on four models, worst value over
# the four prompts and both candidates: tiny GQA models trained on Tiny Shakespeare with a
# 384-piece vocabulary (dim 64 / 2 layers / 60 steps at lr 1e-2 with contexts 160 and 192, the
# latter being the test fixture; dim 128 / 3 layers / 300 steps) and a random untied model with
# Llama 2's 32000-piece vocabulary (tests/verify_helpers.py). "measured" below is that worst case.
#
# Headroom: errors of a lossy dtype scale with the weights' outliers, width and depth; the two
# trained models already differ 3-4x (q4_0 max |Δ| 1.4 vs 4.3), so magnitude limits sit 4-10x
# above the worst measurement. top-1 limits sit below the worst measurement by a margin for
# near-ties (a flipped argmax between two logits closer than the rounding error is not a bug).
# Greedy continuations are gated in f32 only: there the file holds the trained weights exactly
# and any divergence is a bug; in a lossy dtype one near-tie flips a token and the rest of the
# text legitimately differs (measured identical prefixes of 1-100%), so it is reported with
# limit 0 and the logits checks gate the file. max |Δ| is in logit units for models whose logits
# span about ±15 (those above); NMSE and KL do not depend on that scale.

_F32 = Thresholds(
    max_abs_diff=1e-3,  # measured 2.2e-5 (llama.cpp), 1.4e-5 (NumPy): float32 summation order only;
                        # 45x for wider models and longer sums (Llama-sized layers reach ~1e-4)
    nmse=1e-9,          # measured 1.7e-13
    kl=1e-8,            # measured 1.7e-12
    top1=1.0,           # the bar: the same argmax at every position of every prompt
    greedy=1.0)         # and the same 128-token greedy text in torch, NumPy and llama.cpp

# torch (the trained float32 weights) vs a file: the file's rounding (+ llama.cpp's own, below).
VS_TORCH = {
    "f32": _F32,
    "f16": Thresholds(max_abs_diff=0.25,  # measured 0.036
                      nmse=1e-5,          # measured 2.9e-7
                      kl=2e-5,            # measured 1.4e-6
                      top1=0.95,          # measured 1.0
                      greedy=0.0),        # measured 1.0 (not gated, see above)
    "bf16": Thresholds(max_abs_diff=1.0,  # measured 0.17: 8-bit mantissas, 8x less precise than f16
                       nmse=2e-4,         # measured 1.6e-5
                       kl=1e-3,           # measured 1.0e-4
                       top1=0.9,          # measured 0.97 (the random Llama 2-vocab model's near-ties)
                       greedy=0.0),       # measured 0.37
    "q8_0": Thresholds(max_abs_diff=3.0,  # measured 0.62
                       nmse=2e-3,         # measured 2.1e-4
                       kl=5e-3,           # measured 8.2e-4
                       top1=0.85,         # measured 0.93
                       greedy=0.0),       # measured 0.013
    "q4_0": Thresholds(max_abs_diff=15.0,  # measured 4.3: 16 levels per block of 32 is coarse for
                       nmse=0.2,           # measured 0.039   models this small; a 128-wide model
                       kl=0.5,             # measured 0.089   trained longer measured 1.4 / 0.012
                       top1=0.4,           # measured 0.52 (random model; trained models 0.80-0.82)
                       greedy=0.0),        # measured 0.0
}
# llama2.c v2 (runq.c): int8 groups of up to 64 with float32 scales, the same symmetric 8-bit
# rounding as q8_0 with finer scales; measured max |Δ| 0.37, KL 3.9e-4, top-1 0.97: q8_0's limits.
VS_TORCH["int8"] = VS_TORCH["q8_0"]

# NumPy vs llama.cpp on the same file: the same rounded weights, so only the arithmetic differs.
# llama.cpp rounds each activation vector to the weight's dot-product type before a matmul (f16
# for f16, bf16 for bf16, q8_0 blocks for q8_0 and q4_0); NumPy computes in float32.
SAME_FILE = {
    "f32": _F32,        # measured 2.1e-5 / 1.6e-13 / 9.9e-13 / 1.0 / 1.0
    "f16": Thresholds(max_abs_diff=0.1,   # measured 0.0084
                      nmse=1e-6,          # measured 8.3e-8
                      kl=5e-6,            # measured 2.6e-7
                      top1=0.95,          # measured 1.0
                      greedy=0.0),
    "bf16": Thresholds(max_abs_diff=1.0,  # measured 0.18
                       nmse=1e-4,         # measured 6.6e-6
                       kl=5e-4,           # measured 3.6e-5
                       top1=0.9,          # measured 1.0
                       greedy=0.0),
    "q8_0": Thresholds(max_abs_diff=2.0,  # measured 0.49
                       nmse=1e-3,         # measured 1.3e-4
                       kl=5e-3,           # measured 5.7e-4
                       top1=0.85,         # measured 0.96
                       greedy=0.0),
    # activations are rounded to q8_0 for q4_0 weights too: the same limits (measured 0.38,
    # 1.7e-4, 3.2e-4, 0.97)
    "q4_0": Thresholds(max_abs_diff=2.0, nmse=1e-3, kl=5e-3, top1=0.85, greedy=0.0),
}
SAME_FILE["int8"] = SAME_FILE["q8_0"]   # llama.cpp does not read llama2.c files; for completeness


# --------------------------------------------------------------------------------- the report


@dataclasses.dataclass
class Check:
    """One row of the report. `pass_if` says how value meets threshold ("<=" or ">=")."""
    name: str
    reference: str
    candidate: str
    dtype: str
    metric: str
    value: float | None
    threshold: float
    pass_if: str = "<="
    detail: str = ""

    @property
    def ok(self):
        if self.value is None or not math.isfinite(self.value):
            return False
        return self.value <= self.threshold if self.pass_if == "<=" else self.value >= self.threshold

    def to_json(self):
        value = self.value if self.value is not None and math.isfinite(self.value) else None
        return {"name": self.name, "reference": self.reference, "candidate": self.candidate,
                "dtype": self.dtype, "metric": self.metric, "value": value, "threshold": self.threshold,
                "ok": self.ok, "pass_if": self.pass_if, "detail": self.detail}

    def describe(self):
        """One line naming the check, e.g. 'logits/thai torch vs llama.cpp: top1 0.8 (needs >= 1)'."""
        value = "n/a" if self.value is None else f"{self.value:.4g}"
        text = (f"{self.name} {self.reference} vs {self.candidate} [{self.dtype}]: {self.metric} {value} "
                f"(needs {self.pass_if} {self.threshold:.4g})")
        return f"{text}: {self.detail}" if self.detail else text


@dataclasses.dataclass
class Report:
    model: str
    dtype: str
    model_args: dict
    implementations: list           # names that ran, reference first
    checks: list
    notes: list

    @property
    def ok(self):
        return all(c.ok for c in self.checks)

    @property
    def failures(self):
        return [c for c in self.checks if not c.ok]

    def to_json(self):
        return {"ok": self.ok, "model": self.model, "dtype": self.dtype, "implementations": self.implementations,
                "checks": [c.to_json() for c in self.checks], "notes": self.notes}


# --------------------------------------------------------------------------------- metrics


def _log_softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def logit_metrics(ref, cand):
    """{max_abs_diff, nmse, kl, top1} of candidate logits against reference logits, both (T, V).

    Computed in float64 so the metric adds no rounding of its own. KL(p_ref || p_cand) is the
    extra nats per token a user pays for sampling from the candidate instead of the reference.
    >>> m = logit_metrics(np.array([[0.0, 1.0]], np.float32), np.array([[0.0, 1.5]], np.float32))
    >>> m["max_abs_diff"], m["top1"]
    (0.5, 1.0)
    """
    ref64, cand64 = ref.astype(np.float64), cand.astype(np.float64)
    diff = cand64 - ref64
    log_p, log_q = _log_softmax(ref64), _log_softmax(cand64)
    kl = (np.exp(log_p) * (log_p - log_q)).sum(axis=-1)                 # (T,)
    return {
        "max_abs_diff": float(np.abs(diff).max()),
        "nmse": float((diff ** 2).sum() / max(float((ref64 ** 2).sum()), 1e-300)),
        "kl": float(kl.mean()),
        "top1": float((ref.argmax(axis=-1) == cand.argmax(axis=-1)).mean()),
    }


def identical_prefix(ref_ids, cand_ids):
    """How many leading ids two continuations share."""
    n = 0
    for a, b in zip(ref_ids, cand_ids):
        if a != b:
            break
        n += 1
    return n


def greedy_prompt(ids, max_seq_len):
    """The prompt a greedy continuation starts from: short enough to leave room for
    GREEDY_TOKENS new tokens, or half the context when the context is too small for that."""
    keep = max(max_seq_len - GREEDY_TOKENS, max_seq_len // 2, 1)
    return list(ids[:keep])


def _argmax(logits):
    return int(np.argmax(logits))   # the first (lowest) id among equal maxima, in every implementation


# --------------------------------------------------------------------------- implementations


class TorchModel:
    """trainer/model.py with the ckpt.pt weights, in float32 as trained."""
    name = TORCH

    def __init__(self, exportable, threads=None):
        import torch

        from formats.spec import ModelArgs
        from trainer.model import Transformer

        self.torch = torch
        self.threads = threads
        self.args = ModelArgs.from_dict(exportable.model_args)
        model = Transformer(self.args)
        state = {name: torch.from_numpy(np.ascontiguousarray(w)) for name, w in exportable.weights.items()}
        missing, unexpected = model.load_state_dict(state, strict=False)
        allowed_missing = {"output.weight"} if self.args.tie_embeddings else set()
        if set(missing) - allowed_missing or unexpected:
            raise ValueError(f"checkpoint weights do not fit the model: missing {missing}, "
                             f"unexpected {unexpected}")
        self.model = model.eval()

    def _run(self, ids):
        torch = self.torch
        saved = torch.get_num_threads()
        if self.threads:
            # On a busy machine torch's spinning worker threads can make small matmuls 100x slower
            # (measured: 37 ms instead of 0.2 ms for (160, 64) @ (64, 192) with 2 threads on 2 busy cores).
            torch.set_num_threads(self.threads)
        try:
            with torch.no_grad():
                logits, _ = self.model(torch.tensor([ids], dtype=torch.long))    # (1, T, V)
        finally:
            torch.set_num_threads(saved)
        return logits[0].numpy()

    def logits(self, ids):
        return self._run(ids)

    def greedy(self, prompt_ids, n):
        # The trainer's model has no KV cache: recompute the whole sequence each step, but apply
        # the classifier to the last position only (the (T, D) @ (D, V) product dominates with a
        # 32000-piece vocabulary).
        last_only = self.model.output.register_forward_pre_hook(lambda module, inputs: (inputs[0][:, -1:],))
        try:
            ids = list(prompt_ids)
            for _ in range(n):
                ids.append(_argmax(self._run(ids)[-1]))
        finally:
            last_only.remove()
        return ids[len(prompt_ids):]


class NumpyModel:
    """reference/model.py on MODEL: the prompt in one pass; greedy decodes one token at a time
    against the KV cache, as `generate` does."""
    name = NUMPY

    def __init__(self, path):
        from llama2_scratch.model_files import load_model

        self.model = load_model(path)
        self.args = self.model.args

    def logits(self, ids):
        return self.model.forward(np.asarray(ids), 0, all_logits=True)

    def greedy(self, prompt_ids, n):
        ids = list(prompt_ids)
        logits = self.model.forward(np.asarray(ids))                         # (V,)
        for step in range(n):
            if step:
                logits = self.model.forward(np.asarray(ids[-1:]), start_pos=len(ids) - 1)
            ids.append(_argmax(logits))
        return ids[len(prompt_ids):]


class LlamaCppModel:
    """llama-cpp-python on MODEL. Logits of every position (logits_all) in a context of exactly
    max_seq_len; the KV cache in f32 (llama.cpp's default is f16, which would add its own
    rounding to every dtype and hide what the file contributes). Greedy is our argmax over
    llama.cpp's logits, one `eval` per token, so all three implementations follow one rule."""
    name = LLAMA_CPP

    def __init__(self, path, n_ctx, threads=None):
        import llama_cpp

        self.llama_cpp = llama_cpp
        threads = threads or min(os.cpu_count() or 1, 8)
        with _LlamaCppLog(llama_cpp) as log:
            try:
                self.llm = llama_cpp.Llama(
                    model_path=str(path), n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, logits_all=True,
                    n_threads=threads, n_threads_batch=threads, type_k=int(GGMLType.F32),
                    type_v=int(GGMLType.F32), seed=0, verbose=False)
            except (ValueError, RuntimeError) as exc:
                raise ValueError(log.error_summary() or str(exc)) from None
        self.n_ctx = n_ctx

    def close(self):
        self.llm.close()

    def tokenize(self, text):
        # add_bos=True is llama.cpp's add_special: BOS/EOS as the GGUF's add_bos/eos_token say.
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=False))

    def _eval_from(self, ids, start):
        """Evaluate ids[start:] after ids[:start] are in the cache; returns their logits."""
        self.llm.n_tokens = start
        self.llm.eval(ids[start:])
        return np.array(self.llm.scores[start:len(ids)], dtype=np.float32)

    def logits(self, ids):
        self.llm.reset()
        return self._eval_from(list(ids), 0)

    def greedy(self, prompt_ids, n):
        self.llm.reset()
        ids = list(prompt_ids)
        logits = self._eval_from(ids, 0)[-1]
        for step in range(n):
            if step:
                logits = self._eval_from(ids, len(ids) - 1)[-1]
            ids.append(_argmax(logits))
        return ids[len(prompt_ids):]


class _LlamaCppLog:
    """Collect llama.cpp's log lines while loading, so a failed load can say why (llama-cpp-python
    only raises 'Failed to load model from file'; the reason, e.g. 'invalid n_rot', is logged)."""

    def __init__(self, llama_cpp):
        self.llama_cpp = llama_cpp
        self.lines = []

    def __enter__(self):
        lines = self.lines

        @self.llama_cpp.llama_log_callback
        def callback(level, text, user_data):
            lines.append(text.decode("utf-8", "replace"))

        self._callback = callback   # ctypes callbacks must outlive their registration
        self.llama_cpp.llama_log_set(callback, None)
        return self

    def __exit__(self, *exc):
        from llama_cpp import _logger
        self.llama_cpp.llama_log_set(_logger.llama_log_callback, None)
        return False

    def error_summary(self):
        text = "".join(self.lines)
        errors = [line.strip() for line in text.splitlines()
                  if any(word in line.lower() for word in ("error", "failed", "invalid", "exception"))]
        return "; ".join(dict.fromkeys(errors))[:500]


# ------------------------------------------------------------------------------- the file


def file_dtype(path):
    """The dtype name thresholds are looked up by: the type of the GGUF's matrices ("q8_0", ...),
    "f32" for llama2.c v0/v1 and "int8" for v2."""
    if detect.is_gguf(path):
        gf = gguf.read(path)
        types = {t.type for t in gf.tensors if len(t.shape) == 2}
        if len(types) != 1:
            raise ValueError(f"{path}: matrices of several types ({sorted(t.name for t in types)}); "
                             "verify has thresholds for one type per file")
        return types.pop().name.lower()
    return "int8" if llama2c.read(path).version == 2 else "f32"


def config_mismatches(path, model_args):
    """['llama.attention.head_count: file 2, checkpoint 4', ...] comparing the file's
    hyperparameters (as stored, before any consistency check) with the checkpoint's."""
    expected = dict(model_args, head_dim=model_args["dim"] // model_args["n_heads"])
    found = {}
    if detect.is_gguf(path):
        gf = gguf.read(path)
        for field, (key, _) in mapping.HPARAM_KEYS.items():
            value = gf.metadata.get(key)
            found[key] = (field, None if value is None else value.value)
        names = {t.name for t in gf.tensors}
        found["tensor output.weight"] = ("tie_embeddings", "output.weight" not in names)
        embd = next((t for t in gf.tensors if t.name == "token_embd.weight"), None)
        found["token_embd.weight rows"] = ("vocab_size", None if embd is None else embd.shape[0])
    else:
        ckpt = llama2c.read(path)
        for field, value in llama2c.config_of(ckpt.args).items():
            found[f"config.{field}"] = (field, value)
        found["shared_classifier"] = ("tie_embeddings", ckpt.shared_classifier)
        found["norm_eps (llama2.c default)"] = ("norm_eps", ckpt.args.norm_eps)
        found["rope_theta (llama2.c default)"] = ("rope_theta", ckpt.args.rope_theta)
    problems = []
    for where, (field, value) in found.items():
        want = expected[field]
        if field in ("norm_eps", "rope_theta"):
            same = value is not None and np.float32(value) == np.float32(want)
        else:
            same = value is not None and value == want
        if not same:
            problems.append(f"{where}: file {value}, checkpoint {want}")
    return problems


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


# ------------------------------------------------------------------------------- the run


def _thresholds(dtype, reference):
    table = VS_TORCH if reference == TORCH else SAME_FILE
    return table[dtype]


def _check_request(model_path, dtype, is_gguf, ckpt_path, use_llama_cpp):
    """ValueError (exit status 2) for a request that cannot run at all."""
    if dtype not in VS_TORCH:
        raise ValueError(f"{model_path}: no verify thresholds for {dtype} (have {', '.join(VS_TORCH)})")
    if use_llama_cpp and not is_gguf:
        raise ValueError(f"--llama-cpp: {model_path} is a llama2.c file; llama.cpp reads GGUF only")
    if use_llama_cpp:
        try:
            import llama_cpp  # noqa: F401
        except ImportError:
            raise ValueError("--llama-cpp: the llama_cpp package is not installed "
                             "(pip install llama-cpp-python==0.3.36)") from None
    if ckpt_path is None and not use_llama_cpp:
        raise ValueError("nothing to compare MODEL with: pass --ckpt CKPT (the trained model) "
                         "and/or --llama-cpp")
    if ckpt_path is not None:
        try:
            import torch  # noqa: F401
        except ImportError:
            raise ValueError("--ckpt: reading a ckpt.pt needs torch (pip install -e '.[train]')") from None


def _load_ckpt(ckpt_path):
    """(Exportable, the SentencePiece .model bytes stored in the ckpt or None)."""
    from trainer import checkpoint
    from trainer.export import ExportError, load_exportable

    try:
        exportable = load_exportable(ckpt_path)
    except ExportError as exc:
        raise ValueError(str(exc)) from None
    tok = checkpoint.load(ckpt_path).get("tokenizer")
    spm_bytes = bytes(tok["model"]) if isinstance(tok, dict) and tok.get("model") else None
    return exportable, spm_bytes


def _our_tokenizer(model_path, is_gguf, tokenizer_path, exportable, notes):
    """reference/tokenizer.py on MODEL's vocabulary (a llama2.c file has none: --tokenizer, else
    the ckpt's), or None with a note when it cannot be built."""
    from llama2_scratch.model_files import load_tokenizer
    from reference.runtime.fast_tokenizer import FastTokenizer as Tokenizer

    try:
        if is_gguf:
            return load_tokenizer(model_path)
        if tokenizer_path is not None:
            return load_tokenizer(tokenizer_path, llama2c.read(model_path).args.vocab_size)
        if exportable is not None and exportable.vocab is not None:
            return Tokenizer(exportable.vocab)
    except ValueError as exc:
        notes.append(f"numpy tokenizer: {exc}")
    return None


def _sentencepiece_encoder(spm_bytes, notes):
    """encode(text) -> ids with the trained SentencePiece model (BOS/EOS as our reader of the
    same .model decides: Llama's convention), or None with a note."""
    if not spm_bytes:
        notes.append("no SentencePiece .model (in the ckpt or --tokenizer): tokenizer checks compare "
                     "ours with llama.cpp only")
        return None
    try:
        import sentencepiece
    except ImportError:
        notes.append("sentencepiece is not installed: its tokenizer checks were skipped")
        return None
    from formats import spm

    processor = sentencepiece.SentencePieceProcessor(model_proto=spm_bytes)
    vocab = spm.from_bytes(spm_bytes, "the checkpoint's tokenizer").vocab
    return lambda text: list(processor.encode(text, add_bos=vocab.add_bos, add_eos=vocab.add_eos))


def _tokenizer_checks(texts, encoders, dtype):
    """The first encoder (sentencepiece when there is one) is the reference for the others."""
    names = list(encoders)
    checks = []
    for prompt, text in texts.items():
        ref_ids = encoders[names[0]](text)
        for cand in names[1:]:
            cand_ids = encoders[cand](text)
            same = cand_ids == ref_ids
            checks.append(Check(f"tokenizer/{prompt}", names[0], cand, dtype, "ids_equal", float(same), 1.0, ">=",
                                "" if same else _first_difference(ref_ids, cand_ids)))
    return checks


def _logits_checks(impls, prompt, window, dtype):
    """Every pair's logits metrics on one prompt (the (T, V) arrays are dropped afterwards)."""
    logits = {impl.name: _safe_logits(impl, window) for impl in impls}
    checks = []
    for i, ref in enumerate(impls):
        for cand in impls[i + 1:]:
            limits = _thresholds(dtype, ref.name)
            a, b = logits[ref.name], logits[cand.name]
            failed = a if isinstance(a, str) else b if isinstance(b, str) else None
            metrics = dict.fromkeys(("max_abs_diff", "nmse", "kl", "top1")) if failed else logit_metrics(a, b)
            for metric, value in metrics.items():
                detail = failed or (_position_detail(a, b) if metric == "top1" and value < 1 else "")
                checks.append(Check(f"logits/{prompt}", ref.name, cand.name, dtype, metric, value,
                                    getattr(limits, metric), ">=" if metric == "top1" else "<=", detail))
    return checks


def _greedy_checks(impls, prompt, start, n, dtype):
    """Each implementation continues `start` greedily on its own; every pair's identical prefix."""
    paths = {impl.name: _safe_greedy(impl, start, n) for impl in impls}
    checks = []
    for i, ref in enumerate(impls):
        for cand in impls[i + 1:]:
            limit = _thresholds(dtype, ref.name).greedy
            a, b = paths[ref.name], paths[cand.name]
            failed = a if isinstance(a, str) else b if isinstance(b, str) else None
            if failed:
                checks.append(Check(f"greedy/{prompt}", ref.name, cand.name, dtype, "identical_prefix", None,
                                    limit, ">=", failed))
                continue
            same = identical_prefix(a, b)
            detail = (f"{len(a)} tokens identical" if same == len(a) else
                      f"diverges at new token {same} of {len(a)}: {ref.name} {a[same]}, {cand.name} {b[same]}")
            checks.append(Check(f"greedy/{prompt}", ref.name, cand.name, dtype, "identical_prefix",
                                same / len(a) if a else 1.0, limit, ">=", detail))
    return checks


def run_verify(model_path, ckpt_path=None, use_llama_cpp=False, tokenizer_path=None, threads=None):
    """Build every implementation that the arguments allow, run the prompts and return a Report.

    Raises ValueError (the CLI's exit status 2) for requests that cannot run at all: a missing
    package asked for, a dtype without thresholds, nothing to compare. A file that fails to load
    in one implementation is a failed `load` check, not an error: a broken export is exactly what
    this command exists to report.
    """
    model_path = str(model_path)
    is_gguf = detect.is_gguf(model_path)
    dtype = file_dtype(model_path)
    _check_request(model_path, dtype, is_gguf, ckpt_path, use_llama_cpp)
    checks, notes = [], []

    # The trained model and its tokenizer, when there is a ckpt.
    exportable, spm_bytes = _load_ckpt(ckpt_path) if ckpt_path is not None else (None, None)
    if tokenizer_path is not None and detect.is_sentencepiece_model(tokenizer_path):     # a .model file
        with open(tokenizer_path, "rb") as f:
            spm_bytes = f.read()
    tokenizer = _our_tokenizer(model_path, is_gguf, tokenizer_path, exportable, notes)
    if tokenizer is None and not spm_bytes:
        raise ValueError(f"{model_path}: no tokenizer: pass --tokenizer (a .model or tokenizer.bin)")

    # The implementations, reference first: torch, then NumPy, then llama.cpp.
    impls = []
    if exportable is not None:
        impls.append(TorchModel(exportable, threads))
        mismatches = config_mismatches(model_path, exportable.model_args)
        checks.append(Check("config", TORCH, "file", dtype, "mismatched_fields", len(mismatches), 0, "<=",
                            "; ".join(mismatches)))
    max_seq_len = exportable.model_args["max_seq_len"] if exportable else None
    try:
        impls.append(NumpyModel(model_path))
        checks.append(Check("load", NUMPY, "file", dtype, "loads", 1, 1, ">="))
        max_seq_len = max_seq_len or impls[-1].args.max_seq_len
    except ValueError as exc:
        checks.append(Check("load", NUMPY, "file", dtype, "loads", 0, 1, ">=", str(exc)))
    max_seq_len = max_seq_len or _declared_context(model_path)
    llama = None
    if use_llama_cpp:
        try:
            llama = LlamaCppModel(model_path, max_seq_len, threads)
            impls.append(llama)
            checks.append(Check("load", LLAMA_CPP, "file", dtype, "loads", 1, 1, ">="))
        except ValueError as exc:
            checks.append(Check("load", LLAMA_CPP, "file", dtype, "loads", 0, 1, ">=", str(exc)))
    try:
        # Tokenizers: sentencepiece (the truth) vs ours vs llama.cpp's, on every prompt.
        encoders = {}
        sp_encode = _sentencepiece_encoder(spm_bytes, notes)
        if sp_encode is not None:
            encoders[SENTENCEPIECE] = sp_encode
        if tokenizer is not None:
            encoders[NUMPY] = tokenizer.encode
        if llama is not None:
            encoders[LLAMA_CPP] = llama.tokenize
        main_encoder = tokenizer.encode if tokenizer is not None else sp_encode
        texts = prompt_texts(main_encoder, max_seq_len)
        checks += _tokenizer_checks(texts, encoders, dtype)

        # Logits and greedy continuations, every pair, on the ids our tokenizer gives.
        if len(impls) < 2:
            notes.append("fewer than two implementations loaded: no logits or greedy comparison")
        else:
            for prompt, text in texts.items():
                ids = main_encoder(text)
                checks += _logits_checks(impls, prompt, ids[:max_seq_len], dtype)
                if prompt != FULL_CONTEXT:                      # that one leaves no room to continue
                    start = greedy_prompt(ids, max_seq_len)
                    n = min(GREEDY_TOKENS, max_seq_len - len(start))
                    checks += _greedy_checks(impls, prompt, start, n, dtype)
    finally:
        if llama is not None:
            llama.close()
    args = impls[0].args.to_dict() if impls else {}
    return Report(model_path, dtype, args, [impl.name for impl in impls], checks, notes)


def _declared_context(path):
    if detect.is_gguf(path):
        value = gguf.read(path).metadata.get("llama.context_length")
        return int(value.value) if value is not None else 256
    return llama2c.read(path).args.max_seq_len


def _safe_logits(impl, ids):
    """(T, V) logits, or a one-line reason when this implementation cannot run the ids (e.g. a
    vocabulary smaller than the tokenizer's ids)."""
    try:
        return impl.logits(ids)
    except (ValueError, RuntimeError, IndexError) as exc:
        return f"{impl.name} failed: {exc}"


def _safe_greedy(impl, ids, n):
    try:
        return impl.greedy(ids, n)
    except (ValueError, RuntimeError, IndexError) as exc:
        return f"{impl.name} failed: {exc}"


def _first_difference(a, b):
    k = identical_prefix(a, b)
    return f"first difference at index {k}: {a[k:k + 4]} vs {b[k:k + 4]} (lengths {len(a)}, {len(b)})"


def _position_detail(ref, cand):
    disagree = np.flatnonzero(ref.argmax(axis=-1) != cand.argmax(axis=-1))
    return f"argmax differs at {len(disagree)} of {len(ref)} positions, first at position {disagree[0]}"
