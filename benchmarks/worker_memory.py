"""What DataLoader workers cost in memory while a model trains on the CPU: forked from the training process, or from
a forkserver.

    python benchmarks/worker_memory.py [--layers 24] [--workers 2] [--steps 3] [--rounds 2]

Builds a model of `--layers` 4096 x 4096 linear layers (64 MiB each in fp32) with AdamW and takes one step (so the
optimizer's states exist). Then, in the same process, round after round and for each start method in turn, starts
`--workers` persistent DataLoader workers, takes `--steps` more steps, and measures how much the machine's used
memory (MemTotal - MemAvailable) grew, as a ratio to the training state (weights and AdamW's two moments); the
workers are shut down before the next measurement. A worker forked from the training process keeps the pages it
shared with it, and every page the optimizer then writes (weights, both moments) is copied: the growth approaches the
whole training state. A forkserver is a fresh process that shares nothing with the model.
"""

import argparse
import gc
import time

import torch
from torch.utils.data import DataLoader, Dataset


def used_mib() -> float:
    """The machine's used memory: MemTotal - MemAvailable, MiB."""
    info = {}
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            key, value = line.split(":")
            info[key] = int(value.split()[0])
    return (info["MemTotal"] - info["MemAvailable"]) / 1024


class SlowZeros(Dataset):
    def __len__(self):
        return 10**6

    def __getitem__(self, index):
        time.sleep(0.01)
        return torch.zeros(4)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(2)
    model = torch.nn.Sequential(*[torch.nn.Linear(4096, 4096) for _ in range(args.layers)])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def step():
        model(torch.zeros(1, 4096)).sum().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    state_mib = 3 * sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    growth = {"fork": [], "forkserver": []}
    for _ in range(args.rounds):
        for method in growth:
            before = used_mib()
            batches = iter(DataLoader(SlowZeros(), batch_size=1, num_workers=args.workers,
                                      multiprocessing_context=method, persistent_workers=True))
            for _ in range(args.steps):
                next(batches)
                step()
            time.sleep(1.0)
            growth[method].append(used_mib() - before)
            del batches
            gc.collect()
            time.sleep(1.0)  # the workers have exited: the pages they kept are freed
    print(f"training state (weights and AdamW's moments): {state_mib:,.0f} MiB; {args.workers} workers, "
          f"{args.steps} steps, {args.rounds} rounds")
    for method, values in growth.items():
        worst = max(values)
        print(f"{method:>10}: used memory grew by {worst:,.0f} MiB at most ({worst / state_mib:.2f}x the training "
              f"state; each round: {', '.join(f'{value:,.0f}' for value in values)} MiB)")


if __name__ == "__main__":
    main()
