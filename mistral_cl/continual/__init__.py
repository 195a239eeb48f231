"""Continual learning of reaction yields: a stream of tasks, strategies that learn it, and what they
remember and forget.

- `pool.py`: every reaction of a run encoded once; tasks are positions in it;
- `strategies/`: one module per strategy and the registry (`STRATEGIES`);
- `buffer.py`: the replay memory and its policies;
- `metrics.py`: score matrices and ACC, BWT, FWT, forgetting;
- `learner.py`: the task loop of one strategy (train, score every task, checkpoint);
- `runner.py`: run directories and the `continual`, `ingest` and `report` commands.
"""
