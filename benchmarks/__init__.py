"""Benchmarks of latentreason: memory, speed, overhead and accuracy; `python -m benchmarks run`.

Every benchmark is a module registered in `benchmarks.__main__.BENCHMARKS` with three names:

    PRESETS                      {"full": settings, "quick": settings, "tiny": settings}: its sizes
    run(settings) -> dict        measures, returns the JSON-ready result (`benchmarks/results/<preset>/<name>.json`)
    render(result, images=None) -> str
                                 its section of docs/benchmarks.md, every figure read from `result`;
                                 plots go through `images` (a `markdown.Images`: `images.add(figure, name,
                                 caption)` saves docs/img/bench_<name>.png and returns the markdown that
                                 shows it); with `images=None` the section is its text alone

Several registered names may share one module's code and differ only in their presets
(`accuracy_maze` is `accuracy` on mazes). `report.py` writes the page: each registered benchmark's
section in the registry's order, plus the two parts that read several results (`combined.py`).
"""
