"""Distillation losses: exact values, padding, identity projections, folding, and real BERT outputs."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, BertModel
from transformers.modeling_outputs import MaskedLMOutput

from compress.distill import (
    DistillationLoss,
    HiddenStateDistillation,
    attention_relation_loss,
    logits_kl,
)
from compress.objective import with_layer_map
from compress.recipe import load_recipe
from conftest import tiny_bert_config

TEACHER_WIDTH = 8
KEPT = torch.tensor([0, 2, 3, 6, 7])


def padded_mask(batch: int = 2, seq: int = 5) -> torch.Tensor:
    """All ones except the last two positions of the last row."""
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[-1, -2:] = 0
    return mask


def hidden_states(layers: int, width: int, seed: int, batch: int = 2, seq: int = 5) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(batch, seq, width, generator=generator) for _ in range(layers + 1))


def qkv(width: int, seed: int, batch: int = 2, seq: int = 6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(batch, seq, width, generator=generator) for _ in range(3))


def gated(states: tuple[torch.Tensor, ...], kept: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """States of a gated student: hidden units outside ``kept`` exactly zero."""
    keep = torch.zeros(states[0].shape[-1])
    keep[kept] = 1.0
    return tuple(s * keep for s in states)


def randomise_projections(module: HiddenStateDistillation, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for projection in module.projections:
            projection.weight.add_(0.3 * torch.randn(projection.weight.shape, generator=generator))
            projection.bias.copy_(0.1 * torch.randn(projection.bias.shape, generator=generator))


# ---------------------------------------------------------------- hidden-state distillation


def test_projections_start_as_identity_for_equal_widths():
    module = HiddenStateDistillation([(0, 0), (1, 2)], TEACHER_WIDTH, TEACHER_WIDTH, l1=1.0)
    assert len(module.projections) == 2
    for projection in module.projections:
        assert torch.equal(projection.weight, torch.eye(TEACHER_WIDTH))
        assert torch.equal(projection.bias, torch.zeros(TEACHER_WIDTH))


def test_projections_start_as_identity_columns_of_kept_units():
    module = HiddenStateDistillation([(1, 1)], len(KEPT), TEACHER_WIDTH, cos=1.0, kept=KEPT)
    weight = module.projections[0].weight
    assert weight.shape == (TEACHER_WIDTH, len(KEPT))
    assert torch.equal(weight, torch.eye(TEACHER_WIDTH)[:, KEPT])
    student_unit = torch.zeros(len(KEPT))
    student_unit[1] = 1.0
    assert module.projections[0](student_unit).nonzero().flatten().tolist() == [KEPT[1].item()]


def test_hidden_loss_is_zero_for_identical_states():
    states = hidden_states(2, TEACHER_WIDTH, seed=0)
    module = HiddenStateDistillation([(0, 0), (2, 2)], TEACHER_WIDTH, TEACHER_WIDTH, l1=1.0, cos=2.0, mse=3.0)
    parts = module(states, states, padded_mask())
    assert set(parts) == {"hidden_l1", "hidden_cos", "hidden_mse", "distill_hidden"}
    for value in parts.values():
        assert abs(value.item()) < 1e-6


def test_hidden_loss_is_zero_for_a_narrow_student_of_the_kept_units():
    teacher = gated(hidden_states(1, TEACHER_WIDTH, seed=1), KEPT)
    student = tuple(s[..., KEPT] for s in teacher)
    module = HiddenStateDistillation([(0, 0), (1, 1)], len(KEPT), TEACHER_WIDTH, l1=1.0, cos=1.0, mse=1.0, kept=KEPT)
    for value in module(student, teacher).values():
        assert abs(value.item()) < 1e-6


def test_hidden_terms_match_explicit_formulas():
    student = torch.tensor([[[1.0, 2.0], [0.0, 1.0], [5.0, 5.0]]])
    teacher = torch.tensor([[[2.0, 0.0], [1.0, 1.0], [-9.0, 9.0]]])
    mask = torch.tensor([[1, 1, 0]])
    module = HiddenStateDistillation([(0, 0)], 2, 2, l1=0.5, cos=2.0, mse=3.0)
    parts = module((student,), (teacher,), mask)
    # token 0: diff (-1, 2); token 1: diff (-1, 0); token 2 is padding.
    l1 = ((1 + 2) / 2 + (1 + 0) / 2) / 2
    mse = ((1 + 4) / 2 + (1 + 0) / 2) / 2
    cos0 = (1 * 2 + 2 * 0) / (math.sqrt(5) * 2)
    cos1 = (0 * 1 + 1 * 1) / (1 * math.sqrt(2))
    cos = ((1 - cos0) + (1 - cos1)) / 2
    assert parts["hidden_l1"].item() == pytest.approx(l1, abs=1e-6)
    assert parts["hidden_mse"].item() == pytest.approx(mse, abs=1e-6)
    assert parts["hidden_cos"].item() == pytest.approx(cos, abs=1e-6)
    assert parts["distill_hidden"].item() == pytest.approx(0.5 * l1 + 2.0 * cos + 3.0 * mse, abs=1e-5)


def test_hidden_terms_average_over_pairs_and_only_report_enabled_terms():
    student = hidden_states(2, 4, seed=2)
    teacher = hidden_states(2, 4, seed=3)
    both = HiddenStateDistillation([(1, 1), (2, 0)], 4, 4, mse=1.0)
    first = HiddenStateDistillation([(1, 1)], 4, 4, mse=1.0)
    second = HiddenStateDistillation([(2, 0)], 4, 4, mse=1.0)
    parts = both(student, teacher)
    assert set(parts) == {"hidden_mse", "distill_hidden"}
    expected = (first(student, teacher)["hidden_mse"] + second(student, teacher)["hidden_mse"]) / 2
    assert parts["hidden_mse"].item() == pytest.approx(expected.item(), abs=1e-6)
    assert parts["hidden_mse"].item() == pytest.approx(((student[1] - teacher[1]).pow(2).mean().item()
                                                        + (student[2] - teacher[0]).pow(2).mean().item()) / 2)


def test_hidden_loss_ignores_padded_positions():
    mask = padded_mask()
    student = hidden_states(1, TEACHER_WIDTH, seed=4)
    teacher = hidden_states(1, TEACHER_WIDTH, seed=5)
    module = HiddenStateDistillation([(0, 0), (1, 1)], TEACHER_WIDTH, TEACHER_WIDTH, l1=1.0, cos=1.0, mse=1.0)
    before = module(student, teacher, mask)
    padding = (mask == 0)[..., None]
    changed_student = tuple(s.masked_fill(padding, 123.0) for s in student)
    changed_teacher = tuple(t.masked_fill(padding, -7.0) for t in teacher)
    after = module(changed_student, changed_teacher, mask)
    for name in before:
        assert after[name].item() == pytest.approx(before[name].item(), abs=1e-6)
    assert module(changed_student, changed_teacher)["hidden_l1"] > before["hidden_l1"]


def test_fold_projections_gives_the_gated_students_loss():
    module = HiddenStateDistillation([(0, 0), (1, 2), (2, 2)], TEACHER_WIDTH, TEACHER_WIDTH, l1=1.0, cos=0.5, mse=2.0)
    randomise_projections(module, seed=6)
    gated_student = gated(hidden_states(2, TEACHER_WIDTH, seed=7), KEPT)
    folded_student = tuple(s[..., KEPT] for s in gated_student)
    teacher = hidden_states(2, TEACHER_WIDTH, seed=8)
    mask = padded_mask()

    folded = module.fold_projections(KEPT)

    assert folded.student_width == len(KEPT) and folded.layer_map == module.layer_map
    assert torch.equal(folded.kept, KEPT)
    for source, target in zip(module.projections, folded.projections):
        assert torch.equal(target.weight, source.weight[:, KEPT])
        assert torch.equal(target.bias, source.bias)
    expected = module(gated_student, teacher, mask)
    actual = folded(folded_student, teacher, mask)
    for name in expected:
        assert abs(actual[name].item() - expected[name].item()) <= 1e-6


def test_folding_twice_composes_kept_indices():
    module = HiddenStateDistillation([(1, 1)], TEACHER_WIDTH, TEACHER_WIDTH, mse=1.0)
    twice = module.fold_projections(KEPT).fold_projections(torch.tensor([1, 4]))
    assert torch.equal(twice.kept, KEPT[[1, 4]])
    assert torch.equal(twice.projections[0].weight, torch.eye(TEACHER_WIDTH)[:, KEPT[[1, 4]]])


def test_remap_layers_renames_student_indices_and_keeps_projections():
    module = HiddenStateDistillation([(0, 0), (2, 2), (4, 4)], 4, 4, l1=1.0)
    randomise_projections(module, seed=9)
    remapped = module.remap_layers({0: 0, 2: 1, 4: 2})
    assert remapped.layer_map == [(0, 0), (1, 2), (2, 4)]
    assert module.layer_map == [(0, 0), (2, 2), (4, 4)]
    for source, target in zip(module.projections, remapped.projections):
        assert torch.equal(source.weight, target.weight)
    student, teacher = hidden_states(4, 4, seed=10), hidden_states(4, 4, seed=11)
    short_student = (student[0], student[2], student[4])
    assert remapped(short_student, teacher)["hidden_l1"].item() == pytest.approx(
        module(student, teacher)["hidden_l1"].item(), abs=1e-6
    )
    with pytest.raises(ValueError, match=r"no entry for student hidden-state indices \[4\]"):
        module.remap_layers({0: 0, 2: 1})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(layer_map=[], student_width=4, teacher_width=4, l1=1.0), "layer map is empty"),
        (dict(layer_map=[(0, 1, 2)], student_width=4, teacher_width=4, l1=1.0), "not a .student, teacher. pair"),
        (dict(layer_map=[(0, 0)], student_width=4, teacher_width=4), "l1, cos or mse > 0"),
        (dict(layer_map=[(0, 0)], student_width=4, teacher_width=4, cos=-1.0), "cos must be a finite number >= 0"),
        (dict(layer_map=[(0, 0)], student_width=3, teacher_width=4, l1=1.0), "needs kept"),
        (dict(layer_map=[(0, 0)], student_width=5, teacher_width=4, l1=1.0), "exceeds teacher_width"),
        (dict(layer_map=[(0, 0)], student_width=2, teacher_width=4, l1=1.0, kept=torch.tensor([0, 1, 2])),
         "kept has 3 entries but student_width is 2"),
        (dict(layer_map=[(0, 0)], student_width=2, teacher_width=4, l1=1.0, kept=torch.tensor([1, 4])),
         r"outside \[0, 4\)"),
        (dict(layer_map=[(0, 0)], student_width=2, teacher_width=4, l1=1.0, kept=torch.tensor([2, 1])),
         "strictly increasing"),
    ],
)
def test_hidden_distillation_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        HiddenStateDistillation(**kwargs)


def test_hidden_distillation_names_an_out_of_range_pair():
    module = HiddenStateDistillation([(0, 0), (3, 1)], 4, 4, l1=1.0)
    with pytest.raises(ValueError, match=r"layer pair \[3, 1\]: student index 3 .* has 3 hidden states"):
        module(hidden_states(2, 4, seed=0), hidden_states(2, 4, seed=1))
    module = HiddenStateDistillation([(1, 5)], 4, 4, l1=1.0)
    with pytest.raises(ValueError, match=r"layer pair \[1, 5\]: teacher index 5 .* has 3 hidden states"):
        module(hidden_states(2, 4, seed=0), hidden_states(2, 4, seed=1))


def test_hidden_distillation_rejects_wrong_width_and_mask():
    module = HiddenStateDistillation([(0, 0)], 4, 4, l1=1.0)
    with pytest.raises(ValueError, match="student hidden state has width 3 but this loss was built for 4"):
        module(hidden_states(0, 3, seed=0), hidden_states(0, 4, seed=1))
    with pytest.raises(ValueError, match="does not match the token positions"):
        module(hidden_states(0, 4, seed=0), hidden_states(0, 4, seed=1), torch.ones(2, 4))
    with pytest.raises(ValueError, match="selects no token positions"):
        module(hidden_states(0, 4, seed=0), hidden_states(0, 4, seed=1), torch.zeros(2, 5))
    with pytest.raises(ValueError, match="strictly increasing"):
        module.fold_projections(torch.tensor([1, 1]))


# ---------------------------------------------------------------- logits KL


def explicit_kl(student: list[float], teacher: list[float], temperature: float) -> float:
    def softmax(logits: list[float]) -> list[float]:
        exps = [math.exp(x / temperature) for x in logits]
        return [e / sum(exps) for e in exps]

    p, q = softmax(teacher), softmax(student)
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q)) * temperature**2


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_logits_kl_matches_the_explicit_formula(temperature):
    student = [[0.5, -1.0, 2.0], [1.0, 1.0, 0.0]]
    teacher = [[1.5, 0.0, -0.5], [0.0, 3.0, 1.0]]
    expected = sum(explicit_kl(s, t, temperature) for s, t in zip(student, teacher)) / 2
    actual = logits_kl(torch.tensor(student), torch.tensor(teacher), temperature)
    assert actual.item() == pytest.approx(expected, rel=1e-5)


def test_logits_kl_is_zero_for_equal_logits_and_positive_otherwise():
    logits = torch.randn(3, 4, 10, generator=torch.Generator().manual_seed(0))
    assert abs(logits_kl(logits, logits.clone(), 2.0).item()) < 1e-6
    assert logits_kl(logits + torch.linspace(0, 1, 10), logits, 2.0) > 0


def test_logits_kl_mask_selects_positions():
    generator = torch.Generator().manual_seed(1)
    student, teacher = torch.randn(2, 5, 7, generator=generator), torch.randn(2, 5, 7, generator=generator)
    mask = padded_mask()
    selected = mask.bool()
    expected = logits_kl(student[selected], teacher[selected], 3.0)
    assert logits_kl(student, teacher, 3.0, mask).item() == pytest.approx(expected.item(), rel=1e-6)
    changed = student.masked_fill(~selected[..., None], 50.0)
    assert logits_kl(changed, teacher, 3.0, mask).item() == pytest.approx(expected.item(), rel=1e-6)


def test_logits_kl_rejects_bad_input():
    logits = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        logits_kl(logits, logits, 0.0)
    with pytest.raises(ValueError, match="differ in shape"):
        logits_kl(logits, torch.zeros(2, 4))


# ---------------------------------------------------------------- attention relations


def explicit_relation_kl(student: torch.Tensor, teacher: torch.Tensor, heads: int) -> float:
    """Loop-by-loop KL(R_teacher || R_student) for one of Q/K/V, averaged over heads and queries."""
    total, count = 0.0, 0
    for b in range(student.shape[0]):
        for h in range(heads):
            relations = []
            for states in (teacher, student):
                # a width that heads does not divide: the first (width % heads) heads are one unit wider
                base, extra = divmod(states.shape[-1], heads)
                start = h * base + min(h, extra)
                d = base + (h < extra)
                x = states[b, :, start:start + d].double()
                relations.append(torch.softmax(x @ x.T / math.sqrt(d), dim=-1))
            r_t, r_s = relations
            for i in range(student.shape[1]):
                total += (r_t[i] * (r_t[i].log() - r_s[i].log())).sum().item()
                count += 1
    return total / count


def test_attention_relation_matches_an_explicit_computation_with_different_widths():
    student, teacher = qkv(12, seed=0), qkv(18, seed=1)
    expected = sum(explicit_relation_kl(s, t, 3) for s, t in zip(student, teacher)) / 3
    assert attention_relation_loss(student, teacher, 3).item() == pytest.approx(expected, rel=1e-5)


def test_attention_relation_splits_a_width_that_the_relation_heads_do_not_divide():
    # a pruned student keeps 10 of the teacher's 12 heads of 32 (width 320): 12 relation heads still apply
    student, teacher = qkv(10, seed=10), qkv(12, seed=11)
    expected = sum(explicit_relation_kl(s, t, 3) for s, t in zip(student, teacher)) / 3
    assert attention_relation_loss(student, teacher, 3).item() == pytest.approx(expected, rel=1e-5)
    mask = padded_mask(2, 6)
    assert attention_relation_loss(qkv(320, seed=12), qkv(384, seed=13), 12, mask).item() > 0


def test_attention_relation_is_zero_for_identical_inputs():
    states = qkv(24, seed=2)
    assert abs(attention_relation_loss(states, states, 4, padded_mask(2, 6)).item()) < 1e-6


def test_attention_relation_is_zero_when_relations_match_across_widths():
    # teacher heads of width 48 whose last 16 dims are zero, student heads of width 32 holding the rest
    # rescaled so that X X^T / sqrt(d) agrees: the relations are equal although widths differ.
    heads, seq = 8, 6
    student = qkv(256, seed=3, seq=seq)
    teacher = []
    for x in student:
        per_head = x.reshape(2, seq, heads, 32) * (48 / 32) ** 0.25
        teacher.append(torch.cat([per_head, torch.zeros(2, seq, heads, 16)], dim=-1).reshape(2, seq, 384))
    assert abs(attention_relation_loss(student, tuple(teacher), heads).item()) < 1e-5


def test_attention_relation_decreases_as_the_student_approaches_the_teacher():
    teacher = qkv(16, seed=4)
    noise = qkv(16, seed=5)
    losses = [
        attention_relation_loss(tuple(t + scale * n for t, n in zip(teacher, noise)), teacher, 4).item()
        for scale in (2.0, 1.0, 0.5, 0.1)
    ]
    assert all(loss > 0 for loss in losses)
    assert losses == sorted(losses, reverse=True)


def test_attention_relation_ignores_padding():
    mask = padded_mask(2, 6)
    student, teacher = qkv(384, seed=6), qkv(256, seed=7)
    before = attention_relation_loss(student, teacher, 8, mask)
    padding = (mask == 0)[..., None]
    changed_student = tuple(x.masked_fill(padding, 9.0) for x in student)
    changed_teacher = tuple(x.masked_fill(padding, -3.0) for x in teacher)
    after = attention_relation_loss(changed_student, changed_teacher, 8, mask)
    assert after.item() == pytest.approx(before.item(), abs=1e-6)
    assert attention_relation_loss(changed_student, changed_teacher, 8).item() != pytest.approx(before.item())


def test_attention_relation_gradient_reaches_every_student_tensor():
    student = tuple(x.requires_grad_() for x in qkv(384, seed=8))
    attention_relation_loss(student, qkv(256, seed=9), 8, padded_mask(2, 6)).backward()
    for x in student:
        assert x.grad is not None and x.grad.abs().sum() > 0
        assert torch.all(x.grad[1, -2:] == 0)


def test_attention_relation_rejects_bad_input():
    with pytest.raises(ValueError, match="width 2 is narrower than relation_heads 3"):
        attention_relation_loss(qkv(2, seed=14), qkv(12, seed=15), 3)
    with pytest.raises(ValueError, match=r"\(query, key, value\) tuple"):
        attention_relation_loss(qkv(32, seed=0)[:2], qkv(32, seed=1), 8)
    with pytest.raises(ValueError, match="differ in batch or sequence length"):
        attention_relation_loss(qkv(32, seed=0, seq=6), qkv(32, seed=1, seq=5), 8)
    with pytest.raises(ValueError, match="relation_heads must be an integer > 0"):
        attention_relation_loss(qkv(32, seed=0), qkv(32, seed=1), 0)


# ---------------------------------------------------------------- combined loss


FULL_CONFIG = {
    "layers": [[0, 0], [1, 1], [2, 2]],
    "hidden_l1": 1.0,
    "hidden_cos": 1.0,
    "hidden_mse": 0.5,
    "logits_kl": 2.0,
    "temperature": 2.0,
    "attention_relation": 1.0,
    "relation_heads": 4,
}


def test_optimising_a_student_reduces_the_combined_loss():
    torch.manual_seed(0)
    mask = padded_mask(2, 6)
    teacher_out = MaskedLMOutput(logits=torch.randn(2, 6, 11), hidden_states=hidden_states(2, 16, seed=10, seq=6))
    teacher_qkv = [qkv(16, seed=11), qkv(16, seed=12)]
    student_hidden = [torch.randn(2, 6, 16, requires_grad=True) for _ in range(3)]
    student_logits = torch.randn(2, 6, 11, requires_grad=True)
    student_qkv = [tuple(torch.randn(2, 6, 16, requires_grad=True) for _ in range(3)) for _ in range(2)]
    loss_fn = DistillationLoss(FULL_CONFIG, 16, 16)
    learnable = [*student_hidden, student_logits, *(x for layer in student_qkv for x in layer)]
    optimiser = torch.optim.Adam([*learnable, *loss_fn.parameters()], lr=0.05)

    losses = []
    for _ in range(30):
        student_out = MaskedLMOutput(logits=student_logits, hidden_states=tuple(student_hidden))
        parts = loss_fn(student_out, teacher_out, mask, student_qkv, teacher_qkv)
        optimiser.zero_grad()
        parts["loss"].backward()
        optimiser.step()
        losses.append(parts["loss"].item())
    assert losses[-1] < 0.5 * losses[0]


def test_combined_loss_is_the_weighted_sum_of_its_parts():
    mask = padded_mask(2, 6)
    student_out = MaskedLMOutput(
        loss=torch.tensor(0.75), logits=torch.randn(2, 6, 11), hidden_states=hidden_states(2, 16, seed=13, seq=6)
    )
    teacher_out = MaskedLMOutput(logits=torch.randn(2, 6, 11), hidden_states=hidden_states(2, 16, seed=14, seq=6))
    student_qkv, teacher_qkv = [qkv(16, seed=15)], [qkv(16, seed=16)]
    loss_fn = DistillationLoss({**FULL_CONFIG, "task": 3.0}, 16, 16)
    parts = loss_fn(student_out, teacher_out, mask, student_qkv, teacher_qkv)
    assert set(parts) == {
        "hidden_l1", "hidden_cos", "hidden_mse", "distill_hidden", "logits_kl", "attention_relation", "task", "loss"
    }
    assert parts["distill_hidden"].item() == pytest.approx(
        parts["hidden_l1"].item() + parts["hidden_cos"].item() + 0.5 * parts["hidden_mse"].item(), rel=1e-6
    )
    assert parts["logits_kl"].item() == pytest.approx(
        logits_kl(student_out.logits, teacher_out.logits, 2.0, mask).item(), rel=1e-6
    )
    assert parts["attention_relation"].item() == pytest.approx(
        attention_relation_loss(student_qkv[0], teacher_qkv[0], 4, mask).item(), rel=1e-6
    )
    expected = (parts["distill_hidden"] + 2.0 * parts["logits_kl"] + parts["attention_relation"] + 3.0 * 0.75).item()
    assert parts["loss"].item() == pytest.approx(expected, rel=1e-6)


def test_combined_fold_matches_the_gated_student():
    config = {"layers": [[1, 1], [2, 2]], "hidden_l1": 1.0, "hidden_cos": 1.0, "logits_kl": 1.0}
    loss_fn = DistillationLoss(config, TEACHER_WIDTH, TEACHER_WIDTH)
    randomise_projections(loss_fn.hidden, seed=17)
    logits = torch.randn(2, 5, 6)
    gated_student = gated(hidden_states(2, TEACHER_WIDTH, seed=18), KEPT)
    teacher_out = MaskedLMOutput(logits=torch.randn(2, 5, 6), hidden_states=hidden_states(2, TEACHER_WIDTH, seed=19))
    mask = padded_mask()
    expected = loss_fn(MaskedLMOutput(logits=logits, hidden_states=gated_student), teacher_out, mask)

    folded = loss_fn.fold(KEPT)

    folded_student = MaskedLMOutput(logits=logits, hidden_states=tuple(s[..., KEPT] for s in gated_student))
    actual = folded(folded_student, teacher_out, mask)
    assert folded.hidden.student_width == len(KEPT)
    for name in expected:
        assert abs(actual[name].item() - expected[name].item()) <= 1e-6


def test_combined_remap_layers_follows_removed_layers():
    loss_fn = DistillationLoss({"layers": [[0, 0], [2, 2]], "hidden_mse": 1.0}, 4, 4)
    remapped = loss_fn.remap_layers({0: 0, 2: 1})
    assert remapped.hidden.layer_map == [(0, 0), (1, 2)]
    assert remapped.config["layers"] == [(0, 0), (1, 2)]


def test_distillation_loss_reads_a_recipe_distill_section():
    recipe = load_recipe("bert-l0")
    with pytest.raises(ValueError, match="with_layer_map"):
        DistillationLoss(recipe.distill, 384, 384)  # 'auto' needs the teacher's depth first
    distill = with_layer_map(recipe, 6).distill
    assert distill["layers"] == [[0, 0], [2, 2], [4, 4], [6, 6]]
    loss_fn = DistillationLoss(distill, 384, 384)
    assert loss_fn.hidden.layer_map == [tuple(p) for p in distill["layers"]]
    assert loss_fn.term_weights["hidden_l1"] == distill["hidden_l1"]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"layers": [[0, 0]], "hiden_l1": 1.0}, r"unknown keys \['hiden_l1'\]"),
        ({"layers": [[0, 0]]}, "enables no loss term"),
        ({"hidden_l1": 1.0}, "distill.layers is empty"),
        ({"logits_kl": -1.0}, "distill.logits_kl must be a finite number >= 0"),
        ({"logits_kl": 1.0, "temperature": 0}, "distill.temperature must be a finite number > 0"),
        ({"attention_relation": 1.0, "relation_heads": 2.5}, "distill.relation_heads must be an integer > 0"),
        ({"layers": [[0, -1]], "hidden_cos": 1.0}, "not a .student, teacher. pair"),
        ([("hidden_l1", 1.0)], "must be a mapping"),
    ],
)
def test_distillation_loss_rejects_bad_config(config, message):
    with pytest.raises(ValueError, match=message):
        DistillationLoss(config, 4, 4)


# ---------------------------------------------------------------- real transformers models


def tiny_config() -> BertConfig:
    """A 2-layer BERT without dropout, so teacher and student copies compute the same thing."""
    return tiny_bert_config(
        vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
        max_position_embeddings=16, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )


@pytest.fixture(scope="module")
def bert_pair() -> tuple[BertForMaskedLM, BertForMaskedLM]:
    torch.manual_seed(0)
    teacher = BertForMaskedLM(tiny_config()).eval()
    return teacher, copy.deepcopy(teacher)


@pytest.fixture()
def batch() -> dict[str, torch.Tensor]:
    input_ids = torch.randint(1, 50, (2, 7), generator=torch.Generator().manual_seed(0))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 5:] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def capture_qkv(model: BertForMaskedLM, batch: dict[str, torch.Tensor]) -> tuple[object, list[tuple]]:
    """Run ``model`` with hidden states and record each layer's query, key and value projections."""
    captured: dict[tuple[int, str], torch.Tensor] = {}
    handles = []
    for index, layer in enumerate(model.bert.encoder.layer):
        for name in ("query", "key", "value"):
            hook = lambda _m, _i, out, key=(index, name): captured.__setitem__(key, out)  # noqa: E731
            handles.append(getattr(layer.attention.self, name).register_forward_hook(hook))
    try:
        out = model(**batch, output_hidden_states=True)
    finally:
        for handle in handles:
            handle.remove()
    layers = len(model.bert.encoder.layer)
    return out, [tuple(captured[(i, n)] for n in ("query", "key", "value")) for i in range(layers)]


