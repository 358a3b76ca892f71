"""Llama 2 in torch, for training; the same maths as the NumPy reference (reference/).

Parameter names are llama2.c's (`tok_embeddings`, `layers.{i}.attention.{wq,wk,wv,wo}`,
`layers.{i}.feed_forward.{w1,w2,w3}`, `attention_norm`, `ffn_norm`, `norm`, `output`), so a
state dict is a ckpt.pt `model` entry and maps one to one onto llama2.c and GGUF files.
Shapes: B batch, T positions, D, H, Hkv, hd, F, V as in formats/spec.py.
`Transformer.run_with_cache(tokens)` keeps every activation of one sequence under the names of
reference/cache.py, as the NumPy reference's run_with_cache does, so the two compare point by point.

Init (llama2.c's, so a model trained here starts where llama2.c's does): every Linear and the
embedding N(0, 0.02); wo and w3 N(0, 0.02/sqrt(2 * n_layers)), RMSNorm gains 1. The scaled
pair is llama2.c's choice; GPT-2 scales the projections that write into the residual stream
(wo and w2) so that its variance does not grow with depth.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from formats.spec import ModelArgs
from reference.cache import no_record, scope
from trainer.loss import linear_cross_entropy

INIT_STD = 0.02


class RMSNorm(nn.Module):
    """x * rsqrt(mean(x²) + eps) * weight over the last axis, computed in at least float32."""

    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        # Half-precision inputs are normalized in float32 (mean(x²) loses too much in 16 bits);
        # float32 and float64 are kept as they are.
        compute_dtype = torch.promote_types(x.dtype, torch.float32)
        xf = x.to(compute_dtype)
        normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


def rope_tables(head_dim, max_seq_len, theta, dtype=torch.float32):
    """cos and sin of position * theta^(-2j/hd), each (max_seq_len, hd/2).

    Computed in float64 and rounded once to `dtype` (bit-identical to reference.rope.rope_tables).
    """
    pair = torch.arange(head_dim // 2, dtype=torch.float64)
    freqs = theta ** (-2 * pair / head_dim)                                  # (hd/2,)
    angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float64), freqs)
    return torch.cos(angles).to(dtype), torch.sin(angles).to(dtype)


def apply_rope(x, cos, sin):
    """Rotate adjacent pairs (x[2j], x[2j+1]): x (B, T, n, hd), cos/sin (T, hd/2) -> x's shape."""
    x_even, x_odd = x.unflatten(-1, (-1, 2)).unbind(-1)                      # (B, T, n, hd/2) each
    cos, sin = cos[:, None, :], sin[:, None, :]                              # (T, 1, hd/2)
    rotated = torch.stack([x_even * cos - x_odd * sin, x_even * sin + x_odd * cos], dim=-1)
    return rotated.flatten(-2).type_as(x)                                    # pairs back to hd


def causal_scores_and_pattern(q, k):
    """The scores and pattern that scaled_dot_product_attention computes inside its kernel and
    never returns, for the study cache: q (B, H, T, hd), k (B, Hkv, T, hd) -> two (B, H, T, T).

    scores = q kᵀ / sqrt(hd) with -inf above the diagonal, pattern = softmax(scores); query head
    h reads kv head h // (H / Hkv). Only run_with_cache calls it: training never pays for it.
    """
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)                # (B, H, T, hd)
    scores = (q @ k.transpose(-1, -2)) * (1 / math.sqrt(q.shape[-1]))       # (B, H, T, T)
    T = q.shape[2]
    future = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)
    scores = scores.masked_fill(future, float("-inf"))
    return scores, torch.softmax(scores, dim=-1)


class Attention(nn.Module):
    """Causal grouped-query self-attention: query head h reads kv head h // (H / Hkv)."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = args.n_heads, args.n_kv_heads, args.head_dim
        self.wq = nn.Linear(args.dim, args.dim, bias=False)
        self.wk = nn.Linear(args.dim, args.kv_dim, bias=False)
        self.wv = nn.Linear(args.dim, args.kv_dim, bias=False)
        self.wo = nn.Linear(args.dim, args.dim, bias=False)
        self.dropout = args.dropout
        self.resid_dropout = nn.Dropout(args.dropout)

    def forward(self, x, cos, sin, record=no_record):
        """x (B, T, D) -> (B, T, D). record: given q, k, v, q_rot, k_rot, scores, pattern and z,
        each (B, heads, T, hd or T) (reference/cache.py)."""
        B, T, D = x.shape
        q = self.wq(x).view(B, T, self.n_heads, self.head_dim)
        k = self.wk(x).view(B, T, self.n_kv_heads, self.head_dim)
        v = self.wv(x).view(B, T, self.n_kv_heads, self.head_dim)
        for name, t in (("q", q), ("k", k), ("v", v)):
            record(name, t.transpose(1, 2))
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))                    # (B, heads, T, hd)
        record("q_rot", q)
        record("k_rot", k)
        if record is not no_record:
            scores, pattern = causal_scores_and_pattern(q, k)
            record("scores", scores)
            record("pattern", pattern)
        # enable_gqa lets the kernel share each kv head among its query heads without a copy;
        # the scale defaults to 1/sqrt(hd).
        out = record("z", F.scaled_dot_product_attention(
            q, k, v, is_causal=True, enable_gqa=True,
            dropout_p=self.dropout if self.training else 0.0))               # (B, H, T, hd)
        out = out.transpose(1, 2).reshape(B, T, D)
        return self.resid_dropout(self.wo(out))


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x)."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.w1 = nn.Linear(args.dim, args.hidden_dim, bias=False)
        self.w2 = nn.Linear(args.hidden_dim, args.dim, bias=False)
        self.w3 = nn.Linear(args.dim, args.hidden_dim, bias=False)
        self.dropout = nn.Dropout(args.dropout)

    def forward(self, x, record=no_record):
        """x (B, T, D) -> (B, T, D). record: given gate (w1 x), up (w3 x), act (silu(gate) * up)."""
        gate, up = record("gate", self.w1(x)), record("up", self.w3(x))
        return self.dropout(self.w2(record("act", F.silu(gate) * up)))


class TransformerBlock(nn.Module):
    """Pre-norm block: h = x + attention(norm(x)); out = h + feed_forward(norm(h))."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.attention = Attention(args)
        self.feed_forward = FeedForward(args)
        self.attention_norm = RMSNorm(args.dim, args.norm_eps)
        self.ffn_norm = RMSNorm(args.dim, args.norm_eps)

    def forward(self, x, cos, sin, record=no_record):
        record("resid_pre", x)
        attn_out = self.attention(record("attn_norm", self.attention_norm(x)), cos, sin, scope(record, "attn."))
        h = record("resid_mid", x + record("attn_out", attn_out))
        mlp_out = self.feed_forward(record("ffn_norm", self.ffn_norm(h)), scope(record, "mlp."))
        return record("resid_post", h + record("mlp_out", mlp_out))


