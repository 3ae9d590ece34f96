"""The low layer every stage may import: errors, dtypes, shape expressions, atomic file writes, tolerances, the
cache folder, and the plain data types that pass between stages (the kernel plan, the schedule configuration, the
plugin field ABI, the manifest). Nothing here imports a stage, TVM, torch or CUDA."""
