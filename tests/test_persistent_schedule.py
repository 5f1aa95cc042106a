"""`training.schedule: persistent` (TRM's persistent batch): refilling, resuming, two processes, learning, bad settings.

The end-to-end runs sort lists of 2 to 6 digits (so examples differ in length and the fixed padding
matters) with a tiny Llama, 16 slots, N_sup = 3, 12 optimizer steps; the uninterrupted run is
trained once per module. Refilling is checked against a loop written here, both on `PersistentBatch`
alone (with recorded halt decisions, one process or two simulated ones) and through the Trainer
(with a halting head that always says "halt", so the exploration minimums decide).
"""

from __future__ import annotations

import functools
import json
import os
import random
import subprocess
import sys

import pytest
import torch
from conftest import reasoner_config, save_tiny_base, shared_backbone
from safetensors.torch import load_file
from test_training import REPO, tiny_overrides

from latentreason import attach_reasoner
from latentreason.data import IGNORE_INDEX, collate
from latentreason.pipeline import train_recipe
from latentreason.reasoner import Carry
from latentreason.recipe import load_recipe
from latentreason.training import TrainingConfig, latest_checkpoint
from latentreason.training.halting import exploration
from latentreason.training.loop import Trainer
from latentreason.training.persistent import ExampleStream, PersistentBatch

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models run fastest on one thread (conftest)

# Every process of a torchrun launch trains the recipe. On a machine without GPUs only
# PartialState(cpu=True) joins the process group (gloo), so it must come before anything else asks.
TWO_PROCESS_DRIVER = """
import sys
from accelerate import PartialState
PartialState(cpu=True)
from latentreason.recipe import load_recipe
from latentreason.pipeline import train_recipe
train_recipe(load_recipe(sys.argv[1]))
"""


def write_pairs(path: str, count: int, seed: int) -> str:
    """Lists of 2 to 6 digits and their sorted order, as JSON lines."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as handle:
        for _ in range(count):
            digits = [rng.randrange(5) for _ in range(rng.randrange(2, 7))]
            handle.write(json.dumps({"input": " ".join(map(str, digits)), "output": " ".join(map(str, sorted(digits)))}) + "\n")
    return path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("persistent")
    return {
        "root": str(root), "base": save_tiny_base(str(root / "base")), "cache": str(root / "cache"),
        "train": write_pairs(str(root / "train.jsonl"), 64, seed=0), "test": write_pairs(str(root / "test.jsonl"), 32, seed=1),
    }


def persistent_recipe(workspace: dict[str, str], name: str, **changes: object):
    """The tiny recipe of test_training on the variable-length lists, with the persistent schedule."""
    values = {"data.train_file": workspace["train"], "data.eval_file": workspace["test"], "training.schedule": "persistent",
              "training.checkpoint_every": 5, **changes}
    overrides = [item for item in tiny_overrides(workspace["base"], os.path.join(workspace["root"], name), workspace["cache"], **values)
                 if not item.startswith("data.task")]
    return load_recipe(None, overrides)


@pytest.fixture(scope="module")
def reference_run(workspace: dict[str, str]):
    """The uninterrupted persistent run: 12 steps, checkpoints at 5, 10 and 12."""
    recipe = persistent_recipe(workspace, "reference")
    return recipe.training.output_dir, train_recipe(recipe)


def slot_state(checkpoint: str) -> dict:
    """The persistent batch's state saved in a checkpoint (the registered object that has slots)."""
    for name in sorted(os.listdir(checkpoint)):
        if name.startswith("custom_checkpoint_"):
            state = torch.load(os.path.join(checkpoint, name), weights_only=False)
            if "example" in state:
                return state
    raise AssertionError(f"no persistent batch state in {checkpoint}")


# --- 1. resume --------------------------------------------------------------------------------------
def test_resume_mid_stream_ends_with_bit_identical_weights(reference_run, workspace: dict[str, str]) -> None:
    _, reference = reference_run
    recipe = persistent_recipe(workspace, "interrupted")
    crashed = train_recipe(recipe, stop_after_steps=8)  # "crashes" after step 8; the last checkpoint is at 5
    assert not crashed.finished and crashed.global_step == 8
    checkpoint = latest_checkpoint(recipe.training.output_dir)
    assert checkpoint.endswith("step-5")
    saved = slot_state(checkpoint)
    # Step 5 is the second step of the slots' second examples: their carries are alive and saved.
    assert saved["steps"].tolist() == [2] * 16 and not saved["halted"].any()
    assert saved["answer"].shape[0] == 16 and saved["answer"].abs().sum() > 0

    resumed = train_recipe(recipe, resume=True)
    assert resumed.finished and resumed.global_step == 12
    assert resumed.adapter_state_dict.keys() == reference.adapter_state_dict.keys()
    for name, tensor in reference.adapter_state_dict.items():
        assert torch.equal(resumed.adapter_state_dict[name], tensor), name
    assert resumed.eval_results == reference.eval_results