class Transformer(nn.Module):
    """The whole Llama 2 network. forward(tokens, targets=None) -> (logits, loss).

    With tied embeddings the state dict still lists `output.weight` (the same tensor as
    `tok_embeddings.weight`), as llama2.c's does; writers of tied files drop it. For a float64
    model use `.double()`, which also rebuilds the RoPE tables in float64.
    """

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim)
        self.dropout = nn.Dropout(args.dropout)
        self.layers = nn.ModuleList(TransformerBlock(args) for _ in range(args.n_layers))
        self.norm = RMSNorm(args.dim, args.norm_eps)
        self.output = nn.Linear(args.dim, args.vocab_size, bias=False)
        if args.tie_embeddings:
            # One Parameter under two names: the state dict still lists output.weight.
            self.output.weight = self.tok_embeddings.weight
        self.set_rope_tables(torch.float32)
        self.reset_parameters()

    def set_rope_tables(self, dtype):
        """(Re)build the RoPE tables in `dtype`. Non-persistent: not part of the state dict."""
        cos, sin = rope_tables(self.args.head_dim, self.args.max_seq_len, self.args.rope_theta, dtype)
        device = self.tok_embeddings.weight.device
        self.register_buffer("rope_cos", cos.to(device), persistent=False)
        self.register_buffer("rope_sin", sin.to(device), persistent=False)

    def double(self):
        """Cast to float64 with tables rebuilt in float64: casting the float32 tables up would
        keep their float32 rounding (~1e-8), far above the float64 parity bound."""
        super().double()
        self.set_rope_tables(torch.float64)
        return self

    @torch.no_grad()
    def reset_parameters(self):
        """llama2.c's init (see the module docstring)."""
        residual_std = INIT_STD / math.sqrt(2 * self.args.n_layers)
        for name, param in self.named_parameters():
            if name.endswith("norm.weight"):
                nn.init.ones_(param)
            elif name.endswith(("attention.wo.weight", "feed_forward.w3.weight")):
                nn.init.normal_(param, mean=0.0, std=residual_std)
            else:
                nn.init.normal_(param, mean=0.0, std=INIT_STD)

    def forward(self, tokens, targets=None, record=no_record):
        """tokens: (B, T) ids -> (logits (B, T, V), None), or with targets (None, loss).

        Without targets, logits come for every position. With targets (B, T), ids of -1 ignored,
        only the mean cross-entropy comes back: it is computed chunk by chunk without ever
        holding the (B, T, V) logits (trainer/loss.py), the largest tensor in training.
        record: called as record(name, tensor) on every activation, batch axis first.
        """
        T = tokens.shape[1]
        h = record("embed", self.dropout(self.tok_embeddings(tokens)))        # (B, T, D)
        cos, sin = self.rope_cos[:T], self.rope_sin[:T]                       # (T, hd/2)
        for i, layer in enumerate(self.layers):
            h = layer(h, cos, sin, scope(record, f"blocks.{i}."))
        h = record("final_norm", self.norm(h))
        if targets is None:
            return record("logits", self.output(h)), None                     # (B, T, V)
        return None, linear_cross_entropy(h.flatten(0, 1), self.output.weight, targets.flatten())

    @torch.no_grad()
    def run_with_cache(self, tokens):
        """(logits (T, V), cache) for one sequence of ids (T,), every activation kept.

        cache maps the names of reference/cache.py to tensors shaped as there (the batch axis
        dropped), exactly the values forward computes; scores and pattern, which the fused
        attention kernel never materializes, come from causal_scores_and_pattern. Call .eval()
        first, or dropout (when configured) draws into them.
        """
        tokens = torch.as_tensor(tokens, dtype=torch.long, device=self.tok_embeddings.weight.device)
        if tokens.ndim != 1 or not 0 < len(tokens) <= self.args.max_seq_len:
            raise ValueError(f"tokens must be 1 to {self.args.max_seq_len} ids in one row, got shape "
                             f"{tuple(tokens.shape)}")
        cache = {}

        def keep(name, tensor):
            cache[name] = tensor[0]
            return tensor

        logits, _ = self(tokens[None], record=keep)
        return logits[0], cache
