"""The ggml tensor types, one module per family; each module's docstring gives its types' byte
layouts and formulas, and its `TYPES` one record per type (record.py: id, block, bytes per block,
group, mins, decoder, encoder or none), from which formats.ggml and formats.quant derive the rest;
docs/formats.md's type table lists every type with its module.

  plain.py     one number an element: F32, F16, BF16 and the integers
  legacy.py    ggml's first types: blocks of 32, one fp16 scale (+ a min); encoded too
  kquants.py   super-blocks of 256: sub-block scales times small codes
  lookup.py    4-bit codes looked up in a table of 16 values
  ternary.py   codes -1, 0, 1 times one scale
  lattice.py   indices into grids of 4 or 8 values, with signs
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

FAMILIES = (plain, legacy, kquants, lookup, ternary, lattice)
# Every type's record, by ggml id.
TYPES = tuple(sorted((record for family in FAMILIES for record in family.TYPES),
                     key=lambda record: record.ggml_type))
