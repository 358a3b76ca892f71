"""The Llama 2 forward pass arranged for speed: reference/model.py's maths, float32 only.

reference/model.py says what is computed and stays the reference; `FastLlama` computes the same
thing with the same interface (`forward(tokens, start_pos, all_logits)`, `args`, `n_cached`), and
tests/test_fast_path.py holds the two together (logits within a named tolerance, greedy ids
identical, F32 and Q8_0). What is different, and why (measured with bench/run.py, see README):

- Logits only where asked: at decode the classifier (V, D) is the largest matmul of a small
  model (9.2M of the seed model's 15M weights), so it runs for the last position only.
- A one-token step is memory-bound: every weight is read once per token (61 MB at the seed
  config in float32) and used for one multiply-add. Its products are np.vecdot (a SIMD dot per
  row), which streams weights at ~30 GB/s on one core here where OpenBLAS's sgemv reached 13
  (blockwise.product); prompts (T > 1) go to BLAS sgemm.
- Weights are read once into memory backed by huge pages (reference/runtime/memory.py): streamed through
  the file's memory map in 4 KiB pages, decode ran 6-17% slower (dim 288 to 768; a file the page
  cache holds in 2 MiB folios maps as fast, see there). The copy keeps file order, so wq, wk and
  wv become one (D + 2*kv_dim, D) matrix, and one product makes q, k and v, for free: GGUF
  writers store the three back to back (ours, llama.cpp's convert), and the fused matrix is then
  a view spanning them (`fused_rows`). w1 and w3 are not adjacent (w2 lies between them);
  fusing them made prefill's two products 3% faster and decode not at all, so float32 keeps them
  apart. Quantized matrices are gathered at load anyway (load.read_codes), w1 and w3 into one
  array when they share a type, so there they are fused too.
- Quantized matrices stay quantized (reference/runtime/blockwise.py): every type becomes int8
  codes and block scales (+ block mins) at load, the form Q8_0 has in the file, and each product
  casts an L2-sized chunk of rows to float32 at a time.
- A decode step runs in buffers allocated once, every op writing with `out=`; the Python work
  per layer is a fixed ~25 NumPy calls, none of them per head.
- RoPE is one complex multiply for q and k together: pair (x[2j], x[2j+1]) read as the complex
  number x[2j] + i x[2j+1], times cos + i sin, is exactly rope.apply_rope's formula.
- Attention is one batched matmul over the heads (kv heads as the batch, their G query heads as
  rows); a decode step needs no causal mask, since its one query may see every cached key. A
  prompt's queries go in blocks of QUERY_BLOCK, each scoring only the keys it may see: prefill of
  255 tokens ran 1.02-1.11x faster at dim 288 and 1.04x at 768 (bench/bench_fast_variants.py).
- Threads: a one-token step can share its largest products between `threads` Python threads
  (Linear), which pays only when the other core is idle, and runs BLAS on one thread meanwhile
  (reference/runtime/blas.py); so do a prompt's products where the matrices are compressed,
  and then its attention (by kv heads) and SwiGLU (by columns) are shared out too. Meanwhile
  each thread is held to a CPU of its own (reference/runtime/affinity.py): after an idle spell
  Linux woke both onto one core. A float32 model's prompts use BLAS's own threads.

Shapes as in model.py: T new tokens, S = start_pos + T cached positions, D, H, Hkv, G = H / Hkv,
hd, F, V.

Runtime (reference/runtime/__init__.py): read reference/model.py first.
"""

import dataclasses
import math
import threading

import numpy as np

from reference.runtime import affinity, blas
from reference.runtime.blockwise import BlockMatrix, Int8BlockMatrix, fused_rows, product
from formats.spec import ModelArgs
from reference.runtime.memory import zeros_on_touch
from reference.model import LAYER_TENSORS, check_positions, matching_weights
from reference.rope import RopeTable


