"""Start-up cost of the command line and of `import mirasol_hf`: each command in a fresh Python process.

    python benchmarks/cli_startup.py [--rounds 5]

Commands, run in alternating rounds (one of each per round, so machine load hits all alike):
  * baseline: what `mirasol-hf --help` imported before the package became lazy: the package with every module its
    `__init__` imported eagerly (training with Trainer, datasets and peft, backbones, streaming);
  * `mirasol-hf --help`, `mirasol-hf answer missing.mp4 "q?"` (an argument error), `import mirasol_hf`;
  * `import torch`, the floor: registering the Auto classes on import needs torch and transformers' model classes.
Prints, per command, the median wall time with min-max, the median CPU time (user + system of the child), and the
ratio of medians to the baseline; and the load average before and after.
"""

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time

BASELINE = "baseline (old eager import)"
COMMANDS = {
    BASELINE: [sys.executable, "-c", "import mirasol_hf, mirasol_hf.training, mirasol_hf.backbones, mirasol_hf.streaming"],
    "mirasol-hf --help": [sys.executable, "-m", "mirasol_hf.cli", "--help"],
    "mirasol-hf answer missing.mp4": [sys.executable, "-m", "mirasol_hf.cli", "answer", "missing.mp4", "q?"],
    "import mirasol_hf": [sys.executable, "-c", "import mirasol_hf"],
    "import torch": [sys.executable, "-c", "import torch"],
}


def _run(command: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}")
    for command in COMMANDS.values():  # warm the file cache once
        _run(command)
    results = {name: [] for name in COMMANDS}
    for _ in range(args.rounds):
        for name, command in COMMANDS.items():
            results[name].append(_run(command))
    baseline = statistics.median(wall for wall, _ in results[BASELINE])
    print("| command | wall median (min-max) s | CPU median s | wall vs baseline |")
    print("|---|---|---|---|")
    for name, runs in results.items():
        walls, cpus = [wall for wall, _ in runs], [cpu for _, cpu in runs]
        median = statistics.median(walls)
        print(f"| {name} | {median:.2f} ({min(walls):.2f}-{max(walls):.2f}) | {statistics.median(cpus):.2f} "
              f"| {median / baseline:.2f} |")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
