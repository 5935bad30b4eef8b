"""Print the parameter count of each preset, per component, without allocating weights.

    python examples/count_parameters.py [PRESET ...]
"""

import sys

from mirasol_hf import MirasolConfig
from mirasol_hf.configuration_mirasol import PRESETS
from mirasol_hf.parameter_count import count_parameters


def main(names):
    for name in names or PRESETS:
        counts = count_parameters(MirasolConfig.from_preset(name))
        print(f"\n{name}")
        print(f"| {'component':<40} | {'parameters':>15} | {'share':>6} |")
        print(f"|{'-' * 42}|{'-' * 17}:|{'-' * 7}:|")
        for component, count in counts.items():
            print(f"| {component:<40} | {count:>15,} | {count / counts['total']:>6.1%} |")


if __name__ == "__main__":
    main(sys.argv[1:])
