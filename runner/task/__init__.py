"""The in-container library: follow the container contract in a few lines.

    from runner.task import RunContext, LoopOptions, run
    sys.exit(run(MyTask(...), RunContext.from_env(), LoopOptions()))

Pieces: ``context`` (the environment), ``manifest`` and ``checkpoint`` (the safe layout),
``writer`` (asynchronous saves), ``notices`` (every preemption notice source), ``state``
(RNGs and weight hashes), ``loop`` (the shared training loop).
"""
