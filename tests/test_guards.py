"""Finite-training checks on a real tiny BERT trained by the real ``transformers.Trainer``: a huge
learning rate and a poisoned loss stop at the step they go non-finite; a normal run is untouched."""

from __future__ import annotations

import math
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, Trainer, TrainerState, TrainingArguments

from compress.errors import CompressError
from compress.guards import (
    FP16_OVERFLOW_STEPS,
    FiniteGuard,
    NonFiniteError,
    check_finite_state,
    check_gradients,
    fidelity_collapse,
)

VOCAB = 50


def tiny_mlm() -> BertForMaskedLM:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, max_position_embeddings=16
    )
    return BertForMaskedLM(config)


def token_rows(count: int = 64, length: int = 8) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(count):
        ids = torch.randint(0, VOCAB, (length,), generator=generator)
        rows.append({"input_ids": ids, "attention_mask": torch.ones(length, dtype=torch.long), "labels": ids.clone()})
    return rows


def trainer(tmp_path: Path, model: BertForMaskedLM, guard: FiniteGuard, lr: float, steps: int, cls: type[Trainer] = Trainer) -> Trainer:
    args = TrainingArguments(
        output_dir=str(tmp_path / "run"),
        max_steps=steps,
        learning_rate=lr,
        per_device_train_batch_size=4,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
    )
    return cls(model=model, args=args, train_dataset=token_rows(), callbacks=[guard])


def poisoned_at(step: int, guard: FiniteGuard | None) -> type[Trainer]:
    """A Trainer whose loss turns NaN at ``step``; it hands each loss to ``guard.check_loss`` if given."""

    class Poisoned(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = super().compute_loss(model, inputs, num_items_in_batch=num_items_in_batch)
            if self.state.global_step + 1 == step:
                loss = loss * float("nan")
            if guard is not None and model.training:
                guard.check_loss(loss)
            return loss

    return Poisoned


def test_a_huge_learning_rate_stops_at_the_first_non_finite_step(tmp_path: Path) -> None:
    guard = FiniteGuard("prune", "train.lr")
    run = trainer(tmp_path, tiny_mlm(), guard, lr=1e30, steps=6)
    with pytest.raises(NonFiniteError) as err:
        run.train()
    message = str(err.value)
    assert "\n" not in message and isinstance(err.value, CompressError)
    assert "stage prune at step 2" in message and "gradient norm nan" in message
    assert "lower train.lr (now 1e+30), e.g. to 1e+29," in message
    assert (err.value.stage, err.value.step) == ("prune", 2) and err.value.learning_rate == pytest.approx(1e30 * 5 / 6)
    assert guard.failure is err.value
    # step 1 was finite and logged; step 2's NaN gradients were never applied
    assert run.state.global_step == 1 and [log["step"] for log in run.state.log_history] == [1]


def test_a_nan_loss_is_caught_at_its_step_before_backward(tmp_path: Path) -> None:
    guard = FiniteGuard("finetune", "finetune.lr")
    model = tiny_mlm()
    run = trainer(tmp_path, model, guard, lr=1e-3, steps=6, cls=poisoned_at(3, guard))
    with pytest.raises(NonFiniteError, match=r"stage finetune at step 3 \(loss nan; learning rate .*\): lower finetune\.lr \(now 0\.001\)"):
        run.train()
    assert run.state.global_step == 2
    check_finite_state(model)  # the weights are those after step 2


def test_nan_gradients_are_caught_even_when_the_logged_loss_hides_them(tmp_path: Path) -> None:
    """Without check_loss the Trainer's NaN filter would log a finite loss; the gradient check still stops step 3."""
    guard = FiniteGuard("prune", "train.lr")
    model = tiny_mlm()
    run = trainer(tmp_path, model, guard, lr=1e-3, steps=6, cls=poisoned_at(3, None))
    with pytest.raises(NonFiniteError, match=r"stage prune at step 3 \(gradient norm nan"):
        run.train()
    assert all(math.isfinite(log["loss"]) for log in run.state.log_history)
    check_finite_state(model)


def test_a_normal_run_is_untouched(tmp_path: Path) -> None:
    guard = FiniteGuard("prune", "train.lr")
    model = tiny_mlm()
    run = trainer(tmp_path, model, guard, lr=1e-3, steps=4, cls=poisoned_at(0, guard))  # never poisons; checks every loss
    run.train()
    assert guard.failure is None and run.state.global_step == 4
    logs = [log for log in run.state.log_history if "loss" in log and "grad_norm" in log]
    assert len(logs) == 4 and all(math.isfinite(log["loss"]) and math.isfinite(log["grad_norm"]) for log in logs)
    check_finite_state(model)


def test_a_non_finite_logged_value_stops_training(tmp_path: Path) -> None:
    guard = FiniteGuard("prune", "train.lr")
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", learning_rate=2e-4)
    state = TrainerState(global_step=7)
    guard.on_log(args, state, None, logs={"loss": 1.0, "grad_norm": 2.0, "learning_rate": 1e-4})
    expected = "at step 7 (logged distill_loss inf; learning rate 0.0001 at that step): lower train.lr (now 0.0002)"
    with pytest.raises(NonFiniteError, match=re.escape(expected)):
        guard.on_log(args, state, None, logs={"loss": 1.0, "distill_loss": float("inf"), "learning_rate": 1e-4})


def test_fp16_overflows_are_left_to_the_loss_scaler_until_they_persist() -> None:
    guard = FiniteGuard("prune", "train.lr")
    args, state = SimpleNamespace(fp16=True, learning_rate=1e-3), TrainerState(global_step=0)
    model = torch.nn.Linear(2, 2)

    def step(grad: float) -> None:
        for p in model.parameters():
            p.grad = torch.full_like(p, grad)
        guard.on_pre_optimizer_step(args, state, None, model=model)

    for _ in range(FP16_OVERFLOW_STEPS - 1):
        step(float("inf"))
    step(1.0)  # a finite step resets the count
    for _ in range(FP16_OVERFLOW_STEPS - 1):
        step(float("inf"))
    with pytest.raises(NonFiniteError, match="gradient norm inf"):
        step(float("inf"))


def test_check_gradients_returns_the_norm_or_names_the_parameters() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    assert check_gradients(model) == 0.0  # no gradients yet
    model(torch.ones(4, 3)).sum().backward()
    expected = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in model.parameters()])).item()
    assert check_gradients(model) == pytest.approx(expected)
    model[1].weight.grad[0, 0] = float("inf")
    with pytest.raises(NonFiniteError, match=r"gradient norm inf: non-finite gradients in 1 of 4 parameters \(1\.weight\)"):
        check_gradients(model)


