"""The ggml tensor types, one module per family; each module's docstring gives its types' byte
layouts and formulas, and its `TYPES` one record per type (record.py: id, block, bytes per block,
group, mins, decoder, encoder or none), from which formats.ggml and formats.quant derive the rest.

  plain.py     F32 F16 BF16 I8 I16 I32 I64 F64   one number an element
  legacy.py    Q4_0 Q4_1 Q5_0 Q5_1 Q8_0         blocks of 32, one fp16 scale (+ a min); encoded too
  kquants.py   Q2_K Q3_K Q4_K Q5_K Q6_K         super-blocks of 256: sub-block scales times small codes
  lookup.py    IQ4_NL IQ4_XS MXFP4 NVFP4        4-bit codes looked up in a table of 16 values
  ternary.py   TQ1_0 TQ2_0                      codes -1, 0, 1 times one scale
  lattice.py   IQ2_XXS IQ2_XS IQ2_S IQ3_XXS IQ3_S IQ1_S IQ1_M
                                                indices into grids of 4 or 8 values, with signs
  tables.py    the grids and IQ4_NL's values: stored data (what cannot be derived)
  codes.py     Codes: every quantized type as int8 codes times a scale per group (+ a min)
  fields.py    reading a block's fields
  record.py    the records: QuantType, PlainType

formats.quant is the public API (quantize, dequantize, dequantize_rows, codes_rows); it
dispatches here. Each quantized type's reader `codes_<type>(blocks)` takes blocks (n_blocks,
type_size) uint8 and returns their Codes; its `values` are the floats, all in float32 with ggml's
order of operations, so they are bit-identical to gguf-py's (tests/test_quant_types.py).
"""

from formats.quants import kquants, lattice, legacy, lookup, plain, ternary

# Every type's record, by ggml id.
TYPES = tuple(sorted((*plain.TYPES, *legacy.TYPES, *kquants.TYPES, *lookup.TYPES, *ternary.TYPES,
                      *lattice.TYPES), key=lambda record: record.ggml_type))
