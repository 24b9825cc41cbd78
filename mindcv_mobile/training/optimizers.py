"""Optimizer cells that MindSpore does not provide: Lion, NAdam and Adan, plus a LAMB that runs on
every device (``nn.Lamb`` has no CPU kernel in MindSpore 2.10 and is marked deprecated).

Each follows mindcv's update rule and default hyper-parameters, except Adan, which follows its
authors' implementation. ``g`` is the gradient after dividing by ``loss_scale``, ``t`` the
1-based step, ``lr`` the step's (group's) learning rate, ``wd`` the group's weight decay:

* :class:`Lion` (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"), betas
  (0.9, 0.99), decoupled decay: ``w -= lr * (sign(b1*m + (1-b1)*g) + wd*w)``, then
  ``m = b2*m + (1-b2)*g``.
* :class:`NAdam` (Dozat 2016, "Incorporating Nesterov Momentum into Adam"), betas (0.9, 0.999),
  eps 1e-8, schedule_decay 4e-3, L2 decay (``g += wd*w`` before the moments). Momentum schedule
  ``mu_t = b1 * (1 - 0.5 * 0.96**(t*schedule_decay))``, ``P_t = mu_1*...*mu_t``;
  ``m = b1*m + (1-b1)*g``, ``v = b2*v + (1-b2)*g^2``,
  ``w -= lr * (mu_{t+1}*m/(1-P_t*mu_{t+1}) + (1-mu_t)*g/(1-P_t)) / (sqrt(v/(1-b2**t)) + eps)``.
* :class:`Adan` (Xie et al. 2022, "Adan: Adaptive Nesterov Momentum Algorithm"), the rule of the
  authors' PyTorch optimizer (sail-sg/Adan, also timm's): betas (0.98, 0.92, 0.99) weigh the
  history, eps 1e-8, bias-corrected moments and proximal decay. With ``d = g - g_prev`` (0 on
  the first step): ``m = b1*m + (1-b1)*g``, ``v = b2*v + (1-b2)*d``,
  ``n = b3*n + (1-b3)*(g + b2*d)^2``, ``u = sqrt(n)/sqrt(1-b3**t) + eps``,
  ``w = (w - lr*m/((1-b1**t)*u) - lr*b2*v/((1-b2**t)*u)) / (1 + lr*wd)``.
  mindcv 0.3.0's Adan differs: it puts these default betas into the paper's notation, where a
  beta weighs the newest term (so its momentum keeps only 2% of the history), and it has no bias
  correction.
* :class:`Lamb` (You et al. 2020, "Large Batch Optimization for Deep Learning"), the rule of
  ``nn.Lamb``: betas (0.9, 0.999), eps 1e-6, bias-corrected Adam direction
  ``r = m_hat/(sqrt(v_hat)+eps) + wd*w`` scaled per parameter by ``||w|| / ||r||`` (1 when
  either norm is 0): ``w -= lr * ratio * r``. No loss scale, as in ``nn.Lamb``.

All accept parameter groups with their own ``weight_decay`` and ``lr``, a per-step LR schedule,
and (except Lamb) a fixed ``loss_scale`` that the gradients are divided by. The decay does not
depend on the loss scale.
"""

from __future__ import annotations

import math

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops

__all__ = ["Lion", "NAdam", "Adan", "Lamb"]

_lion = ops.MultitypeFuncGraph("lion_update")
_nadam = ops.MultitypeFuncGraph("nadam_update")
_adan = ops.MultitypeFuncGraph("adan_update")
_lamb = ops.MultitypeFuncGraph("lamb_update")


