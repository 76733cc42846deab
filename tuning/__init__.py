"""Tuning: LoRA/QLoRA training, constrained generation, model comparison and the end-to-end experiment."""

import logging

# bitsandbytes 0.50 (the `quantization` extra; peft imports it where installed, and trl imports peft, so importing
# tuning.train does) logs a warning to stderr on CPUs with AVX512-BF16 when the optional `kernels` package (a kernel
# fetched from the Hugging Face Hub) is absent, and then uses its own kernel. The warning would be a second line
# beside a command's one-line error.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
