"""spider_qwen.py's 7B case (Qwen1.5-0.5B <- Qwen1.5-7B on Spider, the paper's recipe and
global batch 16) on several GPU hosts. `get_config("HOSTSxGPUS")` sizes the mesh: fsdp
over the GPUs of a host (NVLink: weight all-gathers stay inside the host), data across
hosts (one gradient all-reduce a step over the network), tensor 1:

  arg    GPUs  hosts  mesh data x fsdp x tensor
  2x8      16      2  2 x 8 x 1                  configs/pod_gpu.py:2x8 (the default)
  1x8       8      1  1 x 8 x 1                  configs/pod_gpu.py:1x8 (one host: no coordinator)

The batch of 16 gives each GPU one row or more; past 16 GPUs raise data.batch_size to a
multiple of hosts x GPUs (a departure from the paper's recipe). The coordinator is
given on the command line; run the same command on each host with its own process_id
(0 on the host whose address is the coordinator's), e.g. for 2x8 with host 0 at 10.0.0.1:

  # host 0
  python -m kid.main --config configs/pod_gpu.py:2x8 --workdir /shared/spider_qwen_7b \
    --config.distributed.coordinator_address=10.0.0.1:1234 \
    --config.distributed.process_id=0 \
    --config.student.checkpoint=/path/to/Qwen1.5-0.5B \
    --config.teacher.checkpoint=/path/to/qwen1.5-7b-spider \
    --config.data.dir=data/spider --config.eval.ts_dir=data/test-suite
  # host 1: the same, with --config.distributed.process_id=1

(distributed.num_processes is the arg's host count; override it with the others if
needed.) Every host needs the checkout, the checkpoints and the data at the same paths, and
the workdir on a filesystem both mount (checkpoints are written by every host). Without a
coordinator_address the run stays on one host and a multi-host mesh is refused at start.

The checkpoint paths are placeholders, as in spider_qwen.py. Runtime: not measured.
"""

import ml_collections

from configs import spider_qwen


def parse(arg: str) -> tuple[int, int]:
    """(hosts, GPUs per host) of "HOSTSxGPUS"."""
    try:
        hosts, gpus = (int(n) for n in arg.lower().split("x"))
    except ValueError:
        raise ValueError(f"configs/pod_gpu.py:{arg}: expected HOSTSxGPUS, e.g. 2x8") from None
    if hosts < 1 or gpus < 1:
        raise ValueError(f"configs/pod_gpu.py:{arg}: hosts and GPUs must be positive")
    return hosts, gpus


def get_config(arg: str = "2x8") -> ml_collections.ConfigDict:
    hosts, gpus = parse(arg)
    config = spider_qwen.get_config("7b")
    config.mesh = ml_collections.ConfigDict({"data": hosts, "fsdp": gpus, "tensor": 1})
    config.distributed.num_processes = hosts
    config.distributed.process_id = 0  # --config.distributed.process_id=<this host's>
    config.distributed.coordinator_address = ""  # --config...=<host 0's ip>:<port>
    return config
