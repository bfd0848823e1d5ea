"""Distillation losses for pruning and folding: hidden states, pooled embeddings, logits, attention relations, task.

The student during pruning is a gated copy of the teacher (same widths, pruned hidden units exactly
zero); after folding it is a smaller dense model that keeps a subset ``kept`` of the teacher's hidden
units. ``HiddenStateDistillation`` maps student hidden states to the teacher's width with learned
projections that start as the identity on the kept units, and ``fold_projections`` slices them so the
folded student sees the same loss as the gated one; ``PooledDistillation`` does the same for the
sentence embedding (the teacher's pooling of the last hidden state). ``DistillationLoss`` combines
every term from the recipe's ``distill`` section.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.utils import ModelOutput

from compress.evaluate import pairwise_cosine
from compress.recipe import section_defaults
from compress.sentence import MEAN_POOLING, Pooling

HIDDEN_TERMS = ("hidden_l1", "hidden_cos", "hidden_mse")
POOLED_TERMS = ("pooled_cos", "pooled_similarity")
WEIGHT_KEYS = (*HIDDEN_TERMS, *POOLED_TERMS, "logits_kl", "attention_relation", "task")
#: The recipe's distill defaults, except that a loss term this module is not given is off: a recipe
#: always passes its whole section (with the recipe's default weights); a script names the terms it wants.
CONFIG_DEFAULTS: dict[str, object] = {**section_defaults("distill"), **dict.fromkeys(WEIGHT_KEYS, 0.0)}


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_weight(name: str, value: object) -> float:
    """A loss weight as a float; refuses negatives, NaN/inf and non-numbers."""
    if not _is_number(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0 (the weight of that loss term), got {value!r}")
    return float(value)


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be an integer > 0, got {value!r}")
    return value


def _check_layer_map(layer_map: Sequence[Sequence[int]]) -> list[tuple[int, int]]:
    """The layer map as a list of (student, teacher) hidden-state index pairs."""
    pairs = []
    for pair in layer_map:
        ok = isinstance(pair, Sequence) and len(pair) == 2
        ok = ok and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in pair)
        if not ok:
            raise ValueError(
                f"layer map entry {pair!r} is not a (student, teacher) pair of hidden-state indices >= 0; "
                "write pairs like [2, 4] (index 0 is the embedding output, index i the output of layer i)"
            )
        pairs.append((pair[0], pair[1]))
    if not pairs:
        raise ValueError("layer map is empty; list at least one [student, teacher] hidden-state index pair")
    return pairs


def _check_kept(kept: Tensor, width: int, what: str) -> Tensor:
    """``kept`` as a 1-D long tensor of strictly increasing indices below ``width``."""
    if not isinstance(kept, Tensor) or kept.dim() != 1 or kept.is_floating_point() or kept.is_complex():
        raise ValueError(f"kept must be a 1-D integer tensor of {what} indices, got {kept!r}")
    kept = kept.long()
    if kept.numel() == 0:
        raise ValueError("kept is empty; a folded student needs at least one hidden unit")
    if kept.min() < 0 or kept.max() >= width:
        raise ValueError(f"kept holds indices outside [0, {width}); each entry must be one of the {width} {what}s")
    if (kept[1:] <= kept[:-1]).any():
        raise ValueError("kept must be strictly increasing; sort it (torch.sort) and drop duplicates")
    return kept


def _check_mask(mask: Tensor, shape: torch.Size, what: str) -> Tensor:
    """A 0/1 (or bool) mask of ``shape`` as float32; nonzero entries select positions."""
    if mask.shape != shape:
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} does not match the {what} positions {tuple(shape)}; "
            "pass the batch's attention_mask (batch, seq)"
        )
    return (mask != 0).float()


def _masked_mean(values: Tensor, mask: Tensor | None, what: str) -> Tensor:
    """Float32 mean of per-position ``values`` over the positions ``mask`` selects (all when None)."""
    if mask is None:
        return values.float().mean()
    weights = _check_mask(mask, values.shape, what).to(values.device)
    count = weights.sum()
    if count == 0:
        raise ValueError(f"the mask selects no {what} positions; pass a mask with at least one 1")
    return (values.float() * weights).sum() / count


def _kl_rows(teacher_log_probs: Tensor, student_log_probs: Tensor) -> Tensor:
    """KL(teacher || student) along the last dim; entries with zero teacher probability add nothing."""
    teacher_probs = teacher_log_probs.exp()
    terms = teacher_probs * (teacher_log_probs - student_log_probs)
    return torch.where(teacher_probs > 0, terms, torch.zeros_like(terms)).sum(-1)


def _l1_per_token(projected: Tensor, teacher: Tensor) -> Tensor:
    return (projected - teacher).abs().mean(-1)


def _cos_per_token(projected: Tensor, teacher: Tensor) -> Tensor:
    return 1.0 - F.cosine_similarity(projected, teacher, dim=-1)


def _mse_per_token(projected: Tensor, teacher: Tensor) -> Tensor:
    return (projected - teacher).pow(2).mean(-1)


PER_TOKEN_LOSSES = {"hidden_l1": _l1_per_token, "hidden_cos": _cos_per_token, "hidden_mse": _mse_per_token}


def _identity_columns(kept: Tensor, teacher_width: int) -> Tensor:
    """I[:, kept]: maps each kept student unit back to its teacher position."""
    return torch.eye(teacher_width)[:, kept]


class _StateProjections(nn.Module):
    """Learned maps from student hidden states to the teacher's width, each the identity on the kept units at start.

    ``kept`` (the teacher positions of the student's units, increasing) is required when the student
    is narrower than the teacher. ``fold_projections`` slices the maps' input columns for a student
    that keeps fewer units, so a subclass's loss is the same for the folded student as for the gated one.
    """

    def __init__(self, count: int, student_width: int, teacher_width: int, kept: Tensor | None) -> None:
        super().__init__()
        self.student_width = _check_positive_int("student_width", student_width)
        self.teacher_width = _check_positive_int("teacher_width", teacher_width)
        self.register_buffer("kept", self._initial_kept(kept))
        self.projections = nn.ModuleList(self._identity_projection() for _ in range(count))

    def _initial_kept(self, kept: Tensor | None) -> Tensor:
        """Teacher positions of the student's units: all of them, or the given ``kept``."""
        if self.student_width > self.teacher_width:
            raise ValueError(
                f"student_width {self.student_width} exceeds teacher_width {self.teacher_width}; the student "
                "must keep a subset of the teacher's hidden units"
            )
        if kept is None:
            if self.student_width != self.teacher_width:
                raise ValueError(
                    f"student_width {self.student_width} < teacher_width {self.teacher_width} needs kept: "
                    "the teacher hidden-unit indices the student keeps, in increasing order"
                )
            return torch.arange(self.teacher_width)
        kept = _check_kept(kept, self.teacher_width, "teacher hidden unit")
        if kept.numel() != self.student_width:
            raise ValueError(
                f"kept has {kept.numel()} entries but student_width is {self.student_width}; "
                "pass one teacher index per student hidden unit"
            )
        return kept.cpu()

    def _identity_projection(self) -> nn.Linear:
        projection = nn.Linear(self.student_width, self.teacher_width)
        with torch.no_grad():
            projection.weight.copy_(_identity_columns(self.kept.cpu(), self.teacher_width))
            projection.bias.zero_()
        return projection

    def _check_pair(self, what: str, student: Tensor, teacher: Tensor) -> None:
        """Refuse states of another width than this loss was built for, or of different batch or sequence length."""
        for side, state, width in (("student", student, self.student_width), ("teacher", teacher, self.teacher_width)):
            if state.shape[-1] != width:
                raise ValueError(
                    f"{what}: {side} hidden state has width {state.shape[-1]} but this loss was built for {width}; "
                    "build it with the model's hidden size (or fold it)"
                )
        if student.shape[:-1] != teacher.shape[:-1]:
            raise ValueError(
                f"{what}: student states {tuple(student.shape)} and teacher states "
                f"{tuple(teacher.shape)} differ in batch or sequence length; feed both the same batch"
            )

    def _narrowed(self, student_width: int, kept: Tensor) -> _StateProjections:
        """This loss with fresh projections, for a student of ``student_width`` units at teacher positions ``kept``."""
        raise NotImplementedError

    def fold_projections(self, kept: Tensor) -> _StateProjections:
        """The loss for the folded student that keeps units ``kept`` (indices into this student's width).

        Projection input columns are sliced to ``kept``, so the folded student's loss equals this
        module's loss on a state whose units outside ``kept`` are zero.
        """
        kept = _check_kept(kept, self.student_width, "student hidden unit")
        weight = self.projections[0].weight
        folded = self._narrowed(kept.numel(), self.kept.cpu()[kept.cpu()])
        folded = folded.to(device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            for source, target in zip(self.projections, folded.projections):
                target.weight.copy_(source.weight[:, kept.to(weight.device)])
                target.bias.copy_(source.bias)
        return folded.train(self.training)


class HiddenStateDistillation(_StateProjections):
    """L1 / cosine / MSE between projected student hidden states and teacher hidden states.

    ``layer_map`` pairs are (student, teacher) indices into ``output_hidden_states`` tuples (0 is the
    embedding output). Each pair has its own ``nn.Linear(student_width, teacher_width)``, initialised
    to the identity on the teacher units the student keeps, so an unchanged student has zero loss.
    ``kept`` (the teacher positions of the student's units, increasing) is required when the student
    is narrower than the teacher.
    """

    def __init__(
        self,
        layer_map: list[tuple[int, int]],
        student_width: int,
        teacher_width: int,
        l1: float = 0.0,
        cos: float = 0.0,
        mse: float = 0.0,
        kept: Tensor | None = None,
    ) -> None:
        pairs = _check_layer_map(layer_map)
        weights = {name: _check_weight(name, w) for name, w in zip(HIDDEN_TERMS, (l1, cos, mse))}
        if not any(weights.values()):
            raise ValueError("hidden-state distillation needs l1, cos or mse > 0; set at least one weight")
        super().__init__(len(pairs), student_width, teacher_width, kept)
        self.layer_map = pairs
        self.term_weights = weights

    def forward(
        self,
        student_hidden: tuple[Tensor, ...],
        teacher_hidden: tuple[Tensor, ...],
        attention_mask: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Per-term losses averaged over pairs and non-padding tokens, plus their weighted sum."""
        enabled = [name for name, weight in self.term_weights.items() if weight > 0]
        per_pair: dict[str, list[Tensor]] = {name: [] for name in enabled}
        for pair, projection in zip(self.layer_map, self.projections):
            student, teacher = self._states(pair, student_hidden, teacher_hidden)
            projected = projection(student)
            for name in enabled:
                per_token = PER_TOKEN_LOSSES[name](projected, teacher)
                per_pair[name].append(_masked_mean(per_token, attention_mask, "token"))
        parts = {name: torch.stack(values).mean() for name, values in per_pair.items()}
        parts["distill_hidden"] = torch.stack([self.term_weights[n] * parts[n] for n in enabled]).sum()
        return parts

    def _states(
        self, pair: tuple[int, int], student_hidden: tuple[Tensor, ...], teacher_hidden: tuple[Tensor, ...]
    ) -> tuple[Tensor, Tensor]:
        """The student and teacher states a pair names, checked for range, width and shape."""
        for side, index, states in (("student", pair[0], student_hidden), ("teacher", pair[1], teacher_hidden)):
            if index >= len(states):
                raise ValueError(
                    f"layer pair {list(pair)}: {side} index {index} is out of range; the {side} has "
                    f"{len(states)} hidden states (indices 0..{len(states) - 1}); fix the distill layers"
                )
        student, teacher = student_hidden[pair[0]], teacher_hidden[pair[1]]
        self._check_pair(f"layer pair {list(pair)}", student, teacher)
        return student, teacher

    def _narrowed(self, student_width: int, kept: Tensor) -> HiddenStateDistillation:
        weights = self.term_weights.values()
        return HiddenStateDistillation(self.layer_map, student_width, self.teacher_width, *weights, kept=kept)

    def remap_layers(self, student_layer_for: Mapping[int, int]) -> HiddenStateDistillation:
        """A copy whose student indices are renamed by ``student_layer_for`` (old -> new hidden-state index).

        Used when whole layers disappear from the folded student; every student index of the layer
        map must have an entry. Projections are copied unchanged.
        """
        missing = sorted({s for s, _ in self.layer_map} - set(student_layer_for))
        if missing:
            raise ValueError(
                f"student_layer_for has no entry for student hidden-state indices {missing}; map every "
                "student index of the layer map to its index in the new student"
            )
        remapped = copy.deepcopy(self)
        remapped.layer_map = _check_layer_map([(student_layer_for[s], t) for s, t in self.layer_map])
        return remapped


def _similarity_mse(student: Tensor, teacher: Tensor) -> Tensor:
    """MSE between the pairwise cosines of the rows of ``student`` and of ``teacher`` (pairs i < j)."""
    if len(student) < 2:
        # One text has no pairs: zero, still connected to the student so a backward pass works.
        return student.float().sum() * 0.0
    return (pairwise_cosine(student) - pairwise_cosine(teacher)).pow(2).mean().float()


class PooledDistillation(_StateProjections):
    """Distil the sentence embedding: the teacher's ``pooling`` of its last hidden state, and the student's.

    The student's last hidden state goes through one identity-initialised projection (sliced by
    ``fold_projections`` like the hidden-state ones), then through the same pooling, so an unchanged
    student has zero loss. ``cos``: 1 - cosine between the two embeddings of each text, averaged over
    the batch. ``similarity``: MSE between both sides' in-batch pairwise-cosine matrices (the entries
    off the diagonal), the structure retrieval and clustering read from the embeddings.
    """

    def __init__(
        self,
        student_width: int,
        teacher_width: int,
        cos: float = 0.0,
        similarity: float = 0.0,
        pooling: Pooling = MEAN_POOLING,
        kept: Tensor | None = None,
    ) -> None:
        weights = {name: _check_weight(name, w) for name, w in zip(POOLED_TERMS, (cos, similarity))}
        if not any(weights.values()):
            raise ValueError("pooled-embedding distillation needs cos or similarity > 0; set at least one weight")
        if not isinstance(pooling, Pooling):
            raise ValueError(
                f"pooling must be a compress.sentence.Pooling (e.g. compress.sentence.MEAN_POOLING), got {pooling!r}"
            )
        super().__init__(1, student_width, teacher_width, kept)
        self.term_weights = weights
        self.pooling = pooling

    def forward(
        self, student_last: Tensor, teacher_last: Tensor, attention_mask: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Each enabled term on (batch, seq, width) last hidden states, and their weighted sum ``distill_pooled``."""
        self._check_pair("pooled embedding", student_last, teacher_last)
        positions = student_last.shape[:-1]
        if attention_mask is None:
            mask = torch.ones(positions, device=student_last.device)
        else:
            mask = _check_mask(attention_mask, positions, "token").to(student_last.device)
        student = self.pooling(self.projections[0](student_last), mask).float()
        teacher = self.pooling(teacher_last, mask).float()
        parts = {}
        if self.term_weights["pooled_cos"]:
            parts["pooled_cos"] = (1.0 - F.cosine_similarity(student, teacher, dim=-1)).mean()
        if self.term_weights["pooled_similarity"]:
            parts["pooled_similarity"] = _similarity_mse(student, teacher)
        parts["distill_pooled"] = torch.stack([self.term_weights[name] * value for name, value in parts.items()]).sum()
        return parts

    def _narrowed(self, student_width: int, kept: Tensor) -> PooledDistillation:
        return PooledDistillation(student_width, self.teacher_width, *self.term_weights.values(), self.pooling, kept)


def logits_kl(
    student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0, mask: Tensor | None = None
) -> Tensor:
    """KL(teacher || student) of temperature-softened distributions over the last dim, times T**2.

    Averaged over positions (every leading index); ``mask`` (shape ``logits.shape[:-1]``, nonzero =
    keep) selects positions, e.g. non-padding tokens of token-level logits. The T**2 factor keeps
    gradient magnitudes comparable across temperatures (Hinton et al.).
    """
    if not _is_number(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} "
            "differ in shape; both models need the same head and the same batch"
        )
    student_log_probs = F.log_softmax(student_logits / temperature, dim=-1)
    teacher_log_probs = F.log_softmax(teacher_logits / temperature, dim=-1)
    per_position = _kl_rows(teacher_log_probs, student_log_probs)
    return _masked_mean(per_position, mask, "logit") * temperature**2