# Queries per block in a prompt's attention (see FastLlama._attention). At a 255-token prompt,
# blocks of 64 score 63% of the (T, S) pairs that one block would.
QUERY_BLOCK = 64


class Linear:
    """x @ w.T for the model's weights, a large product split across threads.

    With threads > 1 the rows of a large product are shared out, each thread taking a contiguous
    block (NumPy releases the GIL inside its loops); BLAS runs on one thread meanwhile
    (reference/runtime/blas.py: OpenBLAS's own threads spin after each call and took the cores
    ours needed). Each hand-off to the other thread costs ~20-45 us here (waking a thread on this
    VM), so only products that take much longer than that are split:
    - one token, float32, memory-bound (one core's loads do not use all of the memory
      bandwidth): matrices of at least SPLIT_ELEMENTS weights, which here is only the classifier
      (V x D: 9.2M weights at the seed config). Splitting it made seed-config decode 1.16x faster;
      splitting the layers' matrices too (up to 3.1M weights at dim 768) measured slower.
    - one token, compressed (BlockMatrix), compute-bound (the int8 -> float32 cast and the block
      products): matrices of at least SPLIT_QUANTIZED weights. Q8_0 decode went from 33 to 46
      tok/s at dim 768 and from 214 to 295 at dim 288 (2^18 and 2^20 measured lower).
    - a prompt (T > 1) in a model with compressed matrices (`split_prompts`): products of at
      least SPLIT_PROMPT multiply-adds, each thread dequantizing its own rows a chunk at a time
      and calling a one-thread sgemm. At TinyLlama-1.1B's shape (Q8_0, 128-token prompt, 2
      threads) prefill went from 40-50 to 57-61 tok/s: the dequantizing had run on one core while
      BLAS's second thread waited. Float32 models leave prompts to BLAS's threads, which measured
      faster there (seed config f32, 255 tokens: 5299 tok/s against 4260 split by us).
    """
    SPLIT_ELEMENTS = 1 << 22
    SPLIT_QUANTIZED = 1 << 19
    SPLIT_PROMPT = 1 << 22

    def __init__(self, threads=1, split_prompts=False):
        self.threads = max(1, int(threads))
        self.split_prompts = bool(split_prompts)
        # [calling thread's CPU, each helper's], or None: see pinned().
        self._cpus = affinity.plan(self.threads)
        self._helpers = [_Helper(None if self._cpus is None else self._cpus[i + 1])
                         for i in range(self.threads - 1)]

    def pinned(self):
        """A context in which the calling thread keeps to a CPU of its own, apart from the helpers'
        (reference/runtime/affinity.py): the products it splits then run side by side even when
        the threads wake from a long sleep."""
        return affinity.pinned(None if self._cpus is None else self._cpus[0])

    def __call__(self, x, w, out=None):
        """(T, in) @ (out, in).T -> (T, out), written into `out` when given."""
        n_rows, n_cols = w.shape
        if out is None:
            out = np.empty((x.shape[0], n_rows), dtype=np.float32)
        if not self._helpers or not self._worth_splitting(x.shape[0], w):
            return product(x, w, out)
        bounds = [n_rows * i // self.threads for i in range(self.threads + 1)]
        self.share(product, [(x, w, out, start, stop) for start, stop in zip(bounds, bounds[1:])])
        return out

    def share(self, function, calls):
        """function(*args) for each args in `calls` (at most `threads` of them), the first on the
        calling thread and the others on the helpers, all done when this returns."""
        for helper, args in zip(self._helpers, calls[1:]):
            helper.submit(function, *args)
        try:
            function(*calls[0])
        finally:
            for helper in self._helpers[:len(calls) - 1]:
                helper.wait()

    def _worth_splitting(self, n_tokens, w):
        n_weights = w.shape[0] * w.shape[1]
        if n_tokens > 1:
            return self.split_prompts and n_tokens * n_weights >= self.SPLIT_PROMPT
        return n_weights >= (self.SPLIT_QUANTIZED if isinstance(w, BlockMatrix) else self.SPLIT_ELEMENTS)


class _Helper:
    """A daemon thread that runs one call at a time: `submit` hands it over, `wait` returns when it
    is done and re-raises what it raised. Two locks and no queue: against a ThreadPoolExecutor
    (a Future, a queue and a condition per call) decode measured 1.03x (dim 288 Q8_0), 1.06x
    (768 Q8_0) and 1.02x (288 f32), the two alternating in one process, 7 runs each."""

    def __init__(self, cpu=None):
        self._cpu = cpu
        self._go, self._done = threading.Lock(), threading.Lock()
        self._go.acquire()
        self._done.acquire()
        self._call, self._error = None, None
        threading.Thread(target=self._serve, daemon=True, name="llama2-scratch-linear").start()

    def _serve(self):
        if self._cpu is not None:
            affinity.pin(self._cpu)
        while True:
            self._go.acquire()
            function, args = self._call
            try:
                function(*args)
            except BaseException as exc:      # handed to the caller by wait()
                self._error = exc
            self._done.release()

    def submit(self, function, *args):
        self._call = (function, args)
        self._go.release()

    def wait(self):
        self._done.acquire()
        error, self._error = self._error, None
        if error is not None:
            raise error


@dataclasses.dataclass(frozen=True)
class FastLayer:
    """One block's weights as the fast path uses them; wqkv (wq, wk, wv stacked), wqk (wq, wk
    stacked, where wqkv is None) and w13 (w1, w3 stacked) are views spanning the separate
    matrices when those lie back to back, else None."""
    attention_norm: np.ndarray      # (D,)
    wqkv: object                    # (D + 2*kv_dim, D), or None when wq, wk, wv are used apart
    wq: object                      # (D, D)
    wk: object                      # (kv_dim, D)
    wv: object                      # (kv_dim, D)
    wo: object                      # (D, D)
    ffn_norm: np.ndarray            # (D,)
    w1: object                      # (F, D)
    w2: object                      # (D, F)
    w3: object                      # (F, D)
    w13: object = None              # (2F, D): w1 and w3 stacked, or None
    wqk: object = None              # (D + kv_dim, D): wq and wk stacked, or None


class Buffers:
    """Every activation of one forward call of T tokens, allocated once (reused for T = 1)."""

    def __init__(self, args: ModelArgs, n_tokens, n_keys):
        T, D, F, kv = n_tokens, args.dim, args.hidden_dim, args.kv_dim
        f32 = np.float32
        self.x = np.empty((T, D), f32)                  # the residual stream
        self.xn = np.empty((T, D), f32)                 # rmsnorm(x)
        self.qkv = np.empty((T, D + 2 * kv), f32)       # q | k | v, side by side per token
        self.attn = np.empty((T, D), f32)               # attention output, heads concatenated
        self.proj = np.empty((T, D), f32)               # wo or w2 output before the residual add
        self.gate_up = np.empty((T, 2 * F), f32)        # w1 x | w3 x
        self.gate = self.gate_up[:, :F]                 # w1 x, then silu(w1 x) * (w3 x)
        self.up = self.gate_up[:, F:]                   # w3 x
        self.tmp = np.empty((T, F), f32)                # silu's exp(-a) + 1
        self.scores = np.empty((args.n_kv_heads, args.n_heads // args.n_kv_heads, T, n_keys), f32)
        self.mean_square = np.empty((T, 1), f32)


class FastLlama:
    """Llama 2 inference, float32, for one sequence: same interface and results as model.Llama
    (up to float32 rounding; see tests/test_fast_path.py).

    weights: llama2.c names -> float32 arrays (views are kept, never copied) or, for matrices,
    BlockMatrix objects (quantized weights that stay quantized; reference/runtime/load.py makes them).
    threads: how many threads share a large one-token product (see Linear).
    """

    def __init__(self, args: ModelArgs, weights, threads=1):
        self.args = args
        w = _checked(args, weights)
        # Compressed matrices: prompts' products split between our threads too (see Linear).
        self.linear = Linear(threads, split_prompts=any(isinstance(m, BlockMatrix) for m in w.values()))
        self.dtype = np.dtype(np.float32)
        self.tok_embeddings = w["tok_embeddings.weight"]                    # (V, D)
        self.norm = w["norm.weight"]                                          # (D,)
        self.output = w.get("output.weight", self.tok_embeddings)            # (V, D)
        self.layers = []
        for i in range(args.n_layers):
            layer = {field: w[f"layers.{i}.{name}.weight"] for field, name in LAYER_TENSORS.items()}
            wqkv = _fused([layer["wq"], layer["wk"], layer["wv"]])
            wqk = None if wqkv is not None else _fused([layer["wq"], layer["wk"]])
            self.layers.append(FastLayer(wqkv=wqkv, wqk=wqk, w13=_fused([layer["w1"], layer["w3"]]), **layer))
        # (S_max, hd/2) complex64 with real part cos and imaginary part sin, the same float32s,
        # computed as positions are reached (a header's context may be 2^31).
        self.rope = RopeTable(args.head_dim, args.max_seq_len, args.rope_theta, np.complex64, "complex")
        cache_shape = (args.n_layers, args.n_kv_heads, args.max_seq_len, args.head_dim)
        self.key_cache = zeros_on_touch(cache_shape)                         # (L, Hkv, S_max, hd)
        self.value_cache = zeros_on_touch(cache_shape)
        self.n_cached = 0
        self._decode = Buffers(args, 1, args.max_seq_len)                    # reused every step

    def forward(self, tokens, start_pos=0, all_logits=False):
        """As model.Llama.forward: logits of the last position (V,), or of all (T, V)."""
        tokens = check_positions(self.args, tokens, start_pos, self.n_cached)
        if len(tokens) > 1 and not self.linear.split_prompts:
            return self._forward(tokens, start_pos, all_logits)             # BLAS's own threads
        with blas.single_threaded(), self.linear.pinned():
            return self._forward(tokens, start_pos, all_logits)

    def _forward(self, tokens, start_pos, all_logits):
        n_tokens, end_pos = len(tokens), start_pos + len(tokens)
        b = self._decode if n_tokens == 1 else Buffers(self.args, n_tokens, end_pos)
        if isinstance(self.tok_embeddings, BlockMatrix):
            b.x[...] = self.tok_embeddings.take(tokens)                       # (T,) -> (T, D)
        else:
            np.take(self.tok_embeddings, tokens, axis=0, out=b.x)
        rope = self.rope[start_pos:end_pos, None, :]                          # (T, 1, hd/2)
        # silu's exp(-a) overflows to inf for a < -88: a / inf = -0 is the right limit (swiglu.py).
        with np.errstate(over="ignore"):
            for i, layer in enumerate(self.layers):
                self._attention(i, layer, b, rope, start_pos, end_pos)
                self._feed_forward(layer, b)
        self.n_cached = end_pos
        # Only the logits that are asked for: (T, D) @ (D, V) is the biggest matmul here.
        h = b.x if all_logits else b.x[-1:]                                   # (T or 1, D)
        hn = _rmsnorm(h, self.norm, self.args.norm_eps, b.xn[:len(h)], b.mean_square[:len(h)])
        logits = self.linear(hn, self.output)                                 # -> (T or 1, V)
        return logits if all_logits else logits[0]

    def _attention(self, i, layer, b, rope, start_pos, end_pos):
        """x += wo · attention(rope(q), rope(k), v) over layer i's cache. (T, D) -> (T, D)."""
        args = self.args
        T, D, kv, hd = b.x.shape[0], args.dim, args.kv_dim, args.head_dim
        Hkv, G = args.n_kv_heads, args.n_heads // args.n_kv_heads
        xn = _rmsnorm(b.x, layer.attention_norm, args.norm_eps, b.xn, b.mean_square)
        if layer.wqkv is not None:
            self.linear(xn, layer.wqkv, out=b.qkv)                            # (T, D) -> (T, D+2kv)
        elif layer.wqk is not None:
            self.linear(xn, layer.wqk, out=b.qkv[:, :D + kv])
            self.linear(xn, layer.wv, out=b.qkv[:, D + kv:])
        else:
            for w, part in ((layer.wq, b.qkv[:, :D]), (layer.wk, b.qkv[:, D:D + kv]),
                            (layer.wv, b.qkv[:, D + kv:])):
                self.linear(xn, w, out=part)
        # RoPE on q and k at once: their (T, H + Hkv, hd/2) complex pairs times (T, 1, hd/2).
        qk = b.qkv[:, :D + kv].view(np.complex64).reshape(T, args.n_heads + Hkv, hd // 2)
        np.multiply(qk, rope, out=qk)
        q = b.qkv[:, :D].reshape(T, Hkv, G, hd).transpose(1, 2, 0, 3)        # (Hkv, G, T, hd)
        k = b.qkv[:, D:D + kv].reshape(T, Hkv, hd).swapaxes(0, 1)            # (Hkv, T, hd)
        v = b.qkv[:, D + kv:].reshape(T, Hkv, hd).swapaxes(0, 1)
        self.key_cache[i, :, start_pos:end_pos] = k
        self.value_cache[i, :, start_pos:end_pos] = v
        out = b.attn.reshape(T, Hkv, G, hd).transpose(1, 2, 0, 3)           # (Hkv, G, T, hd) view
        if self._shares_prompt(T) and Hkv >= self.linear.threads:
            bounds = [Hkv * j // self.linear.threads for j in range(self.linear.threads + 1)]
            self.linear.share(self._attend, [(i, q, out, b.scores, start_pos, slice(h0, h1))
                                             for h0, h1 in zip(bounds, bounds[1:])])
        else:
            self._attend(i, q, out, b.scores, start_pos, slice(None))
        b.x += self.linear(b.attn, layer.wo, out=b.proj)

    def _attend(self, i, q, out, scores, start_pos, heads):
        """out = softmax(q k^T / sqrt(hd)) v for the kv heads `heads` (a slice) of layer i's cache,
        causal within the new tokens. q, out: (Hkv, G, T, hd); scores: (Hkv, G, T, S) scratch."""
        T, hd = q.shape[2], q.shape[3]
        # Queries in blocks: block [t0, t1) sees keys 0 .. start_pos + t1 - 1 at most, so the
        # keys no query of the block may see are never scored (a prompt's causal mask hides half
        # of the (T, S) scores). A single query is one block that sees every key.
        for t0 in range(0, T, QUERY_BLOCK):
            t1 = min(t0 + QUERY_BLOCK, T)
            n_keys = start_pos + t1
            keys = self.key_cache[i, heads, None, :n_keys]                   # (Hkv, 1, S', hd)
            values = self.value_cache[i, heads, None, :n_keys]
            block = scores[heads, :, t0:t1, :n_keys]                         # (Hkv, G, t1-t0, S')
            np.matmul(q[heads, :, t0:t1], keys.swapaxes(-1, -2), out=block)
            block *= 1 / math.sqrt(hd)                  # a Python float keeps float32 float32
            if t1 - t0 > 1:   # query t sees keys 0 .. start_pos + t
                hidden = np.arange(n_keys)[None, :] > np.arange(start_pos + t0, start_pos + t1)[:, None]
                np.copyto(block, -np.inf, where=hidden)
            _softmax_(block)
            np.matmul(block, values, out=out[heads, :, t0:t1])               # heads -> (T, D)

    def _feed_forward(self, layer, b):
        """x += w2 (silu(w1 x) * w3 x) on rmsnorm(x). (T, D) -> (T, D)."""
        xn = _rmsnorm(b.x, layer.ffn_norm, self.args.norm_eps, b.xn, b.mean_square)
        if layer.w13 is not None:
            self.linear(xn, layer.w13, out=b.gate_up)                           # (T, D) -> (T, 2F)
        else:
            self.linear(xn, layer.w1, out=b.gate)
            self.linear(xn, layer.w3, out=b.up)
        T, F = b.gate.shape
        if self._shares_prompt(T):              # each thread its own columns of the (T, F) arrays
            bounds = [F * j // self.linear.threads for j in range(self.linear.threads + 1)]
            self.linear.share(_swiglu_, [(b.gate[:, f0:f1], b.up[:, f0:f1], b.tmp[:, f0:f1])
                                         for f0, f1 in zip(bounds, bounds[1:])])
        else:
            _swiglu_(b.gate, b.up, b.tmp)
        b.x += self.linear(b.gate, layer.w2, out=b.proj)                      # (T, F) -> (T, D)

    def _shares_prompt(self, n_tokens):
        """Whether a prompt's attention and SwiGLU are shared between the threads too: where its
        products are (compressed matrices), else the helpers would wake for these alone. 2
        threads, each variant in its own process, runs alternating (medians of 15 at the seed
        config, Q4_0, 255 tokens; of 7 at the 1.1B shape, Q8_0, 128 tokens), against sharing
        neither: attention by kv heads, seed 5743 -> 6128 tok/s, 1.1B 65.9 -> 67.2; with SwiGLU
        by columns too, seed 5423 -> 6158, 1.1B 63.4 -> 64.3. The machine's drift between such
        runs is ~5%, so the 1.1B gains are within it."""
        return n_tokens > 1 and self.linear.split_prompts and self.linear.threads > 1


def _fused(matrices):
    """The matrices stacked along their rows without a copy, or None (see blockwise.fused_rows)."""
    if all(isinstance(m, Int8BlockMatrix) for m in matrices):
        return Int8BlockMatrix.fused(matrices)
    return fused_rows(matrices)


def _swiglu_(gate, up, tmp):
    """gate = silu(gate) * up in place, silu(a) = a / (1 + exp(-a)); tmp: scratch of gate's shape."""
    np.exp(np.negative(gate, out=tmp), out=tmp)
    tmp += 1
    np.divide(gate, tmp, out=gate)
    gate *= up


def _rmsnorm(x, weight, eps, out, mean_square):
    """rmsnorm.rmsnorm(x, weight, eps) written into `out`: (T, D) -> (T, D), same operation order."""
    if x.shape[0] == 1:
        # One token: the scale is one number, computed in Python (7 tiny NumPy calls -> 3). It is
        # rounded to float32 once, where the reference rounds mean, +eps, sqrt and 1/ each.
        np.multiply(x, 1 / math.sqrt(float(x[0] @ x[0]) / x.shape[1] + eps), out=out)
    else:
        np.einsum("td,td->t", x, x, out=mean_square[:, 0])                    # sum of squares
        mean_square /= x.shape[1]                                             # mean
        mean_square += eps
        np.sqrt(mean_square, out=mean_square)
        np.divide(1, mean_square, out=mean_square)                            # (T, 1)
        np.multiply(x, mean_square, out=out)
    out *= weight
    return out


def _softmax_(scores):
    """attention.softmax along the last axis, in place (ufunc reductions: no Python wrappers)."""
    scores -= np.maximum.reduce(scores, axis=-1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= np.add.reduce(scores, axis=-1, keepdims=True)


def _checked(args, weights):
    """Names and shapes as model.checked_weights, keeping BlockMatrix objects and array views."""
    shapes, weights = matching_weights(args, weights)
    # np.asarray does not copy a float32 array or a memmap view.
    return {name: w if isinstance(w, BlockMatrix) else np.asarray(w, dtype=np.float32)
            for name, w in ((name, weights[name]) for name in shapes)}