BERT_CONFIG = {
    "layers": [[0, 0], [1, 1], [2, 2]],
    "hidden_l1": 1.0,
    "hidden_cos": 1.0,
    "hidden_mse": 1.0,
    "logits_kl": 1.0,
    "temperature": 2.0,
    "attention_relation": 1.0,
    "relation_heads": 4,
}


def test_identical_bert_student_has_zero_distillation_loss(bert_pair, batch):
    teacher, student = bert_pair
    loss_fn = DistillationLoss(BERT_CONFIG, 32, 32)
    with torch.no_grad():
        teacher_out, teacher_qkv = capture_qkv(teacher, batch)
    student_out, student_qkv = capture_qkv(student, batch)
    parts = loss_fn(student_out, teacher_out, batch["attention_mask"], student_qkv, teacher_qkv)
    assert {"distill_hidden", "logits_kl", "attention_relation", "loss"} <= set(parts)
    for name, value in parts.items():
        assert abs(value.item()) < 1e-5, name


def test_perturbed_bert_student_has_positive_loss_and_gradients(bert_pair, batch):
    teacher, student = bert_pair
    student = copy.deepcopy(student)
    with torch.no_grad():
        for parameter in student.bert.encoder.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    loss_fn = DistillationLoss({**BERT_CONFIG, "task": 1.0}, 32, 32)
    with torch.no_grad():
        teacher_out, teacher_qkv = capture_qkv(teacher, batch)
    student_out, student_qkv = capture_qkv(student, {**batch, "labels": batch["input_ids"]})
    parts = loss_fn(student_out, teacher_out, batch["attention_mask"], student_qkv, teacher_qkv)
    for name in ("distill_hidden", "logits_kl", "attention_relation", "task"):
        assert parts[name] > 0, name
    parts["loss"].backward()
    query = student.bert.encoder.layer[0].attention.self.query.weight
    assert query.grad is not None and query.grad.abs().sum() > 0
    assert all(p.grad is not None for p in loss_fn.parameters())


