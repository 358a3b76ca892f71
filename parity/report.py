"""The report: one Check per row, the Report that holds them, and its two renderings.

`verify --json` prints one document:

    {"ok": bool,                       every check passed
     "model": "path/to/MODEL",
     "dtype": "q8_0",                  the file's matrix type (f32 f16 bf16 q8_0 q4_0 q4_k ..., int8 for
                                       llama2.c v2), or its types joined by "+" ("q4_k+q6_k")
     "implementations": ["torch", "numpy", "llama.cpp"],     those that loaded, reference first
                                       (on a Hugging Face folder: transformers, not llama.cpp)
     "checks": [{"name": "logits/thai",             config | load | tokenizer/P | logits/P | greedy/P
                 "reference": "torch",              torch | numpy | transformers | llama.cpp | sentencepiece
                 "candidate": "llama.cpp",          ... or "file" for config and load rows
                 "dtype": "q8_0",
                 "metric": "kl",                    max_abs_diff nmse kl top1 identical_prefix ids_equal
                                                    mismatched_fields loads
                 "value": 0.00012,                  null when it could not be computed
                 "threshold": 0.005,
                 "ok": true,
                 "pass_if": "<=",                   how value meets threshold ("<=" or ">=")
                 "detail": ""}, ...],               where it failed: the first differing position,
                                                    token or field, or the loader's error
     "notes": ["..."]}                 what was skipped and why

The exit status is 0 when every check passes, 1 otherwise.
"""

import dataclasses
import math


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
    args: object                    # MODEL's ModelArgs (None when its stored values make no model)
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

    def table(self):
        """The text report: the model, the notes, one line per check, the verdict."""
        a = self.args
        shape = (f"dim {a.dim}, {a.n_layers} layers, {a.n_heads}/{a.n_kv_heads} heads, "
                 f"vocab {a.vocab_size}, context {a.max_seq_len}" if a else "its stored hyperparameters make no model")
        lines = [f"verify {self.model} [{self.dtype}]: {shape}",
                 f"implementations: {', '.join(self.implementations) or 'none'}"]
        lines += [f"note: {note}" for note in self.notes]
        lines.append(f"{'check':<24} {'reference':<13} {'candidate':<12} {'metric':<18} {'value':>10}   "
                     f"{'threshold':<11} ")
        for c in self.checks:
            value = "n/a" if c.value is None else f"{c.value:.3g}"
            lines.append(f"{c.name:<24} {c.reference:<13} {c.candidate:<12} {c.metric:<18} {value:>10}   "
                         f"{c.pass_if} {c.threshold:<8.3g} {'ok' if c.ok else 'FAIL'}")
        failed, total = len(self.failures), len(self.checks)
        lines.append(f"verify: all {total} checks passed" if not failed else
                     f"verify: {failed} of {total} checks FAILED")
        return "\n".join(lines)
