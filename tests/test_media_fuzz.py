"""benchmarks/fuzz_media.py on 100 seeded mutants of the project's clips: no crash, no hang, no exception other
than a ValueError naming the file, and every warning names the file."""

import json
import os
import subprocess
import sys
from pathlib import Path


SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "fuzz_media.py"
MUTANTS = 100
# Far above a read of these 2 s clips (tens of ms); a read this long is a hang.
READ_TIMEOUT_SECONDS = 60


def test_100_mutants_give_only_reads_and_named_errors():
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--mutants", str(MUTANTS), "--timeout", str(READ_TIMEOUT_SECONDS), "--json"],
        capture_output=True,
        text=True,
        env=os.environ,
    )
    counts = json.loads(result.stdout.strip().splitlines()[-1])
    assert sum(counts.values()) == MUTANTS, result.stdout
    bad = {outcome: counts.get(outcome, 0) for outcome in ("error-unnamed", "exception", "crash", "hang")}
    assert bad == dict.fromkeys(bad, 0), result.stdout + result.stderr
    assert result.returncode == 0
    # The mutants exercise the reader's error path and its warnings, not only clean reads.
    assert counts.get("error", 0) > 0 and counts.get("read+warning", 0) > 0 and counts.get("read", 0) > 0
