"""The Mirasol demo as a Hugging Face Space (Gradio SDK, CPU hardware): see docs/usage.md.

Locally: `pip install -e ".[app]" && python examples/app/app.py`. The model is `mirasol_hf.DEFAULT_MODEL` unless the
MIRASOL_MODEL environment variable (a Space variable) names a checkpoint folder or Hub id.
"""

import os

from mirasol_hf import DEFAULT_MODEL
from mirasol_hf.app import build_demo, launch


# Visitors of a public Space get no model box: the Space answers with the one model it was set up with; its stream
# tab follows network addresses only (a path would read the Space's own files).
demo = build_demo(os.environ.get("MIRASOL_MODEL", DEFAULT_MODEL), model_choice=False, watch_local_files=False)

if __name__ == "__main__":
    # A Space serves on 0.0.0.0:7860 and sets GRADIO_SERVER_NAME; locally the app stays on 127.0.0.1.
    host = os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1")
    launch(demo, host=host, port=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
