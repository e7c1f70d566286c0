"""Worker of tests/test_dpo_fsdp.py, run once under torchrun with 2 CPU processes: every job of the JSON
file argv[1] (a TrainConfig as a dict plus its FSDP block class) is trained twice in this one launch,
under DDP (accelerate) into OUT-ddp and under FSDP2 (``--fsdp-blocks``) into OUT-fsdp."""
import dataclasses
import json
import sys

from accelerate import Accelerator

from dpo.train import TrainConfig, train

if __name__ == "__main__":
    accelerator = Accelerator(cpu=True)
    for job in json.loads(open(sys.argv[1]).read()):
        cfg = TrainConfig(**job["config"])
        for mode, blocks in (("ddp", ""), ("fsdp", job["block"])):
            summary = train(dataclasses.replace(cfg, out=f"{cfg.out}-{mode}", fsdp_blocks=blocks), accelerator)
            accelerator.print(json.dumps({"out": f"{cfg.out}-{mode}", "ranks_in_sync": summary["ranks_in_sync"],
                                          "world_size": summary["world_size"]}))
