"""spider_qwen.py's 7B case (Qwen1.5-0.5B <- Qwen1.5-7B on Spider, the paper's recipe and
global batch 16) on a multi-host TPU slice. `get_config(pod)` sizes the mesh:

  pod      chips  hosts  mesh data x fsdp x tensor  HBM per chip
  v4-32       16      4  2 x 8 x 1                  32 GB
  v4-64       32      8  2 x 8 x 2                  32 GB
  v5e-32      32      8  1 x 16 x 2                 16 GB
  v5e-64      64     16  1 x 16 x 4                 16 GB

(v4 slices are named by TensorCores, two per chip; jax sees one device per chip.) The
batch's 16 rows go one per (data, fsdp) position, tensor shards attention heads and MLP
columns, fsdp shards weights and optimizer state (the 7B teacher's 15 GB of bf16 weights
over 8 or 16 chips). A larger data.batch_size (a multiple of data x fsdp) uses the slice
better but departs from the paper's recipe.

config.distributed.auto: jax.distributed.initialize() reads the TPU environment, so the
same command runs on every host. Every host needs the checkout, the checkpoints and the
data at the same paths, and the workdir on a filesystem they all mount (NFS, Filestore,
GCS FUSE: checkpoints are written by every host):

  gcloud compute tpus tpu-vm ssh NAME --zone=ZONE --worker=all --command="cd kid && \
    python -m kid.main --config configs/pod_tpu.py:v4-64 --workdir /mnt/shared/spider_qwen_7b \
    --config.student.checkpoint=/path/to/Qwen1.5-0.5B \
    --config.teacher.checkpoint=/path/to/qwen1.5-7b-spider \
    --config.data.dir=data/spider --config.eval.ts_dir=data/test-suite"

The checkpoint paths are placeholders, as in spider_qwen.py. Runtime: not measured.
"""

import ml_collections

from configs import spider_qwen

# pod: (data, fsdp, tensor); the chips and hosts are in the table above.
MESHES = {
    "v4-32": (2, 8, 1),
    "v4-64": (2, 8, 2),
    "v5e-32": (1, 16, 2),
    "v5e-64": (1, 16, 4),
}


def get_config(arg: str = "v4-64") -> ml_collections.ConfigDict:
    if arg not in MESHES:
        raise ValueError(f"configs/pod_tpu.py:{arg}: the pod is one of {sorted(MESHES)}")
    config = spider_qwen.get_config("7b")
    data, fsdp, tensor = MESHES[arg]
    config.mesh = ml_collections.ConfigDict({"data": data, "fsdp": fsdp, "tensor": tensor})
    config.distributed.auto = True
    return config
