"""A training run for ``test_kill_resume.py`` to SIGKILL: run as a module, not a test.

    python -m tests.training.kill_resume_child reward|policy CHECKPOINT_DIR OUT [BASE_FOLDER]

Trains the tiny reward model or tiny NP-DPO policy of the unit tests with a
checkpoint after every step, then writes the kept weights (safetensors) and
the step it resumed from (JSON) to ``OUT`` / ``OUT.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

REWARD_STEPS = 300
POLICY_STEPS = 40


def main(kind: str, checkpoint_dir: str, out: str, base_folder: str | None = None) -> None:
    torch.set_num_threads(1)
    if kind == "reward":
        from steerable_alignment.recipes.reward_models import train
        from tests.recipes.test_reward_models import make_model, tiny_config, tiny_setup

        data, train_rows, val_rows = tiny_setup()
        config = tiny_config(
            max_steps=REWARD_STEPS, eval_every=25, checkpoint_every=1, checkpoint_dir=checkpoint_dir
        )
        # the latent model draws z from torch's global RNG: its state must survive the kill too
        result = train(make_model("nppl_latent"), data, train_rows, val_rows, config)
        weights, resumed_from = result.model.state_dict(), result.resumed_from
    else:
        from steerable_alignment.recipes.policies import train_policy
        from tests.recipes.test_policies import make_data, tiny_policy, tiny_policy_config

        config = tiny_policy_config(
            max_steps=POLICY_STEPS, eval_every=10, checkpoint_every=1, checkpoint_dir=checkpoint_dir
        )
        result = train_policy(tiny_policy(Path(base_folder)), make_data(), config)
        weights = result.policy.trainable_parameters()
        resumed_from = result.resumed_from
    save_file({k: v.detach().contiguous() for k, v in weights.items()}, out)
    Path(out + ".json").write_text(json.dumps({"resumed_from": resumed_from}))


if __name__ == "__main__":
    main(*sys.argv[1:])
