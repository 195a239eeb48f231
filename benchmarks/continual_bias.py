"""Where a continual run's final model goes wrong, task by task: yield level or within-task ranking.

    python benchmarks/continual_bias.py RUN_DIR [--strategies replay,joint]

For each strategy's final checkpoint in RUN_DIR (a `mistral-cl continual` run, or one `seed-N`
directory of `benchmarks/continual.py`), prints per task the held-out yields' mean and sd, the bias
(mean prediction minus mean yield, in yield %), the R^2, and the R^2 the same predictions would have
with the bias removed. A large bias with a much better bias-free R^2 means the model predicts the
wrong yield level for the task; a poor bias-free R^2 means it ranks the task's reactions badly.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from mistral_cl import hostmem
from mistral_cl.continual import learner, runner
from mistral_cl.continual.strategies import build_strategy
from mistral_cl.inference import predict_mean
from mistral_cl.scores import regression_scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--strategies", help="comma-separated specs (default: every strategy of the run)")
    args = parser.parse_args(argv)
    hostmem.configure()
    run = runner.ContinualRun.open(args.run_dir)
    specs = args.strategies.split(",") if args.strategies else run.settings.strategies
    setting = run.setting
    pool = setting.pool
    print(f"{'strategy':16s} {'task':16s} {'mean %':>7s} {'sd %':>6s} {'bias %':>7s} {'R2':>7s} "
          f"{'R2 unbiased':>11s}")
    for spec in specs:
        strategy = build_strategy(spec)
        progress = learner.restore(strategy, setting, runner.strategy_directory(args.run_dir, strategy))
        if progress is None:
            print(f"{spec}: no checkpoint in {args.run_dir}")
            continue
        owner = {j: members for members, group in strategy.predictors(setting, progress.state,
                                                                      progress.trainable, len(pool))
                 for j in group}
        for j, key in enumerate(pool.keys):
            models = [setting.model(trainable) for trainable in owner[j]]
            positions = pool.test_positions([j])
            truth = pool.encoded.yields[positions].astype(np.float64)
            predicted = np.asarray(predict_mean(models, pool.source(positions), 128), np.float64)
            bias = predicted.mean() - truth.mean()
            r2 = regression_scores(truth, predicted)["r2"]
            unbiased = regression_scores(truth, predicted - bias)["r2"]
            print(f"{strategy.spec:16s} {key:16s} {100 * truth.mean():7.1f} {100 * truth.std():6.1f} "
                  f"{100 * bias:+7.1f} {r2:7.2f} {unbiased:11.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