def _check_qkv(name: str, qkv: Sequence[Tensor], relation_heads: int) -> None:
    if not isinstance(qkv, Sequence) or len(qkv) != 3:
        raise ValueError(f"{name} must be a (query, key, value) tuple of 3 tensors")
    for label, tensor in zip("qkv", qkv):
        if not isinstance(tensor, Tensor) or tensor.dim() != 3:
            raise ValueError(f"{name} {label} must be a (batch, seq, width) tensor of concatenated heads")
        width = tensor.shape[-1]
        if width < relation_heads:
            raise ValueError(
                f"{name} {label} width {width} is narrower than relation_heads {relation_heads}; lower "
                "distill.relation_heads to at most the narrowest attention width (layers without attention are left out)"
            )


def _relation_log_probs(states: Tensor, relation_heads: int, key_padding: Tensor | None) -> Tensor:
    """log softmax(X X^T / sqrt(d_r)) over keys per relation head: (batch, heads, seq, seq).

    A pruned student's width (kept heads x head size) need not divide into ``relation_heads``: the
    heads then differ by one unit (the first ``width % relation_heads`` are wider), each scaled by its own size.
    """
    scores = torch.stack(
        [head @ head.transpose(-1, -2) / math.sqrt(head.shape[-1]) for head in states.tensor_split(relation_heads, dim=-1)],
        dim=1,
    )
    if key_padding is not None:
        scores = scores.masked_fill(key_padding, torch.finfo(scores.dtype).min)
    return F.log_softmax(scores, dim=-1)


