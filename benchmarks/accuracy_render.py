"""The section of docs/benchmarks.md for the accuracy benchmarks (`accuracy`, `accuracy_maze`, ...).

Apart from `accuracy.py`, which trains and evaluates the comparators, because that module is long
enough on its own; `accuracy.render` is this module's `render`. Every figure is read from the result.
"""

from __future__ import annotations

from typing import Any

from matplotlib.figure import Figure

from .markdown import Images, noise_note, provenance, table, task_options, within_noise

COMPARATOR_NOTES = {
    "linear": "frozen backbone + linear head",
    "one_pass": "+ the reasoner's blocks, one pass",
    "deep_stack": "+ T(n+1) unshared copies of the blocks, one pass",
    "lora_linear": "LoRA-tuned backbone + linear head",
    "embeddings": "reasoner on learned token embeddings, no LLM",
    "reasoner": "frozen backbone + latentreason reasoner",
}
RECURSIVE = ("reasoner", "embeddings")  # the comparators that take several refinement steps


def render(result: dict[str, Any], images: Images | None = None) -> str:
    """Every comparator under every budget in one table, the findings in sentences, and the figure."""
    if "budgets" not in result:  # a result from before the training runs were wired in
        return "## Accuracy: what the recursion buys\n\nNo trained result yet: `.venv/bin/python -m benchmarks run accuracy --quick`.\n"
    settings, data, comparators = result["settings"], result["data"], result["comparators"]
    task = data["task"]
    size = data["task_options"].get("size")
    if size is not None:
        task = f"{task} {size}x{size}"
    budgets = [b for b in ("data", "time") if all(b in c for c in comparators)]
    rows = []
    for budget in budgets:
        for c in comparators:
            r = c[budget]
            recursive = c["name"] in RECURSIVE
            steps = f"{r['mean_steps']:.2f} of {c['supervision_steps']}" if recursive else "1"
            every = r.get("all_steps", r)  # all N_sup steps, no halting (how TRM evaluates); the same run for one-step models
            rows.append([f"`{c['name']}`", COMPARATOR_NOTES.get(c["name"], ""), f"{c['trainable_parameters']:,d}", c["layers_per_step"],
                         budget + (" (data run reused)" if r.get("reused_data_run") and budget == "time" else ""),
                         r["optimizer_steps"], f"{r['train_seconds']:.0f}", f"{r['accuracy']:.3f}", f"{r['exact_match']:.3f}", steps,
                         f"{every['accuracy']:.3f} / {every['exact_match']:.3f}" if recursive else "same"])
    header = ["comparator", "what", "trainable params", "layers per step", "budget", "optimizer steps", "train s",
              "cell accuracy", "exact match", "test steps (mean, halting)", "all N_sup steps: cells / exact"]

    reused: dict[str, list[str]] = {}  # date of the earlier result -> comparators whose runs were kept from it (`run --reuse`)
    for c in comparators:
        if "reused_from" in c:
            reused.setdefault(c["reused_from"], []).append(f"`{c['name']}`")
    reuse_text = "".join(
        f"\nKept from the result of {when} with the same settings (`run NAME --reuse`): the runs of {', '.join(names)}; the time "
        "budget's runs too where that budget was the same. The rest was trained in this run.\n" for when, names in reused.items())
    time_budget = result["budgets"].get("time")
    time_text = (f" *time*: the same {time_budget['seconds']:.0f} s of training for each; the trainer has no time limit, so each "
                 "comparator's step count is that budget over its seconds per optimizer step, measured for all of them within a few "
                 "minutes just before the time-budget runs (so a drift in the machine's load over the hour does not tilt the budget); "
                 "the seconds each run then actually took are in the table (on a shared machine they drift)"
                 if time_budget else "")
    control = data["task"] == "sort_words"
    title = f"## Accuracy on {task}: a control (depth should not help)" if control else f"## Accuracy on {task}: what the recursion buys"
    control_text = ("A control, not a test of depth: ranking a list is one round of parallel comparisons for attention, so a "
                    "one-pass head is expected to match or beat the recursion here; the reasoner winning by a wide margin would "
                    "point at something other than depth (more optimizer steps, say). " if control else "")
    stem = result.get("benchmark", "accuracy")  # one plot per benchmark
    return (
        f"{title}\n\n" + control_text +
        f"Task `{data['task']}` ({task_options(data['task_options'])}): {data['num_train']} training and {data['num_test']} test examples of up to "
        f"{data['max_length']} tokens, output `{data['output_kind']}` over labels {data['labels']}. Backbone "
        f"`{settings['backbone']}`, frozen; its features are cached once and shared by every comparator except `lora_linear` "
        f"(its backbone trains) and `embeddings` (no backbone). Reasoner: hidden {settings['hidden_size']}, {settings['mixer']} mixer, "
        f"n={settings['latent_steps']}, T={settings['cycles']}, N_sup={settings['supervision_steps']} in training and at test; every "
        f"model trains with `latentreason.training.train` (AdamW lr {settings['learning_rate']}, batch {settings['batch_size']}, "
        "EMA) and is evaluated on its EMA weights. Budgets: *data*: the same "
        f"{result['budgets']['data']['examples']} examples x {result['budgets']['data']['epochs']} epochs for all (one optimizer "
        "step per batch for the one-step models, up to N_sup for the recursive ones)" + (";" + time_text if time_text else "") + ". *Test steps*: mean "
        "refinement steps used with halting: the headline accuracy of the recursive models is with halting, and the last column "
        "gives it after all N_sup steps without halting, which is how the TRM reference evaluates.\n\n"
        + provenance(result) + reuse_text + "\n" + table(header, rows) + "\n"
        + findings(comparators, budgets, chance=1 / max(len(data["labels"]), 1), num_test=data["num_test"]) + "\n"
        + (images.add(figure(result, budgets), stem, f"{task}: accuracy vs refinement step and per comparator") if images else "")
    )


