"""The default model: a small Mirasol trained on synthetic audio-visual QA, shipped inside the package.

`DEFAULT_MODEL` is a folder usable with `MirasolForConditionalGeneration.from_pretrained`,
`MirasolProcessor.from_pretrained` and the "video-question-answering" pipeline. It answers questions about clips
like those of `mirasol_hf.synthetic` (coloured shapes and sounds); how it was trained and how well it does are in
docs/synthetic.md and docs/benchmarks.md, and `examples/train_synthetic.py --save DIR` retrains it.
"""

from pathlib import Path


DEFAULT_MODEL = str(Path(__file__).parent / "default_model")