def attention_relation_loss(
    student_qkv: tuple[Tensor, Tensor, Tensor],
    teacher_qkv: tuple[Tensor, Tensor, Tensor],
    relation_heads: int,
    attention_mask: Tensor | None = None,
) -> Tensor:
    """MiniLMv2 self-attention relation distillation between one student and one teacher layer.

    Queries, keys and values (each ``(batch, seq, width)``, heads concatenated) are re-split into
    ``relation_heads`` heads, so student and teacher widths may differ (and need not divide evenly). Returns the mean over Q-Q,
    K-K and V-V of KL(R_teacher || R_student), averaged over relation heads and non-padding queries;
    padded keys are masked out of every relation.
    """
    _check_positive_int("relation_heads", relation_heads)
    _check_qkv("student_qkv", student_qkv, relation_heads)
    _check_qkv("teacher_qkv", teacher_qkv, relation_heads)
    key_padding = None
    for student, teacher in zip(student_qkv, teacher_qkv):
        if student.shape[:2] != teacher.shape[:2]:
            raise ValueError(
                f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)} attention inputs differ in "
                "batch or sequence length; feed both models the same batch"
            )
    if attention_mask is not None:
        mask = _check_mask(attention_mask, student_qkv[0].shape[:2], "token")
        key_padding = (mask == 0)[:, None, None, :].to(student_qkv[0].device)
    losses = []
    for student, teacher in zip(student_qkv, teacher_qkv):
        student_log_probs = _relation_log_probs(student, relation_heads, key_padding)
        teacher_log_probs = _relation_log_probs(teacher, relation_heads, key_padding)
        per_query = _kl_rows(teacher_log_probs, student_log_probs).mean(1)
        losses.append(_masked_mean(per_query, attention_mask, "token"))
    return torch.stack(losses).mean()


