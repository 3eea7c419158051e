"""Demo on the embedded synthetic benchmark: generate it and report its statistics.

No download, a laptop CPU, well under a minute:

  python -m kid.main --config configs/demo.py --workdir workdir/demo

`--config=configs/demo.py:runlocal` shrinks the benchmark for a smoke run. Training stages
join `stages` as they land.
"""

import ml_collections


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.stages = ("benchmark",)

    # The embedded benchmark (python -m kid.data.synth); generated once per folder.
    config.benchmark = ml_collections.ConfigDict()
    config.benchmark.dir = ""  # empty: <workdir>/benchmark
    config.benchmark.seed = 0
    config.benchmark.train = 6000
    config.benchmark.dev = 600
    config.benchmark.dev_in_domain = 600
    config.benchmark.ts_copies = 3  # test-suite copies of each database (TS accuracy)

    if arg == "runlocal":
        config.benchmark.train, config.benchmark.dev, config.benchmark.dev_in_domain = 600, 60, 60
    return config
