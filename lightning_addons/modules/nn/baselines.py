"""Forecasting baselines users expect (pure torch): DLinear and the closed-form least-squares linear model.

* :class:`DLinear` (Zeng et al., AAAI 2023): a moving-average decomposition of each series into trend and
  remainder, one ``Linear(T -> H)`` per component, shared over series (or one per series, ``individual``).
* :func:`fit_least_squares`: the closed-form (ridge) fit of a
  :class:`~lightning_addons.modules.nn.LinearForecaster` on every training window and channel, no SGD.

:class:`~lightning_addons.modules.nn.SeasonalNaive` (any season, with history beyond the lookback) and
:class:`~lightning_addons.modules.nn.LinearForecaster` live beside the RAM models.
"""

from __future__ import annotations

import torch
from torch import nn

from lightning_addons.modules.nn.ram import LinearForecaster, check_series_input


def _positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")


class DLinear(nn.Module):
    """DLinear: series = moving-average trend + remainder, each mapped to the horizon by a linear layer.

    The trend is a centred moving average of width ``kernel_size`` with the series' ends replicated
    (the reference implementation's padding), so it keeps the lookback length.

    Args:
        window: lookback T.
        horizon: H.
        kernel_size: moving-average width (odd; 25 in the paper).
        individual: one pair of linear layers per series (needs ``num_series``), else shared.
        num_series: ``N * F`` of the inputs, for ``individual=True``.

    Raises:
        ValueError: non-positive sizes, an even ``kernel_size``, ``individual`` without ``num_series``;
            at forward time, bad inputs or a series count other than ``num_series``.

    Examples:
        >>> model = DLinear(window=24, horizon=6, kernel_size=5)
        >>> model(torch.zeros(2, 24, 3, 1)).shape
        torch.Size([2, 6, 3, 1])
    """

    def __init__(
        self,
        window: int = 96,
        horizon: int = 96,
        kernel_size: int = 25,
        individual: bool = False,
        num_series: int | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("window", window), ("horizon", horizon), ("kernel_size", kernel_size)):
            _positive_int(name, value)
        if kernel_size % 2 == 0:
            raise ValueError(f"`kernel_size` must be odd (a centred moving average), got {kernel_size}.")
        if individual:
            if num_series is None:
                raise ValueError("DLinear(individual=True) needs `num_series` (N * F of the inputs).")
            _positive_int("num_series", num_series)
        self.window, self.horizon, self.kernel_size = window, horizon, kernel_size
        self.individual, self.num_series = individual, num_series
        count = num_series if individual else 1
        self.seasonal = nn.ModuleList(nn.Linear(window, horizon) for _ in range(count))
        self.trend = nn.ModuleList(nn.Linear(window, horizon) for _ in range(count))
        for layer in (*self.seasonal, *self.trend):  # the reference initialises to the average
            nn.init.constant_(layer.weight, 1.0 / window)

    def decompose(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``s [..., T]`` -> ``(remainder, trend)``."""
        half = (self.kernel_size - 1) // 2
        padded = torch.cat(
            [s[..., :1].expand(*s.shape[:-1], half), s, s[..., -1:].expand(*s.shape[:-1], half)], -1
        )
        trend = padded.unfold(-1, self.kernel_size, 1).mean(-1)
        return s - trend, trend

    def forward(self, x, edge_index=None, edge_weight=None, u=None) -> torch.Tensor:
        check_series_input(x, "x", self.window)
        b, t, n, f = x.shape
        s = x.reshape(b, t, n * f).transpose(1, 2)  # [B, V, T]
        if self.individual and n * f != self.num_series:
            raise ValueError(
                f"`x` has {n * f} series but DLinear was built with num_series={self.num_series}."
            )
        rem, trend = self.decompose(s)
        if self.individual:
            y = torch.stack(
                [self.seasonal[i](rem[:, i]) + self.trend[i](trend[:, i]) for i in range(n * f)], dim=1
            )
        else:
            y = self.seasonal[0](rem) + self.trend[0](trend)
        return y.transpose(1, 2).reshape(b, self.horizon, n, f)


@torch.no_grad()
def fit_least_squares(model: LinearForecaster, windows, ridge: float = 1e-3) -> LinearForecaster:
    """Fit a :class:`LinearForecaster` in closed form (ridge regression) on every window and channel.

    Solves ``min_W sum ||(y - last) - W^T [x - last, 1]||^2 + ridge ||W||^2`` over all training windows
    (with ``use_norm=True``, ``last`` is each window's last input value; else 0) in float64, masked
    targets excluded window by window, and writes ``W`` into ``model.linear``.

    Args:
        model: the model to fit (its ``window``/``horizon`` must match the windows).
        windows: a dataset or DataLoader of dicts with ``x`` ``[T, N, F]``/``[B, T, N, F]``, ``y`` and
            optionally ``mask`` (e.g. ``TimeSeriesDataModule.dataset("train")``).
        ridge: L2 penalty (> 0 keeps the system well posed).

    Returns:
        ``model``, fitted in place.

    Raises:
        ValueError: not a LinearForecaster, no windows, shapes that do not match the model, ridge < 0.

    Examples:
        >>> t = torch.arange(64.0)
        >>> series = torch.sin(t / 3)[:, None, None]
        >>> data = [{"x": series[i:i + 8], "y": series[i + 8:i + 10]} for i in range(50)]
        >>> model = fit_least_squares(LinearForecaster(8, 2), data, ridge=1e-6)
        >>> float((model(series[None, 50:58]) - series[None, 58:60]).abs().max()) < 1e-3
        True
    """
    if not isinstance(model, LinearForecaster):
        raise ValueError(f"fit_least_squares fits a LinearForecaster, got {type(model).__name__}.")
    if not isinstance(ridge, (int, float)) or ridge < 0:
        raise ValueError(f"`ridge` must be >= 0, got {ridge!r}.")
    t, h = model.window, model.horizon
    gram = torch.zeros(t + 1, t + 1, dtype=torch.float64)
    rhs = torch.zeros(t + 1, h, dtype=torch.float64)
    seen = 0
    for item in windows:
        x, y = item["x"], item["y"]
        mask = item.get("mask")
        if x.dim() == 3:
            x, y = x[None], y[None]
            mask = None if mask is None else mask[None]
        if x.shape[1] != t or y.shape[1] != h:
            raise ValueError(
                f"windows have lookback {x.shape[1]} and horizon {y.shape[1]}, the model {t} and {h}."
            )
        xs = x.flatten(2).transpose(1, 2).reshape(-1, t).double()
        ys = y.flatten(2).transpose(1, 2).reshape(-1, h).double()
        if mask is not None:  # keep series whose whole target is observed
            keep = mask.flatten(2).transpose(1, 2).reshape(-1, h).all(dim=1)
            xs, ys = xs[keep], ys[keep]
        last = xs[:, -1:] if model.use_norm else torch.zeros_like(xs[:, -1:])
        a = torch.cat([xs - last, torch.ones_like(last)], dim=1)
        gram += a.T @ a
        rhs += a.T @ (ys - last)
        seen += xs.shape[0]
    if not seen:
        raise ValueError("fit_least_squares got no (fully observed) windows to fit.")
    w = torch.linalg.solve(gram + ridge * torch.eye(t + 1, dtype=torch.float64), rhs)
    model.linear.weight.copy_(w[:-1].T.float())
    model.linear.bias.copy_(w[-1].float())
    return model