# --- 2. two processes ---------------------------------------------------------------------------------
def test_two_processes_match_one(reference_run, workspace: dict[str, str]) -> None:
    """Two gloo processes (torchrun) with the same global batch end with the weights of one process."""
    reference_dir, _ = reference_run
    recipe = persistent_recipe(workspace, "two-processes")
    recipe_path, driver = os.path.join(workspace["root"], "two.yaml"), os.path.join(workspace["root"], "driver.py")
    recipe.save(recipe_path)
    with open(driver, "w", encoding="utf-8") as handle:
        handle.write(TWO_PROCESS_DRIVER)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", driver, recipe_path]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    completed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    output_dir = recipe.training.output_dir
    # Two processes really trained: each saved its random states.
    assert os.path.isfile(os.path.join(latest_checkpoint(output_dir), "random_states_1.pkl"))
    one = load_file(os.path.join(reference_dir, "reasoner.safetensors"))
    two = load_file(os.path.join(output_dir, "reasoner.safetensors"))
    assert one.keys() == two.keys()
    for name, tensor in one.items():
        torch.testing.assert_close(two[name], tensor, atol=1e-5, rtol=1e-4, msg=name)
    # The gathered slots agree too: the same examples in the same slots, the same carries.
    ones, twos = slot_state(os.path.join(reference_dir, "checkpoints", "step-10")), slot_state(os.path.join(output_dir, "checkpoints", "step-10"))
    assert torch.equal(ones["example"], twos["example"]) and torch.equal(ones["steps"], twos["steps"])
    torch.testing.assert_close(twos["answer"], ones["answer"], atol=1e-4, rtol=1e-4)


# --- 3. refilling -----------------------------------------------------------------------------------
def reference_slots(order: list[int], batch_size: int, steps: int, supervision_steps: int, minimum, halts) -> tuple[list, list]:
    """The example in each slot at each step, and which slots took a new one: a slot that is done (N_sup steps,
    or `halts(step, slot)` after its minimum steps) takes the next example of `order`; minimums go by stream position."""
    slots, done, counts, minimums, position = [-1] * batch_size, [True] * batch_size, [0] * batch_size, [1] * batch_size, 0
    history, refilled = [], []
    for step in range(steps):
        refilled.append(list(done))
        for slot in range(batch_size):
            if done[slot]:
                slots[slot], counts[slot], minimums[slot] = order[position], 0, minimum(position)
                position += 1
        history.append(list(slots))
        for slot in range(batch_size):
            counts[slot] += 1
            done[slot] = counts[slot] >= supervision_steps or (halts(step, slot) and counts[slot] >= minimums[slot])
    return history, refilled