def test_check_finite_state_names_the_first_non_finite_tensors() -> None:
    model = tiny_mlm()
    check_finite_state(model)
    state = dict(model.state_dict())
    names = [name for name, t in state.items() if t.is_floating_point()]
    state[names[0]] = state[names[0]].clone().fill_(float("nan"))
    expected = f"in 1 of {len(names)} tensors ({names[0]}); no weights were written: lower train.lr"
    with pytest.raises(NonFiniteError, match=re.escape(expected)):
        check_finite_state(state, fix="lower train.lr")
    for name in names[1:5]:
        state[name] = state[name].clone()
        state[name].view(-1)[0] = float("-inf")
    with pytest.raises(NonFiniteError, match=re.escape(f"in 5 of {len(names)} tensors ({', '.join(names[:3])}, ...)")):
        check_finite_state(state)
    check_finite_state({"position_ids": torch.arange(4), "w": torch.zeros(2)})  # integer tensors are skipped


@pytest.mark.parametrize(
    ("previous", "current", "warns"),
    [
        (0.9, 0.8, False),
        (0.9, 0.45, False),  # exactly half is not a collapse
        (0.9, 0.4, True),
        (0.9, -0.1, True),
        (-0.2, -0.15, False),  # a negative correlation before: nothing to halve
        (0.9, math.nan, True),
        (math.inf, 0.5, True),
    ],
)
def test_fidelity_collapse(previous: float, current: float, warns: bool) -> None:
    warning = fidelity_collapse(previous, current)
    assert (warning is not None) == warns
    if warns:
        assert "finetune" in warning and "lower finetune.lr" in warning and "\n" not in warning
    assert "train.lr" in (fidelity_collapse(0.8, 0.1, stage="prune", lr_key="train.lr") or "")
