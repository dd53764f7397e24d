"""The tuner's NumPy Pareto utilities equal BoTorch's (the library reference) on random fronts.

They stay hand-written so the tuner's pure core imports neither torch nor BoTorch; these tests hold them to
BoTorch's ``is_non_dominated`` and exact ``Hypervolume``."""

from __future__ import annotations

import numpy as np
import pytest

from lightning_addons.tuner._pareto import hypervolume, pareto_mask

botorch_mo = pytest.importorskip("botorch.utils.multi_objective")


def _fronts(m: int, n: int):
    rng = np.random.default_rng(1000 * m + n)
    for _ in range(5):
        Y = rng.random((n, m))
        Y[: n // 4] = np.round(Y[: n // 4], 1)  # ties on single coordinates
        Y[-2:] = Y[:2]  # exact duplicates
        yield Y


@pytest.mark.parametrize("m,n", [(2, 30), (3, 40), (4, 25)])
def test_pareto_mask_equals_botorch_is_non_dominated(m, n):
    import torch
    from botorch.utils.multi_objective.pareto import is_non_dominated

    for Y in _fronts(m, n):
        ours = {tuple(r) for r in Y[pareto_mask(Y)]}
        ref = {tuple(r) for r in Y[is_non_dominated(torch.as_tensor(Y), deduplicate=True).numpy()]}
        assert ours == ref
        assert pareto_mask(Y).sum() == len(ours)  # one copy of each duplicate, as deduplicate=True


@pytest.mark.parametrize("m,n", [(2, 30), (3, 40), (4, 25)])
def test_hypervolume_equals_botorch_exact_hypervolume(m, n):
    import torch
    from botorch.utils.multi_objective.hypervolume import Hypervolume
    from botorch.utils.multi_objective.pareto import is_non_dominated

    for Y in _fronts(m, n):
        ref = np.full(m, 0.1)
        Yt = torch.as_tensor(Y)
        front = Yt[is_non_dominated(Yt)]
        expected = Hypervolume(torch.as_tensor(ref)).compute(front[(front > torch.as_tensor(ref)).all(-1)])
        assert hypervolume(Y, ref) == pytest.approx(float(expected), rel=1e-12, abs=1e-15)