def variable_examples(count: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Examples of 2 to 7 tokens whose first token is their index; cached features (B, L, 3) mark it too."""
    generator = torch.Generator().manual_seed(seed)
    examples = []
    for index in range(count):
        length = int(torch.randint(2, 8, (1,), generator=generator))
        ids = torch.randint(5, 100, (length,), generator=generator)
        ids[0] = index
        examples.append({"input_ids": ids, "attention_mask": torch.ones(length, dtype=torch.long),
                         "labels": torch.randint(0, 5, (length,), generator=generator), "features": torch.full((length, 3), float(index) + 1.0),
                         "cell_positions": torch.arange(length)})
    return examples


def test_refilling_matches_the_reference_loop_on_one_and_two_processes() -> None:
    examples, batch_size, supervision_steps, seed = variable_examples(10), 4, 3, 7
    longest = max(len(example["input_ids"]) for example in examples)
    collate_fn = functools.partial(collate, pad_token_id=0)

    def minimum(position: int) -> int:
        return 1 + position % 3

    def slots(process_index: int = 0, num_processes: int = 1) -> PersistentBatch:
        return PersistentBatch(examples, collate_fn, batch_size=batch_size, supervision_steps=supervision_steps, seed=seed,
                               minimum_steps=minimum, process_index=process_index, num_processes=num_processes)

    decisions = torch.rand(14, batch_size, generator=torch.Generator().manual_seed(1)) < 0.5  # recorded halt decisions
    order = torch.cat([ExampleStream(len(examples), seed).order(epoch) for epoch in range(4)]).tolist()
    expected, refilled = reference_slots(order, batch_size, len(decisions), supervision_steps, minimum, lambda step, slot: bool(decisions[step, slot]))
    one, halves = slots(), [slots(0, 2), slots(1, 2)]
    for step, halts in enumerate(decisions):
        batch, fresh = one.refill()
        parts = [half.refill() for half in halves]
        assert one.example.tolist() == expected[step] == halves[0].example.tolist() == halves[1].example.tolist(), step
        assert fresh.tolist() == refilled[step]
        # Each row holds its slot's example, padded to the longest training example; each process its own slots.
        assert batch["input_ids"][:, 0].tolist() == expected[step]
        assert batch["features"][:, 0, 0].tolist() == [index + 1.0 for index in expected[step]]
        assert set(batch) == {"input_ids", "attention_mask", "labels", "features"}
        for key, value in batch.items():
            assert value.shape[1] == longest, key
            assert torch.equal(torch.cat([part[0][key] for part in parts]), value), key
        for row, index in enumerate(expected[step]):
            length = len(examples[index]["input_ids"])
            assert torch.equal(batch["labels"][row, :length], examples[index]["labels"])
            assert (batch["labels"][row, length:] == IGNORE_INDEX).all() and (batch["attention_mask"][row, length:] == 0).all()
        assert torch.equal(torch.cat([part[1] for part in parts]), fresh)

        done = one.advance(None, halts)
        done_halves = torch.cat([half.advance(None, part) for half, part in zip(halves, halts.chunk(2))])
        assert torch.equal(done_halves, done)
        one.set_halted(done)
        for half in halves:
            half.set_halted(done_halves)  # what accelerator.gather gives every process


def test_checkpointed_slots_resume_on_any_process_with_its_own_carries() -> None:
    examples = variable_examples(6)
    collate_fn = functools.partial(collate, pad_token_id=0)

    def slots(process_index: int = 0, num_processes: int = 1) -> PersistentBatch:
        return PersistentBatch(examples, collate_fn, batch_size=4, supervision_steps=2, seed=0, minimum_steps=lambda position: 1,
                               process_index=process_index, num_processes=num_processes)

    one = slots()
    for step in range(3):
        batch, _ = one.refill()
        carry = Carry(batch["features"][:, :, :1].expand(-1, -1, 2) * (step + 1), batch["features"][:, :, :1].expand(-1, -1, 2) * -1)
        one.set_halted(one.advance(carry, halts=torch.tensor([True, False, False, True])))
    state = one.state_dict()
    second = slots(1, 2)
    second.load_state_dict(state)
    assert torch.equal(second.carry.answer, one.carry.answer[2:]) and torch.equal(second.carry.latent, one.carry.latent[2:])
    batch, fresh = second.refill()  # the same refill as the uninterrupted slots make, and this process's rows read again
    expected_batch, expected_fresh = one.refill()
    assert torch.equal(second.example, one.example)
    assert torch.equal(fresh, expected_fresh[2:])
    for key, value in expected_batch.items():
        assert torch.equal(batch[key], value[2:]), key
    with pytest.raises(ValueError, match="training.batch_size=2"):
        PersistentBatch(examples, collate_fn, batch_size=2, supervision_steps=2, seed=0, minimum_steps=lambda position: 1).load_state_dict(state)


def test_epochs_end_when_a_refill_would_need_the_next_pass() -> None:
    """Halting off, 6 examples in 2 slots, N_sup = 2: one pass is 3 rounds of 2 steps, each example runs all its steps."""
    slots = PersistentBatch(variable_examples(6), functools.partial(collate, pad_token_id=0), batch_size=2, supervision_steps=2,
                            seed=0, minimum_steps=lambda position: 1)
    steps, seen = 0, []
    while not slots.exhausted(1):
        slots.refill()
        seen += slots.example.tolist()
        slots.set_halted(slots.advance(None, None))
        steps += 1
    assert steps == 6 and sorted(set(seen)) == list(range(6)) and all(seen.count(index) == 2 for index in range(6))


def test_trainer_refills_halted_slots_by_exploration_minimum(tmp_path) -> None:
    """The halting head always says "halt" (bias +5), so each example runs exactly its exploration minimum:
    1 step, or with probability 0.5 a draw from [2, N_sup]. The backbone runs once per example that enters a slot."""
    torch.manual_seed(0)
    model = attach_reasoner(shared_backbone("llama"), reasoner_config(max_supervision_steps=3))
    with torch.no_grad():
        model.reasoner.halt_head.bias.fill_(5.0)
    examples = [{key: value for key, value in example.items() if key in ("input_ids", "attention_mask", "labels")}
                for example in variable_examples(20)]
    for example in examples:
        example["input_ids"][0] = 7  # a real token (the index marks are not needed here)
    config = TrainingConfig(schedule="persistent", batch_size=8, max_steps=7, learning_rate=1e-3, warmup_steps=0, seed=3, halt_exploration=0.5,
                            checkpoint_every=None, report_to="none", progress_bar=False, output_dir=str(tmp_path))
    trainer = Trainer(model, examples, config, collate_fn=functools.partial(collate, pad_token_id=0))
    encoded_rows: list[int] = []
    hook = model.backbone.register_forward_pre_hook(lambda module, args, kwargs: encoded_rows.append(kwargs["input_ids"].shape[0]), with_kwargs=True)
    try:
        order = torch.cat([trainer.slots.stream.order(epoch) for epoch in range(4)]).tolist()
        expected, refilled = reference_slots(order, 8, 7, 3, lambda position: int(exploration(position, 3, 1, 3, 0.5)[0]), lambda step, slot: True)
        finished = []
        for step, metrics in enumerate(trainer.persistent_steps(trainer.max_steps)):
            assert trainer.slots.example.tolist() == expected[step], step
            finished.append(metrics["examples_finished"])
            assert metrics["steps"] == 1
    finally:
        hook.remove()
        trainer.close()
    assert len(finished) == 7 and len(set(finished)) > 1  # the minimums really differ
    entered = 8 + sum(finished[:-1])  # the first fill, then every finished example's slot was refilled
    assert sum(encoded_rows) == entered == sum(map(sum, refilled))


# --- 4. learning -----------------------------------------------------------------------------------
def test_loss_falls(reference_run) -> None:
    """Steps 1-3 and 10-12 are the same supervision steps (1, 2, 3) of fresh examples: only the weights differ."""
    _, result = reference_run
    loss = {row["step"]: row["train/loss"] for row in result.history}
    assert sorted(loss) == list(range(1, 13))
    assert sum(loss[step] for step in (10, 11, 12)) < sum(loss[step] for step in (1, 2, 3)), loss
    assert loss[10] < loss[1], loss
    assert [row["train/examples_finished"] for row in result.history] == [0, 0, 16] * 4


def test_lora_backbone_trains_and_resumes_in_the_persistent_schedule(workspace: dict[str, str]) -> None:
    """With LoRA the backbone runs at every step on every slot (from the slots' input_ids); its adapter trains,
    and a resumed run ends with the same reasoner and LoRA weights."""
    lora = {"model.lora": "{rank: 2, alpha: 4, target_modules: [q_proj, v_proj]}", "training.max_steps": 5, "training.checkpoint_every": 2}
    reference = train_recipe(persistent_recipe(workspace, "lora", **lora))
    recipe = persistent_recipe(workspace, "lora-interrupted", **lora)
    assert not train_recipe(recipe, stop_after_steps=3).finished  # the last checkpoint is at step 2
    resumed = train_recipe(recipe, resume=True)
    assert reference.finished and resumed.finished and resumed.global_step == 5
    adapters = [load_file(os.path.join(folder, "lora", "adapter_model.safetensors")) for folder in
                (os.path.join(workspace["root"], "lora"), recipe.training.output_dir)]
    assert any("lora_B" in name and tensor.abs().sum() > 0 for name, tensor in adapters[0].items())  # LoRA's B starts at zero
    for name, tensor in adapters[0].items():
        assert torch.equal(adapters[1][name], tensor), name
    for name, tensor in reference.adapter_state_dict.items():
        assert torch.equal(resumed.adapter_state_dict[name], tensor), name


# --- 5. bad settings --------------------------------------------------------------------------------
def test_bad_settings_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"`training.schedule` must be 'per_batch' or 'persistent', got 'cyclic'"):
        TrainingConfig(schedule="cyclic")
    with pytest.raises(ValueError, match=r"gradient_accumulation_steps.*got 2.*training.schedule=per_batch"):
        TrainingConfig(schedule="persistent", batch_size=16, gradient_accumulation_steps=2)
    assert TrainingConfig().schedule == "per_batch"
