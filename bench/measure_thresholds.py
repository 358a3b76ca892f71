"""How parity/thresholds.py's limits for the quantized types were measured: every type llama.cpp
makes, alone in a file, verified against the model it came from.

    python bench/measure_thresholds.py [--types q4_k q6_k ...] [--models trained256 ...]

Models (ckpt.pt, as `verify --ckpt` reads them; tests/support/verify.py builds them):
    trained256   dim 256 / hidden 768 / 2 layers / 4 heads, 2 kv heads, context 192, trained 200
                 steps on Tiny Shakespeare with a 384-piece vocabulary (every row divides into
                 blocks of 256)
    random256    dim 256 / hidden 768 / 2 layers, random, Llama 2's 32000-piece vocabulary, untied
                 classifier scaled to well-separated logits, context 128
    trained64    the verify tests' fixture shape (dim 64, 60 steps): k-quant and i-quant rows of 64
                 do not divide into 256, so llama.cpp writes its fallback types (q5_0, q5_1, q8_0,
                 iq4_nl) instead, and those files say what verify meets on small models
Each is exported to an f32 GGUF and quantized by llama.cpp (llama_model_quantize with `pure`:
every matrix in the type, token embedding and classifier included; an importance matrix of ones
where llama.cpp asks for one), then `verify --ckpt --llama-cpp` runs on it (threads 1). Printed:
per type and pair table (vs torch: torch vs numpy and torch vs llama.cpp; same file: numpy vs
llama.cpp), the worst value of each logit metric over the files holding that type alone and
every prompt. Files of several types (fallbacks) are listed apart, not attributed.
Types with no limits yet are measured under a placeholder (the values do not depend on limits).
"""

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_data import BESIDE_CHECKOUT  # noqa: E402
from data import corpora  # noqa: E402
from formats.ggml import GGMLType  # noqa: E402
from models import open_model  # noqa: E402
from parity import TORCH, thresholds  # noqa: E402
from parity.run import run_verify  # noqa: E402
from tests.support import verify  # noqa: E402
from tests.support.ggml_c import llama_cpp, quantize_model  # noqa: E402

# type -> the llama_ftype (LLAMA_FTYPE_MOSTLY_<name>) whose main type it is
FTYPES = {"q8_0": "Q8_0", "q4_0": "Q4_0", "q4_1": "Q4_1", "q5_0": "Q5_0", "q5_1": "Q5_1",
          "q2_k": "Q2_K", "q3_k": "Q3_K_M", "q4_k": "Q4_K_M", "q5_k": "Q5_K_M", "q6_k": "Q6_K",
          "iq4_nl": "IQ4_NL", "iq4_xs": "IQ4_XS", "iq3_s": "IQ3_S", "iq3_xxs": "IQ3_XXS",
          "iq2_xxs": "IQ2_XXS", "iq2_xs": "IQ2_XS", "iq2_s": "IQ2_M", "iq1_s": "IQ1_S", "iq1_m": "IQ1_M",
          "tq1_0": "TQ1_0", "tq2_0": "TQ2_0", "mxfp4": "MXFP4_MOE", "nvfp4": "Q8_0"}
# llama.cpp 0.3.36's quantizer has no NVFP4 ftype ("invalid output file type 39"): NVFP4 is
# written for the token embedding and the classifier only, the rest q8_0, and that file's values
# are attributed to nvfp4 (the coarser of the two by far).
TENSOR_TYPES = {"nvfp4": GGMLType.NVFP4}
METRICS = ("max_abs_diff", "nmse", "kl", "top1")


def build_models(names, root):
    """{name: ckpt path} of the models asked for (see the module docstring)."""
    shared = corpora.data_folder([BESIDE_CHECKOUT])
    builders = {
        "trained256": lambda: verify.trained_checkpoint(
            shared, root / "trained256", dim=256, hidden_dim=768, max_iters=200, warmup_iters=10),
        "random256": lambda: verify.random_checkpoint(
            root / "random256.pt", shared / "llama2" / "tokenizer.model", seed=3, dim=256, hidden_dim=768,
            n_layers=2, n_heads=4, max_seq_len=128, tie_embeddings=False),
        "trained64": lambda: verify.trained_checkpoint(shared, root / "trained64"),
    }
    paths = {}
    for name in names:
        (root / name).mkdir(exist_ok=True)
        paths[name] = builders[name]()
    return paths


def quantized(f32_path, dtype, out):
    """llama.cpp's pure `dtype` file made from f32_path; retried with an importance matrix of
    ones where llama.cpp asks for one. Returns the file's matrix types."""
    ftype = getattr(llama_cpp(), "LLAMA_FTYPE_MOSTLY_" + FTYPES[dtype])
    tensor_type = TENSOR_TYPES.get(dtype)
    if quantize_model(f32_path, out, ftype, tensor_type=tensor_type, pure=True) != 0:
        imatrix = [(t.name, t.shape[1]) for t in open_model(f32_path).source.tensors if len(t.shape) == 2]
        if quantize_model(f32_path, out, ftype, imatrix_tensors=imatrix, tensor_type=tensor_type, pure=True) != 0:
            raise RuntimeError(f"llama.cpp could not make {dtype}")
    return open_model(out).dtypes


def measured(report):
    """{(table, metric): worst value} of one verify report; table "vs_torch" or "same_file"."""
    worst = {}
    for check in report.checks:
        if check.metric not in METRICS or check.value is None:
            continue
        key = ("vs_torch" if check.reference == TORCH else "same_file", check.metric)
        better = min if check.metric == "top1" else max
        worst[key] = check.value if key not in worst else better(worst[key], check.value)
    return worst


def placeholder_limits(dtypes):
    """Give types without limits q4_0's, so that verify runs: the values it reports do not
    depend on the limits."""
    for table in (thresholds.VS_TORCH, thresholds.SAME_FILE):
        for dtype in dtypes:
            table.setdefault(dtype, table["q4_0"])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--types", nargs="+", choices=sorted(FTYPES), default=list(FTYPES))
    parser.add_argument("--models", nargs="+", choices=["trained256", "random256", "trained64"],
                        default=["trained256", "random256", "trained64"])
    args = parser.parse_args(argv)
    placeholder_limits({t.name.lower() for t in GGMLType})
    alone, mixed = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for model, ckpt in build_models(args.models, root).items():
            f32 = verify.export(ckpt, "f32", root / f"{model}_f32.gguf")
            for dtype in args.types:
                path = root / f"{model}_{dtype}.gguf"
                held = quantized(f32, dtype, path)
                worst = measured(run_verify(path, ckpt_path=ckpt, use_llama_cpp=True, threads=1))
                line = " ".join(f"{table}.{metric}={value:.3g}" for (table, metric), value in sorted(worst.items()))
                print(f"{model} {dtype} -> {'+'.join(held)}: {line}", flush=True)
                if held == (dtype,) or (dtype in TENSOR_TYPES and dtype in held):
                    alone.setdefault(dtype, []).append(worst)
                else:
                    mixed.append((model, dtype, held))
    print("\nworst over the files holding the type alone (models: " + ", ".join(args.models) + ")")
    for dtype, runs in alone.items():
        for table in ("vs_torch", "same_file"):
            cells = []
            for metric in METRICS:
                values = [run[table, metric] for run in runs if (table, metric) in run]
                cells.append(f"{metric}={(min if metric == 'top1' else max)(values):.2g}")
            print(f"{dtype:8} {table:9} ({len(runs)} files) " + " ".join(cells))
    for model, dtype, held in mixed:
        print(f"{model}: {dtype} was written as {'+'.join(held)} (not attributed)")


if __name__ == "__main__":
    main()
