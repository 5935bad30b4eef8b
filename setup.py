from setuptools import find_packages, setup

setup(
    name="mirasol-hf",
    version="0.1.0",
    description="Mirasol3B (audio-video question answering over long videos) as a Hugging Face transformers model",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["mirasol_hf", "mirasol_hf.*"]),
    include_package_data=True,
    # the default model (mirasol_hf.DEFAULT_MODEL): weights, config, processor and tokenizer files
    package_data={"mirasol_hf": ["default_model/*"]},
    # torch is not listed as a hard pin: install it first (README), so pip does not pull a CUDA build here.
    install_requires=[
        "torch>=2.6",
        "transformers>=5.24,<6",  # 5.24 renamed past_key_values to cache
        "accelerate>=1.0",
        "safetensors",
        "huggingface-hub",
        "tokenizers",
        "datasets",
        "av",
        "librosa",
        "scipy",  # sparse bin averaging in the feature extractor (librosa needs it too)
        "peft",
        "einops",
        "numpy",
        "tqdm",
    ],
    # pillow: transformers' "any-to-any" pipeline requires it (tests/test_pipeline.py runs that pipeline).
    # app: the Gradio demo (mirasol_hf/app.py); the test extra adds selenium to drive it in Debian's chromium.
    # deepspeed: examples/accelerate/deepspeed_zero*.yaml (tested with 0.19.8, on CPU; its sdist builds in about 20 s,
    # compiling nothing: its ops are compiled at first use, and on CPU that is one, which needs g++).
    extras_require={
        "app": ["gradio>=6,<7", "pillow"],
        "deepspeed": ["deepspeed>=0.19,<0.20"],
        "test": ["pytest", "pytest-timeout", "pillow", "gradio>=6,<7", "selenium>=4.11", "deepspeed>=0.19,<0.20"],
    },
    entry_points={"console_scripts": ["mirasol-hf=mirasol_hf.cli:main"]},
)