def figure(result: dict[str, Any], budgets: list[str]) -> Figure:
    """Left: the reasoner's accuracy after each refinement step against the others' (data budget). Right: every comparator."""
    comparators = result["comparators"]
    plot = Figure(figsize=(13, 4.5))
    axes = plot.subplots(1, 2)
    reasoner = next((c for c in comparators if c["name"] == "reasoner"), None)
    if reasoner is not None:
        per_step = reasoner["data"]["per_step"]
        steps = [p["step"] for p in per_step]
        axes[0].plot(steps, [p["accuracy"] for p in per_step], "o-", color="tab:blue", label="reasoner: cell accuracy")
        axes[0].plot(steps, [p["exact_match"] for p in per_step], "s--", color="tab:blue", label="reasoner: exact match")
        for index, c in enumerate(c for c in comparators if c["name"] != "reasoner"):
            axes[0].axhline(c["data"]["accuracy"], color=f"C{index + 1}", linestyle=":", linewidth=1, label=f"{c['name']}: cell accuracy")
        axes[0].set(title="data budget: accuracy vs refinement steps at test", xlabel="refinement step", ylabel="accuracy", ylim=(0, 1.02))
        axes[0].legend(fontsize=7)
        axes[0].grid(alpha=0.3)
    width = 0.8 / (2 * len(budgets))
    names = [c["name"] for c in comparators]
    for b_index, budget in enumerate(budgets):
        for m_index, metric in enumerate(("accuracy", "exact_match")):
            offset = (2 * b_index + m_index - (2 * len(budgets) - 1) / 2) * width
            axes[1].bar([i + offset for i in range(len(names))], [c[budget][metric] for c in comparators], width,
                        label=f"{budget} budget: {metric.replace('_', ' ')}", hatch="//" if metric == "exact_match" else None)
    axes[1].set_xticks(range(len(names)), names, rotation=20)
    axes[1].set(title="every comparator, both budgets", ylabel="accuracy", ylim=(0, 1.02))
    axes[1].legend(fontsize=7)
    axes[1].grid(axis="y", alpha=0.3)
    return plot


def at_chance(accuracy: float, chance: float) -> bool:
    """Whether a cell accuracy is within 3 points of a uniform guess: nothing learned."""
    return accuracy < chance + 0.03


def below_linear(comparator: dict[str, Any], linear: dict[str, Any] | None, budgets: list[str], chance: float) -> str:
    """", below even the linear head (...)" where the linear head learned something under those budgets, else ""."""
    if linear is None or comparator is linear:
        return ""
    learned = [b for b in budgets if not at_chance(linear[b]["accuracy"], chance)]
    if not learned:
        return ""
    return ", below even the linear head (" + ", ".join(f"{linear[b]['accuracy']:.3f}" for b in learned) + ")"


