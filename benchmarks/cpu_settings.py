"""Running on CPU: dtype, torch threads and the memory allocator, timed on one eval forward of a width-256 model.

    python benchmarks/cpu_settings.py [--rounds 5] [--frames 128] [--forwards 3] [--only NAME ...]

Every setting runs in its own child process (the allocator and the instruction-set limits are fixed when a process
starts), one child per setting per round, the settings' order rotated from round to round. A child builds the model
(the tiny preset at width 256: encoders, combiner and latent model 2 layers of 4 heads, a 2-layer text decoder;
64x64 frames in chunks of 4, random weights), warms up, and reports the median wall and CPU time of `--forwards`
forwards (`model(input_ids, pixel_values_videos, input_features)` under `torch.inference_mode`). The table gives
medians (min-max) over rounds and the per-round ratios against the first setting (fp32, 1 thread, glibc malloc).

Settings: bf16 (model and inputs `.to(torch.bfloat16)`) as the CPU runs it, and with oneDNN and ATen limited to
AVX2 (`ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2`: a CPU without bf16
instructions), each against fp32 under the same limits; two torch threads; glibc with its mmap and trim thresholds
raised (`MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`: large buffers are reused instead of returned to the
system and page-faulted in again); jemalloc (`LD_PRELOAD`, Debian's libjemalloc2).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _timing import Timings, format_ratio, load_average, print_table, ratios

AVX2_ONLY = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
GLIBC_THRESHOLDS = {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}
JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
SETTINGS = {  # name: (dtype, threads, environment)
    "fp32, 1 thread": ("float32", 1, {}),
    "bf16, 1 thread": ("bfloat16", 1, {}),
    "fp32, 1 thread, AVX2 only": ("float32", 1, AVX2_ONLY),
    "bf16, 1 thread, AVX2 only": ("bfloat16", 1, AVX2_ONLY),
    "fp32, 2 threads": ("float32", 2, {}),
    "fp32, 1 thread, glibc thresholds raised": ("float32", 1, GLIBC_THRESHOLDS),
    "fp32, 1 thread, jemalloc": ("float32", 1, {"LD_PRELOAD": JEMALLOC}),
}


def child(dtype_name: str, threads: int, frames: int, forwards: int):
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
    dtype = getattr(torch, dtype_name)
    torch.manual_seed(0)
    model = MirasolForConditionalGeneration(config).eval().to(dtype)
    generator = torch.Generator().manual_seed(0)
    inputs = {
        "input_ids": torch.randint(3, config.text_config.vocab_size, (1, 16), generator=generator),
        "pixel_values_videos": torch.randn(1, frames, 3, 64, 64, generator=generator).to(dtype),
        "input_features": torch.randn(
            1, config.audio_config.num_mel_bins, config.num_chunks * config.audio_frames_per_chunk, generator=generator
        ).to(dtype),
    }
    walls, cpus = [], []
    with torch.inference_mode():
        model(**inputs)  # warm-up
        for _ in range(forwards):
            wall, cpu = time.perf_counter(), time.process_time()
            model(**inputs)
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
    print(json.dumps({"wall": statistics.median(walls), "cpu": statistics.median(cpus)}))


def run_child(name: str, frames: int, forwards: int) -> dict:
    dtype, threads, environment = SETTINGS[name]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), **environment}
    command = [sys.executable, __file__, "--child", dtype, str(threads), "--frames", str(frames), "--forwards", str(forwards)]
    output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--frames", type=int, default=128)
    parser.add_argument("--forwards", type=int, default=3)
    parser.add_argument("--only", nargs="+", choices=list(SETTINGS), help="a subset (the first one is the baseline)")
    parser.add_argument("--child", nargs=2, metavar=("DTYPE", "THREADS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child[0], int(args.child[1]), args.frames, args.forwards)
    if not Path(JEMALLOC).exists():
        print(f"({JEMALLOC} not found: apt-get install libjemalloc2; the jemalloc row is left out)")
        SETTINGS.pop("fp32, 1 thread, jemalloc")
    names = args.only or list(SETTINGS)
    print(f"{load_average()} at the start")
    results = {name: Timings() for name in names}
    for round_index in range(args.rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            timing = run_child(name, args.frames, args.forwards)
            results[name].wall.append(timing["wall"])
            results[name].cpu.append(timing["cpu"])
    print(f"\none forward at {args.frames} frames, median of {args.forwards} per child process:")
    print_table(results, baseline=names[0])
    avx2 = [name for name in names if name.endswith("AVX2 only")]
    if len(avx2) == 2:
        print(f"bf16 vs fp32 with AVX2 only: wall {format_ratio(ratios(results, avx2[1], avx2[0]))}, "
              f"CPU {format_ratio(ratios(results, avx2[1], avx2[0], 'cpu'))}")


if __name__ == "__main__":
    main()
