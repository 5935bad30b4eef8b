"""Long video: cost per frame of the chunked model against one chunk holding every frame, and the TTM's FLOPs.

For 32 to 1024 frames, a small configuration (widths 64), three models:

* `transformer`: chunks of 8 frames, the transformer combiner (the paper's main model);
* `ttm`: the same with the Token Turing Machine combiner;
* `one chunk`: the baseline the paper compares against, every frame in one chunk (same widths and depths, the
  transformer combiner), so the video encoder and the combiner attend over all of the clip's tokens at once.

Each cell is one forward (`model(input_ids=..., pixel_values_videos=..., input_features=...)`, batch 1, a 16-token
prompt, eval, inference mode):

* time / frame: per model, one forked process holds the model at every frame count and times one forward of each
  per round, in alternating rounds (`--rounds`, 5, after one warm-up; benchmarks/_timing.py), wall and CPU time
  divided by the frame count: medians with min-max, and "vs 64 frames" as the median (min-max) of the per-round
  ratios to the same model's time per frame at 64 frames;
* peak memory: in a forked process of its own per cell, how far the process's peak resident set
  (`resource.getrusage(...).ru_maxrss`) rose above its resident set just before a warm-up and one forward, i.e. the
  activations and temporaries of one forward (the weights and inputs are already resident);
* FLOPs: `torch.utils.flop_counter.FlopCounterMode` over one forward of the same model built on the meta device,
  with eager attention so that attention counts as the matmuls it is.

Then a 1024-frame clip streamed one chunk per `encode_media_chunk` call: the CPU time of early and late calls
(median and min-max of 16 calls each) and the FLOPs of the second and the last call (each new chunk should cost about the same),
and the peak memory growth. Then the paper's sizes: FLOPs of the combiner on one chunk of the "mirasol-3b" preset,
transformer against TTM, and of the whole per-chunk media encoding (video encoder + audio encoder + combiner), also on
the meta device.

Run from the repository root (1-2 minutes on 2 CPU cores):

    python benchmarks/long_video.py

Timings use one intra-op thread by default (`--threads`): on a shared machine, torch's thread pool spinning against
other processes made multi-threaded timings of these small tensors noisy by an order of magnitude.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import statistics
import time

import torch
from _timing import Timings, compare, format_ratio, load_average, median_range, ratios
from torch.utils.flop_counter import FlopCounterMode

from mirasol_hf import MirasolConfig, MirasolForConditionalGeneration
from mirasol_hf.audio_encoder import MirasolAudioEncoder
from mirasol_hf.combiners import build_combiner
from mirasol_hf.configuration_mirasol import num_video_tokens
from mirasol_hf.video_encoder import MirasolVideoEncoder

FRAME_COUNTS = (32, 64, 128, 512, 1024)
FRAMES_PER_CHUNK = 8
AUDIO_FRAMES_PER_CHUNK = 16  # log-mel frames per 8 video frames
PROMPT_LENGTH = 16
MODELS = ("transformer", "ttm", "one chunk")
# Targets of the issue: chunked time per frame at 512 frames within 1.25x of that at 64; TTM >= 15% fewer FLOPs.
LINEAR_FRAMES = (64, 512)
LINEAR_TOLERANCE = 1.25
TTM_FLOP_SAVING_TARGET = 0.15
STREAM_WINDOW = 16  # calls averaged at the start and at the end of a stream


def _encoder(hidden: int, layers: int, heads: int, mlp: int) -> dict:
    return {"hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads, "intermediate_size": mlp}


def small_config(model: str, frames: int) -> MirasolConfig:
    """The "tiny" preset at width 64 (combiner 4 layers, TTM 2 process layers), chunked or as one chunk."""
    one_chunk = model == "one chunk"
    frames_per_chunk = frames if one_chunk else FRAMES_PER_CHUNK
    return MirasolConfig.from_preset(
        "tiny",
        num_chunks=frames // frames_per_chunk,
        frames_per_chunk=frames_per_chunk,
        audio_frames_per_chunk=AUDIO_FRAMES_PER_CHUNK * frames_per_chunk // FRAMES_PER_CHUNK,
        video_config=_encoder(64, 2, 4, 256),
        audio_config=_encoder(64, 2, 4, 256),
        combiner_config={
            **_encoder(64, 4, 4, 256),
            "num_output_tokens": 8,
            "combiner_type": "transformer" if one_chunk else model,
            "ttm_memory_tokens": 16,
            "ttm_read_tokens": 16,
            "ttm_process_num_layers": 2,
        },
        latent_config=_encoder(64, 2, 4, 256),
    )


def _inputs(config: MirasolConfig, device=None) -> dict:
    size = config.video_config.image_size
    generator = None if device == "meta" else torch.Generator().manual_seed(0)

    def random(*shape):
        return torch.empty(*shape, device=device) if device == "meta" else torch.randn(*shape, generator=generator)

    return {
        "input_ids": torch.zeros(1, PROMPT_LENGTH, dtype=torch.long, device=device),
        "pixel_values_videos": random(1, config.num_frames, 3, size, size),
        "input_features": random(
            1, config.audio_config.num_mel_bins, config.num_chunks * config.audio_frames_per_chunk
        ),
    }


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def time_frame_counts(model_name: str, rounds: int, threads: int) -> dict[int, Timings]:
    """{frames: wall and CPU seconds of one forward per round}, the frame counts alternating (a fresh forked process)."""
    torch.set_num_threads(threads)
    forwards = {}
    for frames in FRAME_COUNTS:
        config = small_config(model_name, frames)
        torch.manual_seed(0)
        model = MirasolForConditionalGeneration(config).eval()
        forwards[frames] = lambda model=model, inputs=_inputs(config): model(**inputs)
    with torch.inference_mode():
        return compare(forwards, rounds=rounds)


def measure_memory(model_name: str, frames: int, threads: int) -> dict:
    """Peak memory growth over a warm-up and one forward, and FLOPs (a fresh forked process).

    Measured from before the warm-up: after it, glibc keeps the pages the same forward touches again resident.
    """
    torch.set_num_threads(threads)
    config = small_config(model_name, frames)
    torch.manual_seed(0)
    model = MirasolForConditionalGeneration(config).eval()
    inputs = _inputs(config)
    resident_before = _resident_bytes()
    with torch.inference_mode():
        model(**inputs)  # warm-up
        model(**inputs)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    return {"peak_bytes": peak - resident_before, "flops": model_flops(config), "chunks": config.num_chunks}


def measure_streaming(model_name: str, frames: int, window: int, threads: int) -> dict:
    """Streams a clip one chunk per `encode_media_chunk` call: CPU time of early and late calls (`window` of each),
    FLOPs of the second and the last call, and the peak memory."""
    torch.set_num_threads(threads)
    config = small_config(model_name, frames)
    config._attn_implementation = "eager"  # so that the counter sees the attention to the cached chunks
    torch.manual_seed(0)
    model = MirasolForConditionalGeneration(config).eval()
    inputs = _inputs(config)
    frames, audio = inputs["pixel_values_videos"], inputs["input_features"]
    frames_per_chunk, audio_per_chunk = config.frames_per_chunk, config.audio_frames_per_chunk
    counted = {1: None, config.num_chunks - 1: None}  # calls whose FLOPs are counted (and not timed)
    resident_before = _resident_bytes()
    times, state = {}, None
    with torch.inference_mode():
        for chunk in range(config.num_chunks):
            call = {
                "pixel_values_videos": frames[:, chunk * frames_per_chunk : (chunk + 1) * frames_per_chunk],
                "input_features": audio[:, :, chunk * audio_per_chunk : (chunk + 1) * audio_per_chunk],
            }
            if chunk in counted:
                with FlopCounterMode(display=False) as counter:
                    _, state = model.encode_media_chunk(**call, state=state)
                counted[chunk] = counter.get_total_flops()
                continue
            # CPU time of this process: it moves much less with other processes' load than wall time.
            start = time.process_time()
            _, state = model.encode_media_chunk(**call, state=state)
            times[chunk] = time.process_time() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    timed = sorted(times)  # chunk indices; the very first call also warms up, so it is left out
    return {
        "first": [times[chunk] for chunk in timed[1 : window + 1]],
        "last": [times[chunk] for chunk in timed[-window:]],
        "first_flops": counted[1],
        "last_flops": counted[config.num_chunks - 1],
        "peak_bytes": peak - resident_before,
        "chunks": config.num_chunks,
    }


def model_flops(config: MirasolConfig) -> int:
    """FLOPs of one forward, counted on the meta device."""
    config._attn_implementation = "eager"
    with torch.device("meta"):
        model = MirasolForConditionalGeneration(config).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(**_inputs(config, device="meta"))
    return counter.get_total_flops()


def paper_size_flops() -> dict:
    """FLOPs of one chunk at the "mirasol-3b" sizes: the combiner alone, and encoders + combiner."""
    results = {}
    for combiner_type in ("transformer", "ttm"):
        config = MirasolConfig.from_preset("mirasol-3b", combiner_config={"combiner_type": combiner_type})
        config._attn_implementation = "eager"
        video_config, audio_config = config.video_config, config.audio_config
        size = video_config.image_size
        num_video = num_video_tokens(video_config, config.frames_per_chunk, size, size)
        patch_mel, patch_time = audio_config.patch_size
        num_audio = (audio_config.num_mel_bins // patch_mel) * (config.audio_frames_per_chunk // patch_time)
        with torch.device("meta"), torch.no_grad():
            combiner = build_combiner(config.combiner_config, video_config.hidden_size, audio_config.hidden_size).eval()
            video_encoder = MirasolVideoEncoder(video_config).eval()
            audio_encoder = MirasolAudioEncoder(audio_config).eval()
            mask = torch.ones(1, 1, dtype=torch.bool)
            with FlopCounterMode(display=False) as combiner_counter:
                combiner.combine(
                    torch.empty(1, 1, num_video, video_config.hidden_size),
                    torch.empty(1, 1, num_audio, audio_config.hidden_size),
                    mask,
                    mask,
                )
            with FlopCounterMode(display=False) as encoder_counter:
                video_encoder(torch.empty(1, config.frames_per_chunk, 3, size, size))
                audio_encoder(torch.empty(1, audio_config.num_mel_bins, config.audio_frames_per_chunk))
        results[combiner_type] = {
            "combiner": combiner_counter.get_total_flops(),
            "chunk": combiner_counter.get_total_flops() + encoder_counter.get_total_flops(),
            "tokens": (num_video, num_audio),
        }
    return results


def _child(queue, function, args):
    queue.put(function(*args))


def in_fresh_process(function, *args):
    """Runs `function(*args)` in a forked process: its own peak RSS, nothing left over from other cells.

    The parent never runs a torch op itself, so the fork does not inherit a busy OpenMP pool (which would hang).
    """
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    process = context.Process(target=_child, args=(queue, function, args))
    process.start()
    result = queue.get()
    process.join()
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds of forwards per model")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()

    print(f"load average at start: {load_average()}")
    timings = {model_name: in_fresh_process(time_frame_counts, model_name, args.rounds, args.threads)
               for model_name in MODELS}
    print(f"timed: {load_average()}")
    memory = {(model_name, frames): in_fresh_process(measure_memory, model_name, frames, args.threads)
              for model_name in MODELS for frames in FRAME_COUNTS}

    low = LINEAR_FRAMES[0]

    def per_frame_ratios(model_name, frames, kind):
        """Per-round ratios of time per frame at `frames` to that at `low` frames."""
        return [ratio * low / frames for ratio in ratios(timings[model_name], frames, low, kind)]

    def per_frame_ms(values, frames):
        median, smallest, largest = median_range([value / frames * 1e3 for value in values])
        return f"{median:.3f} ({smallest:.3f}-{largest:.3f})"

    print(f"Small config (tiny preset at width 64, 32x32 frames, batch 1, {args.threads} thread(s)); times: medians "
          f"(min-max) of {args.rounds} alternating rounds; vs {low} frames: medians (min-max) of per-round ratios of "
          f"time/frame to the same model's at {low} frames")
    print("| frames | model | chunks | wall ms/frame | CPU ms/frame | wall vs 64 frames | CPU vs 64 frames | "
          "peak memory (MiB) | GFLOPs | MFLOPs/frame |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for frames in FRAME_COUNTS:
        for model_name in MODELS:
            timing, cell = timings[model_name][frames], memory[model_name, frames]
            print(
                f"| {frames} | {model_name} | {cell['chunks']} | {per_frame_ms(timing.wall, frames)} | "
                f"{per_frame_ms(timing.cpu, frames)} | {format_ratio(per_frame_ratios(model_name, frames, 'wall'))} | "
                f"{format_ratio(per_frame_ratios(model_name, frames, 'cpu'))} | {cell['peak_bytes'] / 2**20:.1f} | "
                f"{cell['flops'] / 1e9:.2f} | {cell['flops'] / frames / 1e6:.1f} |"
            )

    print()
    high = LINEAR_FRAMES[1]
    for model_name in MODELS:
        cpu_ratio = statistics.median(per_frame_ratios(model_name, high, "cpu"))
        flop_ratio = (memory[model_name, high]["flops"] / high) / (memory[model_name, low]["flops"] / low)
        verdict = "linear" if cpu_ratio <= LINEAR_TOLERANCE else "superlinear"
        print(f"{model_name:<11} time/frame at {high} vs {low} frames: CPU "
              f"{format_ratio(per_frame_ratios(model_name, high, 'cpu'))}, wall "
              f"{format_ratio(per_frame_ratios(model_name, high, 'wall'))} (FLOPs/frame {flop_ratio:.2f}x) -> "
              f"{verdict} (target for the chunked models: <= {LINEAR_TOLERANCE}x)")

    frames = max(FRAME_COUNTS)
    print()
    for model_name in ("transformer", "ttm"):
        stream = in_fresh_process(measure_streaming, model_name, frames, STREAM_WINDOW, args.threads)
        (early, early_low, early_high), (late, late_low, late_high) = (
            median_range([seconds * 1e3 for seconds in stream[part]]) for part in ("first", "last")
        )
        print(
            f"{model_name:<11} streamed, {frames} frames, one chunk per encode_media_chunk call: CPU time "
            f"{early:.1f} ({early_low:.1f}-{early_high:.1f}) ms/chunk early, {late:.1f} ({late_low:.1f}-{late_high:.1f}) "
            f"ms/chunk late ({late / early:.2f}x); FLOPs {stream['first_flops'] / 1e6:.1f} M for chunk 2, "
            f"{stream['last_flops'] / 1e6:.1f} M for chunk {stream['chunks']} "
            f"({stream['last_flops'] / stream['first_flops']:.2f}x); peak memory {stream['peak_bytes'] / 2**20:.1f} MiB"
        )
    print(f"(early / late: median (min-max) of the {STREAM_WINDOW} calls after the first / before the last)")

    paper = in_fresh_process(paper_size_flops)
    transformer, ttm = paper["transformer"], paper["ttm"]
    num_video, num_audio = transformer["tokens"]
    print()
    print(f"mirasol-3b sizes, one chunk ({num_video} video + {num_audio} audio tokens), meta device:")
    for part, label in (("combiner", "combiner alone"), ("chunk", "encoders + combiner")):
        saving = 1 - ttm[part] / transformer[part]
        print(f"  {label:<20} transformer {transformer[part] / 1e9:8.1f} GFLOPs | ttm {ttm[part] / 1e9:8.1f} GFLOPs | "
              f"ttm {saving:.0%} fewer")
    saving = 1 - ttm["combiner"] / transformer["combiner"]
    print(f"  target: ttm combiner >= {TTM_FLOP_SAVING_TARGET:.0%} fewer FLOPs -> "
          f"{'met' if saving >= TTM_FLOP_SAVING_TARGET else 'NOT met'}")
    print(f"\nload average at end: {load_average()}")


if __name__ == "__main__":
    main()