def findings(comparators: list[dict[str, Any]], budgets: list[str], chance: float, num_test: int) -> str:
    """Plain sentences: does the reasoner win under each budget, what does one test step keep, who learned nothing."""
    by_name = {c["name"]: c for c in comparators}
    if "reasoner" not in by_name:
        return ""
    lines = []
    for c in comparators:
        unlearned = [b for b in budgets if at_chance(c[b]["accuracy"], chance)]
        if unlearned:
            scores = ", ".join(f"{c[b]['accuracy']:.3f}" for b in unlearned)
            lines.append(f"- `{c['name']}` is at chance (cell accuracy {scores} "
                         f"vs {chance:.3f} for a uniform guess) under the {' and '.join(unlearned)} budget: it learned nothing there"
                         + below_linear(c, by_name.get("linear"), unlearned, chance) + ".")
    for budget in budgets:
        ours = by_name["reasoner"][budget]
        others = [c for c in comparators if c["name"] != "reasoner"]
        best = max(others, key=lambda c: (c[budget]["exact_match"], c[budget]["accuracy"]))
        theirs = best[budget]
        close = within_noise(ours["exact_match"], theirs["exact_match"], num_test) and ours["exact_match"] != theirs["exact_match"]
        if (ours["exact_match"], ours["accuracy"]) > (theirs["exact_match"], theirs["accuracy"]):
            lines.append(f"- {budget} budget: the reasoner {'leads, ' + noise_note(num_test) + ',' if close else 'wins'} (exact match "
                         f"{ours['exact_match']:.3f}, cell accuracy "
                         f"{ours['accuracy']:.3f}; best other: `{best['name']}` with {theirs['exact_match']:.3f} / {theirs['accuracy']:.3f}).")
        elif close:
            lines.append(f"- {budget} budget: the reasoner trails, {noise_note(num_test)}: `{best['name']}` reaches exact match "
                         f"{theirs['exact_match']:.3f} and cell accuracy {theirs['accuracy']:.3f}, the reasoner "
                         f"{ours['exact_match']:.3f} / {ours['accuracy']:.3f}.")
        else:
            lines.append(f"- {budget} budget: **the reasoner does not win**. `{best['name']}` reaches exact match "
                         f"{theirs['exact_match']:.3f} and cell accuracy {theirs['accuracy']:.3f}, the reasoner "
                         f"{ours['exact_match']:.3f} / {ours['accuracy']:.3f}.")
        if "one_pass" in by_name:  # the same blocks and (nearly) the same parameters, without the recursion
            flat = by_name["one_pass"][budget]
            beats = "beats" if (ours["exact_match"], ours["accuracy"]) > (flat["exact_match"], flat["accuracy"]) else "does not beat"
            lines.append(f"- {budget} budget, same blocks and parameters: the reasoner {beats} the one-pass head (exact match "
                         f"{ours['exact_match']:.3f} vs {flat['exact_match']:.3f}, cell accuracy {ours['accuracy']:.3f} vs {flat['accuracy']:.3f}).")
    data_run = by_name["reasoner"]["data"]
    every = data_run.get("all_steps")
    if every and every["exact_match"] > data_run["exact_match"] + 0.02:
        lines.append(f"- Halting stops too early: with halting the reasoner uses {data_run['mean_steps']:.2f} steps and gets exact match "
                     f"{data_run['exact_match']:.3f}; run for all {every['steps']} steps it gets {every['exact_match']:.3f}.")
    curve = data_run.get("halting_curve")
    if curve:
        lines.append("- Halting curve (reasoner, data budget; exact match at mean steps used, by halt probability threshold): "
                     + "; ".join(f"p > {row['threshold']:g}: {row['exact_match']:.3f} at {row['mean_steps']:.2f}" for row in curve) + ".")
    per_step = data_run["per_step"]
    first, last = per_step[0], per_step[-1]
    if last["accuracy"] > 0:
        kept_exact = f"{first['exact_match'] / last['exact_match']:.0%}" if last["exact_match"] else "n/a"
        lines.append(f"- One refinement step at test keeps {first['accuracy'] / last['accuracy']:.0%} of the cell accuracy and "
                     f"{kept_exact} of the exact match after {last['step']} steps (cells {first['accuracy']:.3f} vs "
                     f"{last['accuracy']:.3f}, exact match {first['exact_match']:.3f} vs {last['exact_match']:.3f}). The published "
                     "finding is about 7/8 (88%), for a model trained with N_sup=16 (see the refinement benchmark).")
    return "\n".join(lines) + "\n"