class DistillationLoss(nn.Module):
    """Every distillation term of a recipe's ``distill`` section, weighted and summed.

    Keys (all optional): ``layers`` ([student, teacher] hidden-state index pairs), ``hidden_l1``,
    ``hidden_cos``, ``hidden_mse``, ``pooled_cos``, ``pooled_similarity``, ``logits_kl``,
    ``attention_relation``, ``task`` (weights, default 0), ``temperature`` (1.0) and
    ``relation_heads`` (12). At least one weight must be > 0. The pooled terms embed both sides'
    last hidden states with ``pooling`` (the teacher's sentence-transformers pooling; mean pooling by
    default). Teacher outputs are used as given (not detached): compute them under ``torch.no_grad()``.
    """

    def __init__(
        self,
        config: Mapping,
        student_width: int,
        teacher_width: int,
        kept: Tensor | None = None,
        pooling: Pooling = MEAN_POOLING,
    ) -> None:
        super().__init__()
        self.config = self._check_config(config)
        self.term_weights = {key: self.config[key] for key in WEIGHT_KEYS}
        self.hidden: HiddenStateDistillation | None = None
        self.pooled: PooledDistillation | None = None
        if any(self.term_weights[key] for key in HIDDEN_TERMS):
            if not self.config["layers"]:
                raise ValueError(
                    "distill.layers is empty but a hidden_* weight is > 0; list [student, teacher] "
                    "hidden-state index pairs or set the hidden weights to 0"
                )
            self.hidden = HiddenStateDistillation(
                self.config["layers"],
                student_width,
                teacher_width,
                *(self.term_weights[key] for key in HIDDEN_TERMS),
                kept=kept,
            )
        if any(self.term_weights[key] for key in POOLED_TERMS):
            weights = (self.term_weights[key] for key in POOLED_TERMS)
            self.pooled = PooledDistillation(student_width, teacher_width, *weights, pooling=pooling, kept=kept)

    @property
    def needs_teacher(self) -> bool:
        """Whether any enabled term compares with the teacher (the task loss alone does not)."""
        return any(weight for key, weight in self.term_weights.items() if key != "task")

    @staticmethod
    def _check_config(config: Mapping) -> dict[str, object]:
        """The config with defaults filled in; refuses unknown keys and impossible values."""
        if not isinstance(config, Mapping):
            raise ValueError(f"distill config must be a mapping of keys to values, got {type(config).__name__}")
        unknown = sorted(set(config) - set(CONFIG_DEFAULTS))
        if unknown:
            raise ValueError(f"distill config has unknown keys {unknown}; allowed: {', '.join(CONFIG_DEFAULTS)}")
        merged = {**CONFIG_DEFAULTS, **config}
        for key in WEIGHT_KEYS:
            merged[key] = _check_weight(f"distill.{key}", merged[key])
        if not any(merged[key] for key in WEIGHT_KEYS):
            raise ValueError(f"distill config enables no loss term; set one of {', '.join(WEIGHT_KEYS)} > 0")
        temperature = merged["temperature"]
        if not _is_number(temperature) or temperature <= 0:
            raise ValueError(f"distill.temperature must be a finite number > 0, got {temperature!r}")
        merged["relation_heads"] = _check_positive_int("distill.relation_heads", merged["relation_heads"])
        if merged["layers"] == "auto":
            raise ValueError(
                "distill layers 'auto' must be resolved for the teacher's depth first: "
                "recipe = compress.objective.with_layer_map(recipe, teacher.config.num_hidden_layers)"
            )
        merged["layers"] = _check_layer_map(merged["layers"]) if merged["layers"] else []
        return merged

    def forward(
        self,
        student_out: ModelOutput,
        teacher_out: ModelOutput,
        attention_mask: Tensor | None = None,
        student_qkv: Sequence[tuple[Tensor, Tensor, Tensor]] | None = None,
        teacher_qkv: Sequence[tuple[Tensor, Tensor, Tensor]] | None = None,
    ) -> dict[str, Tensor]:
        """Each enabled part (unweighted, except ``distill_hidden``) and ``loss``, the weighted total."""
        parts: dict[str, Tensor] = {}
        total: list[Tensor] = []
        if self.hidden is not None:
            hidden = self.hidden(*self._hidden_states(student_out, teacher_out), attention_mask)
            parts.update(hidden)
            total.append(hidden["distill_hidden"])
        if self.pooled is not None:
            student_hidden, teacher_hidden = self._hidden_states(student_out, teacher_out)
            pooled = self.pooled(student_hidden[-1], teacher_hidden[-1], attention_mask)
            parts.update(pooled)
            total.append(pooled["distill_pooled"])
        if self.term_weights["logits_kl"]:
            parts["logits_kl"] = self._logits_term(student_out, teacher_out, attention_mask)
            total.append(self.term_weights["logits_kl"] * parts["logits_kl"])
        if self.term_weights["attention_relation"]:
            parts["attention_relation"] = self._relation_term(student_qkv, teacher_qkv, attention_mask)
            total.append(self.term_weights["attention_relation"] * parts["attention_relation"])
        if self.term_weights["task"]:
            parts["task"] = self._task_term(student_out)
            total.append(self.term_weights["task"] * parts["task"])
        parts["loss"] = sum(total)
        return parts

    @staticmethod
    def _hidden_states(
        student_out: ModelOutput, teacher_out: ModelOutput
    ) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
        """Both sides' hidden states; refuses outputs computed without output_hidden_states=True."""
        states = []
        for side, out in (("student", student_out), ("teacher", teacher_out)):
            hidden = getattr(out, "hidden_states", None)
            if hidden is None:
                raise ValueError(
                    f"{side} output has no hidden_states but a hidden_* or pooled_* weight is > 0; call the "
                    f"{side} with output_hidden_states=True"
                )
            states.append(hidden)
        return states[0], states[1]

    def _logits_term(
        self, student_out: ModelOutput, teacher_out: ModelOutput, attention_mask: Tensor | None
    ) -> Tensor:
        student_logits = getattr(student_out, "logits", None)
        teacher_logits = getattr(teacher_out, "logits", None)
        if student_logits is None or teacher_logits is None:
            raise ValueError(
                "logits_kl > 0 but the student or teacher output has no logits; use models with a head "
                "(e.g. BertForMaskedLM) or set distill.logits_kl to 0"
            )
        token_level = attention_mask is not None and attention_mask.shape == student_logits.shape[:-1]
        mask = attention_mask if token_level else None
        return logits_kl(student_logits, teacher_logits, self.config["temperature"], mask)

    def _relation_term(
        self,
        student_qkv: Sequence[tuple[Tensor, Tensor, Tensor]] | None,
        teacher_qkv: Sequence[tuple[Tensor, Tensor, Tensor]] | None,
        attention_mask: Tensor | None,
    ) -> Tensor:
        if not student_qkv or not teacher_qkv:
            raise ValueError(
                "attention_relation > 0 needs student_qkv and teacher_qkv: per-layer lists of (query, key, "
                "value) tensors for the distilled layers; pass them or set distill.attention_relation to 0"
            )
        if len(student_qkv) != len(teacher_qkv):
            raise ValueError(
                f"student_qkv has {len(student_qkv)} layers but teacher_qkv has {len(teacher_qkv)}; "
                "pass one (q, k, v) tuple per distilled layer on each side, in matching order"
            )
        heads = self.config["relation_heads"]
        losses = [attention_relation_loss(s, t, heads, attention_mask) for s, t in zip(student_qkv, teacher_qkv)]
        return torch.stack(losses).mean()

    @staticmethod
    def _task_term(student_out: ModelOutput) -> Tensor:
        loss = getattr(student_out, "loss", None)
        if loss is None:
            raise ValueError(
                "task > 0 but the student output has no loss; pass labels to the student or set distill.task to 0"
            )
        return loss

    def fold(self, kept: Tensor) -> DistillationLoss:
        """The loss for the folded student keeping hidden units ``kept`` (projections sliced to match)."""
        folded = copy.deepcopy(self)
        if self.hidden is not None:
            folded.hidden = self.hidden.fold_projections(kept)
        if self.pooled is not None:
            folded.pooled = self.pooled.fold_projections(kept)
        return folded

    def remap_layers(self, student_layer_for: Mapping[int, int]) -> DistillationLoss:
        """A copy whose student hidden-state indices are renamed (old -> new) after layers are removed."""
        remapped = copy.deepcopy(self)
        if self.hidden is not None:
            remapped.hidden = self.hidden.remap_layers(student_layer_for)
            remapped.config["layers"] = remapped.hidden.layer_map
        return remapped
