"""Curation: corpus readers, the record data model, instruction JSONL, sampling, IFD scoring and filtering, the
combination search, the scorer."""

import logging

# bitsandbytes 0.50 (the `quantization` extra; peft imports it where installed, and trl and the baselines' transformers
# paths import peft) logs a warning to stderr on CPUs with AVX512-BF16 when the optional `kernels` package (a kernel
# fetched from the Hugging Face Hub) is absent, and then uses its own kernel. The warning would be a second line
# beside a command's one-line error. Every package of the project imports curation, so it is silenced here once.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