def test_bert_outputs_missing_pieces_raise_clear_errors(bert_pair, batch):
    teacher, student = bert_pair
    with torch.no_grad():
        with_states = teacher(**batch, output_hidden_states=True)
        without_states = teacher(**batch)
        base_out = BertModel(tiny_config())(**batch, output_hidden_states=True)
    hidden = DistillationLoss({"layers": [[1, 1]], "hidden_l1": 1.0}, 32, 32)
    with pytest.raises(ValueError, match="student output has no hidden_states.*output_hidden_states=True"):
        hidden(without_states, with_states, batch["attention_mask"])
    with pytest.raises(ValueError, match="teacher output has no hidden_states.*output_hidden_states=True"):
        hidden(with_states, without_states, batch["attention_mask"])
    with pytest.raises(ValueError, match=r"layer pair \[5, 5\]: student index 5 .* has 3 hidden states"):
        DistillationLoss({"layers": [[5, 5]], "hidden_l1": 1.0}, 32, 32)(with_states, with_states)
    with pytest.raises(ValueError, match="no logits"):
        DistillationLoss({"logits_kl": 1.0}, 32, 32)(base_out, base_out)
    with pytest.raises(ValueError, match="student output has no loss; pass labels"):
        DistillationLoss({"task": 1.0}, 32, 32)(with_states, with_states)
    with pytest.raises(ValueError, match="needs student_qkv and teacher_qkv"):
        DistillationLoss({"attention_relation": 1.0, "relation_heads": 4}, 32, 32)(with_states, with_states)
    _, qkv_layers = capture_qkv(student, batch)
    with pytest.raises(ValueError, match="student_qkv has 2 layers but teacher_qkv has 1"):
        DistillationLoss({"attention_relation": 1.0, "relation_heads": 4}, 32, 32)(
            with_states, with_states, student_qkv=qkv_layers, teacher_qkv=qkv_layers[:1]
        )
