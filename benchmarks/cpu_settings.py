"""Running on CPU: dtype, torch threads and the memory allocator, timed on one eval forward of a width-256 model.

    python benchmarks/cpu_settings.py [--rounds 3] [--frames 128] [--forwards 3] [--only NAME ...]

Every setting runs in its own child process (the allocator and the instruction-set limits are fixed when a process
starts), one child per setting per round, the settings' order rotated from round to round. A child builds the model
in fp32 and in bf16 (the tiny preset at width 256: encoders, combiner and latent model 2 layers of 4 heads, a 2-layer
text decoder; 64x64 frames in chunks of 4, random weights; bf16 is the fp32 model and inputs `.to(torch.bfloat16)`),
warms both up, then alternates fp32 and bf16 forwards (`model(input_ids, pixel_values_videos, input_features)` under
`torch.inference_mode`) `--forwards` times and reports the median wall and CPU time of each. Two tables: bf16 against
fp32 within each child (per-child ratios, so the same process and moment), and fp32 across children against the
first setting (per-round ratios).

Settings: the defaults with one torch thread; two threads; oneDNN and ATen limited to AVX-512 without its bf16 and
AMX extensions (`ONEDNN_MAX_CPU_ISA=AVX512_CORE ATEN_CPU_CAPABILITY=avx512`: a Skylake / Cascade Lake server);
oneDNN, ATen and MKL limited to AVX2 (`ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2
MKL_ENABLE_INSTRUCTIONS=AVX2`: a CPU without AVX-512, as many laptops and desktops); glibc with
its mmap and trim thresholds raised (`MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`: large buffers are reused
instead of returned to the system and page-faulted in again); jemalloc (`LD_PRELOAD`, Debian's libjemalloc2).
"""

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from _timing import Timings, compare, format_ratio, load_average, median_range, print_table

AVX512_NO_BF16 = {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE", "ATEN_CPU_CAPABILITY": "avx512"}
AVX2_ONLY = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
GLIBC_THRESHOLDS = {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}
JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
SETTINGS = {  # name: (torch threads, environment)
    "1 thread": (1, {}),
    "2 threads": (2, {}),
    "1 thread, AVX-512 without bf16": (1, AVX512_NO_BF16),
    "1 thread, AVX2 only": (1, AVX2_ONLY),
    "1 thread, glibc thresholds raised": (1, GLIBC_THRESHOLDS),
    "1 thread, jemalloc": (1, {"LD_PRELOAD": JEMALLOC}),
}
DTYPES = ("float32", "bfloat16")


def child(threads: int, frames: int, forwards: int):
    import torch

    from mirasol_hf import MirasolConfig, MirasolForConditionalGeneration

    torch.set_num_threads(threads)
    width = {"hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 1024}
    config = MirasolConfig.from_preset(
        "tiny",
        video_config={**width, "image_size": 64},
        audio_config=width,
        combiner_config={**width, "num_output_tokens": 8},
        latent_config=width,
        text_config={"hidden_size": 256, "intermediate_size": 1024},
        num_chunks=frames // 4,
        frames_per_chunk=4,
    )
    torch.manual_seed(0)
    model = MirasolForConditionalGeneration(config).eval()
    generator = torch.Generator().manual_seed(0)
    inputs = {
        "input_ids": torch.randint(3, config.text_config.vocab_size, (1, 16), generator=generator),
        "pixel_values_videos": torch.randn(1, frames, 3, 64, 64, generator=generator),
        "input_features": torch.randn(
            1, config.audio_config.num_mel_bins, config.num_chunks * config.audio_frames_per_chunk, generator=generator
        ),
    }
    runs = {}
    for name in DTYPES:
        dtype = getattr(torch, name)
        typed_model = copy.deepcopy(model).to(dtype)
        typed_inputs = {key: value.to(dtype) if value.is_floating_point() else value for key, value in inputs.items()}
        runs[name] = lambda typed_model=typed_model, typed_inputs=typed_inputs: typed_model(**typed_inputs)
    with torch.inference_mode():
        results = compare(runs, rounds=forwards)
    print(json.dumps({name: {"wall": statistics.median(t.wall), "cpu": statistics.median(t.cpu)}
                      for name, t in results.items()}))


def run_child(name: str, frames: int, forwards: int) -> dict:
    threads, environment = SETTINGS[name]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), **environment}
    command = [sys.executable, __file__, "--child", str(threads), "--frames", str(frames), "--forwards", str(forwards)]
    output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--frames", type=int, default=128)
    parser.add_argument("--forwards", type=int, default=3)
    parser.add_argument("--only", nargs="+", choices=list(SETTINGS), help="a subset (the first one is the baseline)")
    parser.add_argument("--child", type=int, metavar="THREADS", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.frames, args.forwards)
    if not Path(JEMALLOC).exists():
        print(f"({JEMALLOC} not found: apt-get install libjemalloc2; the jemalloc row is left out)")
        SETTINGS.pop("1 thread, jemalloc")
    names = args.only or list(SETTINGS)
    print(f"{load_average()} at the start")
    results = {(name, dtype): Timings() for name in names for dtype in DTYPES}
    for round_index in range(args.rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            for dtype, timing in run_child(name, args.frames, args.forwards).items():
                results[name, dtype].wall.append(timing["wall"])
                results[name, dtype].cpu.append(timing["cpu"])

    print(f"\nbf16 against fp32, one forward at {args.frames} frames, in the same child (median of {args.forwards}):")
    print("| setting | fp32 wall s | bf16 wall s | bf16 / fp32 wall | bf16 / fp32 CPU |")
    print("|---|---:|---:|---:|---:|")
    for name in names:
        fp32, bf16 = results[name, "float32"], results[name, "bfloat16"]
        wall = [b / a for a, b in zip(fp32.wall, bf16.wall)]
        cpu = [b / a for a, b in zip(fp32.cpu, bf16.cpu)]
        print(f"| {name} | {median_range(fp32.wall)[0]:.3f} | {median_range(bf16.wall)[0]:.3f} | "
              f"{format_ratio(wall)} | {format_ratio(cpu)} |")
    print(f"\nfp32 forward at {args.frames} frames across settings (one child each per round):")
    print_table({name: results[name, "float32"] for name in names}, baseline=names[0])


if __name__ == "__main__":
    main()