@_lion.register("Tuple", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Bool")
def _lion_update(hyper, lr, wd, w, m, g, decay):
    b1, b2 = hyper
    update = ops.sign(b1 * m + (1 - b1) * g)
    if decay:
        update = update + wd * w
    new_m = b2 * m + (1 - b2) * g
    out = ops.assign(w, w - lr * update)
    return ops.depend(out, ops.assign(m, new_m))


@_nadam.register("Tuple", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Bool")
def _nadam_update(hyper, lr, wd, w, m, v, g, decay):
    b1, b2, eps, m_coef, g_coef, v_corr = hyper
    if decay:
        g = g + wd * w
    new_m = b1 * m + (1 - b1) * g
    new_v = b2 * v + (1 - b2) * ops.square(g)
    step = (m_coef * new_m + g_coef * g) / (ops.sqrt(new_v / v_corr) + eps)
    out = ops.assign(w, w - lr * step)
    out = ops.depend(out, ops.assign(m, new_m))
    return ops.depend(out, ops.assign(v, new_v))


@_adan.register("Tuple", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Bool")
def _adan_update(hyper, lr, wd, w, m, v, n, g_prev, g, decay):
    b1, b2, b3, eps, not_first, corr1, corr2, sqrt_corr3 = hyper
    d = (g - g_prev) * not_first
    new_m = b1 * m + (1 - b1) * g
    new_v = b2 * v + (1 - b2) * d
    new_n = b3 * n + (1 - b3) * ops.square(g + b2 * d)
    denom = ops.sqrt(new_n) / sqrt_corr3 + eps
    new_w = w - (lr / corr1) * new_m / denom - (lr * b2 / corr2) * new_v / denom
    if decay:
        new_w = new_w / (1 + lr * wd)
    out = ops.assign(w, new_w)
    out = ops.depend(out, ops.assign(m, new_m))
    out = ops.depend(out, ops.assign(v, new_v))
    out = ops.depend(out, ops.assign(n, new_n))
    return ops.depend(out, ops.assign(g_prev, g))


@_lamb.register("Tuple", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Bool")
def _lamb_update(hyper, lr, wd, w, m, v, g, decay):
    b1, b2, eps, m_corr, v_corr = hyper
    new_m = b1 * m + (1 - b1) * g
    new_v = b2 * v + (1 - b2) * ops.square(g)
    update = (new_m / m_corr) / (ops.sqrt(new_v / v_corr) + eps)
    if decay:
        update = update + wd * w
    w_norm = ops.sqrt(ops.reduce_sum(ops.square(w)))
    u_norm = ops.sqrt(ops.reduce_sum(ops.square(update)))
    both = ops.logical_and(w_norm > 0, u_norm > 0)
    ratio = ops.select(both, w_norm / ops.select(both, u_norm, ops.ones_like(u_norm)), ops.ones_like(w_norm))
    out = ops.assign(w, w - lr * ratio * update)
    out = ops.depend(out, ops.assign(m, new_m))
    return ops.depend(out, ops.assign(v, new_v))


def _check(name: str, value: object, low: float, high: float, closed: str = "()") -> float:
    """``value`` as a float if it lies in the interval ``low, high`` (``closed``: "()", "[)", "[]")."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        ok = (low <= value if closed[0] == "[" else low < value) and (
            value <= high if closed[1] == "]" else value < high
        )
    if not ok:
        raise ValueError(f"{name} must be a number in {closed[0]}{low}, {high}{closed[1]}, got {value!r}")
    return float(value)


def _f32(value: float) -> Tensor:
    return Tensor(value, ms.float32)


class _Optimizer(nn.Optimizer):
    """Shared plumbing: loss-scale division that leaves the decay alone, the step counter, and a
    per-parameter map whose lr / weight decay come from the parameter's group."""

    def __init__(self, params, learning_rate, weight_decay: float, loss_scale: float) -> None:
        # The base class would multiply the decay by the loss scale (for optimizers that add
        # wd*w to still-scaled gradients); these cells unscale first, so it gets 1.
        super().__init__(learning_rate, params, weight_decay)
        self.loss_scale = _check("loss_scale", loss_scale, 0.0, math.inf)
        self.reciprocal_scale = _f32(1.0 / self.loss_scale)
        self.need_scale = self.loss_scale != 1.0

    def _begin(self, gradients):
        """Unscaled gradients, this step's lr(s) and the 1-based step ``t`` (float32)."""
        gradients = self.scale_grad(gradients)
        lr = self.get_lr()
        self.assignadd(self.global_step, self.global_step_increase_tensor)
        t = ops.cast(self.global_step, ms.float32).reshape(())
        return gradients, lr, t

    def _map(self, update, hyper, lr, *state):
        wd = self.weight_decay
        if self.is_group_lr:
            return self.hyper_map(ops.partial(update, hyper), lr, wd, *state, self.decay_flags)
        if self.is_group:
            return self.hyper_map(ops.partial(update, hyper, lr), wd, *state, self.decay_flags)
        return self.hyper_map(ops.partial(update, hyper, lr, wd), *state, self.decay_flags)


class Lion(_Optimizer):
    """Lion: the sign of an interpolated momentum, with decoupled weight decay (module docstring)."""

    def __init__(self, params, learning_rate=2e-4, beta1=0.9, beta2=0.99, weight_decay=0.0, loss_scale=1.0):
        super().__init__(params, learning_rate, weight_decay, loss_scale)
        self.beta1 = _f32(_check("beta1", beta1, 0.0, 1.0, "[]"))
        self.beta2 = _f32(_check("beta2", beta2, 0.0, 1.0, "[]"))
        self.moments1 = self._parameters.clone(prefix="lion_m", init="zeros")

    @ms.jit
    def construct(self, gradients):
        gradients, lr, _ = self._begin(gradients)
        hyper = (self.beta1, self.beta2)
        return self._map(_lion, hyper, lr, self._parameters, self.moments1, gradients)


class NAdam(_Optimizer):
    """Adam with Nesterov momentum and Dozat's momentum schedule, L2 weight decay (module docstring)."""

    def __init__(
        self,
        params,
        learning_rate=2e-3,
        beta1=0.9,
        beta2=0.999,
        eps=1e-8,
        weight_decay=0.0,
        loss_scale=1.0,
        schedule_decay=4e-3,
    ):
        super().__init__(params, learning_rate, weight_decay, loss_scale)
        self.beta1 = _f32(_check("beta1", beta1, 0.0, 1.0, "[)"))
        self.beta2 = _f32(_check("beta2", beta2, 0.0, 1.0, "[)"))
        self.eps = _f32(_check("eps", eps, 0.0, math.inf))
        # 0.96 ** (t * schedule_decay) == exp(t * schedule_decay * ln 0.96)
        self.mu_rate = _f32(_check("schedule_decay", schedule_decay, 0.0, math.inf, "[)") * math.log(0.96))
        self.moments1 = self._parameters.clone(prefix="nadam_m", init="zeros")
        self.moments2 = self._parameters.clone(prefix="nadam_v", init="zeros")
        self.mu_schedule = Parameter(_f32(1.0), name="mu_schedule")

    @ms.jit
    def construct(self, gradients):
        gradients, lr, t = self._begin(gradients)
        mu = self.beta1 * (1 - 0.5 * ops.exp(t * self.mu_rate))
        mu_next = self.beta1 * (1 - 0.5 * ops.exp((t + 1) * self.mu_rate))
        product = self.mu_schedule * mu
        ops.assign(self.mu_schedule, product)
        m_coef = mu_next / (1 - product * mu_next)
        g_coef = (1 - mu) / (1 - product)
        v_corr = 1 - ops.pow(self.beta2, t)
        hyper = (self.beta1, self.beta2, self.eps, m_coef, g_coef, v_corr)
        return self._map(_nadam, hyper, lr, self._parameters, self.moments1, self.moments2, gradients)


class Adan(_Optimizer):
    """Adan as its authors implement it: history-weighted betas, bias correction, proximal decay
    (module docstring)."""

    def __init__(
        self, params, learning_rate=1e-3, beta1=0.98, beta2=0.92, beta3=0.99, eps=1e-8, weight_decay=0.0, loss_scale=1.0
    ):
        super().__init__(params, learning_rate, weight_decay, loss_scale)
        self.beta1 = _f32(_check("beta1", beta1, 0.0, 1.0, "[)"))
        self.beta2 = _f32(_check("beta2", beta2, 0.0, 1.0, "[)"))
        self.beta3 = _f32(_check("beta3", beta3, 0.0, 1.0, "[)"))
        self.eps = _f32(_check("eps", eps, 0.0, math.inf))
        self.moment1 = self._parameters.clone(prefix="moment1", init="zeros")
        self.moment2 = self._parameters.clone(prefix="moment2", init="zeros")
        self.moment3 = self._parameters.clone(prefix="moment3", init="zeros")
        self.prev_gradient = self._parameters.clone(prefix="prev_gradient", init="zeros")

    @ms.jit
    def construct(self, gradients):
        gradients, lr, t = self._begin(gradients)
        not_first = ops.cast(t > 1, ms.float32)
        corr1 = 1 - ops.pow(self.beta1, t)
        corr2 = 1 - ops.pow(self.beta2, t)
        sqrt_corr3 = ops.sqrt(1 - ops.pow(self.beta3, t))
        hyper = (self.beta1, self.beta2, self.beta3, self.eps, not_first, corr1, corr2, sqrt_corr3)
        state = (self._parameters, self.moment1, self.moment2, self.moment3, self.prev_gradient, gradients)
        return self._map(_adan, hyper, lr, *state)


class Lamb(_Optimizer):
    """LAMB with ``nn.Lamb``'s rule and defaults, built from elementary ops (module docstring)."""

    def __init__(self, params, learning_rate, beta1=0.9, beta2=0.999, eps=1e-6, weight_decay=0.0):
        super().__init__(params, learning_rate, weight_decay, 1.0)
        self.beta1 = _f32(_check("beta1", beta1, 0.0, 1.0))
        self.beta2 = _f32(_check("beta2", beta2, 0.0, 1.0))
        self.eps = _f32(_check("eps", eps, 0.0, math.inf))
        self.moments1 = self._parameters.clone(prefix="lamb_m", init="zeros")
        self.moments2 = self._parameters.clone(prefix="lamb_v", init="zeros")

    @ms.jit
    def construct(self, gradients):
        gradients, lr, t = self._begin(gradients)
        hyper = (self.beta1, self.beta2, self.eps, 1 - ops.pow(self.beta1, t), 1 - ops.pow(self.beta2, t))
        return self._map(_lamb, hyper, lr, self._parameters, self.moments1, self.moments2, gradients)
