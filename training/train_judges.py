"""Train a shapes-world judge (``reward_models.shapes_judge``).

    python -m training.train_judges --recipe orm_zs --out weights/shapes/judges/orm_zs

Recipe ``orm_zs``, the zero-shot outcome reward model (the analogue of an off-the-shelf VLM):
trained only on *rendered* scenes, never on generated images. Each scene of a training-pool
record is shown with its own caption or with a hard negative (one attribute of the record
changed: a shape, a colour, the count, the relation, the colours swapped between objects) or a
random other caption. The label is GenEval's decision for that caption on the scene's ground
truth, so a changed caption that the scene still satisfies (a diagonal pair is both "left of"
and "above") is labelled yes. Captions stay inside the training pool: no evaluation prompt is
ever read. Accuracy is reported on rendered scenes of the held-out evaluation suite.

The other recipes fine-tune the zero-shot ORM on the embedded generator's own labelled
generations (``training.judge_data`` files of both decoding orders), as the paper
fine-tunes LLaVA-OneVision (paper section 3.2, the reward-model data):

- ``orm_ft``: final images, ORM question, the evaluator's verdict.
- ``prm``: previews after step ``k`` labelled by Math-Shepherd continuations (yes iff any of
  the continuations ends correct), plus the final images with their own verdict.
- ``parm``: one model, three questions. Clarity, labelled statically by step: a preview at or
  after ``--clear-from`` of the way through decoding is clear, one at or before
  ``--unclear-until`` is not, the ones between are not used (paper: after step 11 of 18 clear,
  before 10 not). Potential: previews of clear steps labelled with their path's final verdict.
  Final: the ORM examples.
- ``parm++``: PARM's examples plus reflection: on every final image a critique class
  (``shapes_judge.CRITIQUES``) and, on failing ones, the tokens to regenerate
  (``judge_data.reflection_target``); the heads are trained with the answer.

    python -m training.train_judges --recipe parm --init weights/shapes/judges/orm_zs \
        --data data/judges/mask_train.pt data/judges/raster_train.pt --out weights/shapes/judges/parm
"""
from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from geneval.detection import COLORS
from geneval.rules import RuleConfig, evaluate_image, filter_detections
from geneval.suites import (RELATIONS, SHAPES_SUITE_DIR, color_attr_record, color_record, counting_record,
                            load_metadata, position_record, single_object_record, two_object_record)
from shapes.render import SceneObject, render, sample_scene
from shapes.world import GRID, PLURALS, SHAPES
from shapes.word_tokenizer import WordTokenizer
from shapes.patch_tokenizer import PatchTokenizer
from training.ranking import within_prompt_ranking
from reward_models.shapes_judge import JudgeNet, JudgeNetConfig, load_judge, save_judge



def _other(options: list[str], current: str, rng: np.random.Generator, *also: str) -> str:
    """A random option that is neither ``current`` nor any of ``also``."""
    choices = [o for o in options if o != current and o not in also]
    return choices[rng.integers(len(choices))]


def perturb(record: dict, rng: np.random.Generator) -> dict:
    """A record of the same tag with one attribute changed (a hard negative caption)."""
    tag, inc = record["tag"], record["include"]
    if tag == "single_object":
        return single_object_record(_other(SHAPES, inc[0]["class"], rng))
    if tag == "two_object":
        a, b = inc[0]["class"], inc[1]["class"]
        return two_object_record(_other(SHAPES, a, rng, b), b) if rng.random() < 0.5 else \
            two_object_record(a, _other(SHAPES, b, rng, a))
    if tag == "counting":
        name, count = inc[0]["class"], inc[0]["count"]
        if rng.random() < 0.6:
            count = int(_other(["2", "3", "4"], str(count), rng))
        else:
            name = _other(SHAPES, name, rng)
        return counting_record(name, PLURALS[name], count)
    if tag == "colors":
        name, color = inc[0]["class"], inc[0]["color"]
        return color_record(name, _other(COLORS, color, rng)) if rng.random() < 0.7 else \
            color_record(_other(SHAPES, name, rng), color)
    if tag == "position":
        b, a, relation = inc[0]["class"], inc[1]["class"], inc[1]["position"][0]
        pick = rng.integers(3)
        if pick == 0:
            return position_record(a, _other(RELATIONS, relation, rng), b)
        if pick == 1:
            return position_record(b, relation, a)
        return position_record(_other(SHAPES, a, rng, b), relation, b)
    if tag == "color_attr":
        (a, ca), (b, cb) = ((c["class"], c["color"]) for c in inc)
        pick = rng.integers(3)
        if pick == 0 and ca != cb:
            return color_attr_record(a, cb, b, ca)
        if pick <= 1:
            return color_attr_record(a, _other(COLORS, ca, rng), b, cb)
        return color_attr_record(a, ca, _other(SHAPES, b, rng, a), cb)
    raise ValueError(f"unknown tag {tag!r}")


def _free(objects: list[SceneObject], cell: tuple[int, int], size: int) -> bool:
    """True when a ``size``-cell object at ``cell`` keeps one empty cell from every object (as the renderer does)."""
    c, r = cell
    return all(c + size < o.cell[0] or o.cell[0] + o.size < c or r + size < o.cell[1] or o.cell[1] + o.size < r
               for o in objects)


def perturb_scene(scene: list[SceneObject], rng: np.random.Generator) -> list[SceneObject]:
    """The scene with one change that generated images show and rendered scenes of a record never do:
    an object dropped, an extra object added, or one object recoloured or reshaped."""
    scene = list(scene)
    pick = rng.integers(4)
    if pick == 0 and scene:
        del scene[rng.integers(len(scene))]
    elif pick == 1:
        size = int(rng.integers(2, 4))
        free = [(c, r) for r in range(GRID - size + 1) for c in range(GRID - size + 1) if _free(scene, (c, r), size)]
        if free:
            cell = free[rng.integers(len(free))]
            scene.append(SceneObject(SHAPES[rng.integers(len(SHAPES))], COLORS[rng.integers(len(COLORS))], cell, size))
    elif scene:
        index = rng.integers(len(scene))
        obj = scene[index]
        scene[index] = (SceneObject(obj.shape, _other(COLORS, obj.color, rng), obj.cell, obj.size) if pick == 2 else
                        SceneObject(_other(SHAPES, obj.shape, rng), obj.color, obj.cell, obj.size))
    return scene


def scene_targets(scene: list[SceneObject]) -> np.ndarray:
    """``int64 [2, GRID * GRID]``: per token (raster order) the class of the shape whose box covers it and
    its colour, 0 where no object is (``shapes_judge.SCENE_CLASSES`` lays out the head's outputs)."""
    shape, color = np.zeros((GRID, GRID), np.int64), np.zeros((GRID, GRID), np.int64)
    for obj in scene:
        (c, r), n = obj.cell, obj.size
        shape[r:r + n, c:c + n] = 1 + SHAPES.index(obj.shape)
        color[r:r + n, c:c + n] = 1 + COLORS.index(obj.color)
    return np.stack([shape.ravel(), color.ravel()])


def caption_example(records: list[dict], allowed: set[str] | None, rng: np.random.Generator,
                    scene_change: float = 0.0) -> tuple[dict, np.ndarray, bool, np.ndarray]:
    """(caption record, rendered image, GenEval's verdict of the caption on the scene, scene targets).

    With probability ``scene_change`` the scene itself is changed (``perturb_scene``) before it is
    captioned, so the judge also sees missing, extra and mis-coloured objects."""
    scene_record = records[rng.integers(len(records))]
    scene = sample_scene(scene_record, rng)
    if rng.random() < scene_change:
        scene = perturb_scene(scene, rng)
    draw = rng.random()
    if draw < 0.5:
        caption = scene_record
    else:
        caption = None
        for _ in range(20):  # hard negatives that stay inside the training captions
            candidate = perturb(scene_record, rng) if draw < 0.85 else records[rng.integers(len(records))]
            if allowed is None or candidate["prompt"] in allowed:
                caption = candidate
                break
        caption = caption or scene_record
    rules = RuleConfig()
    truth = [obj.as_detection() for obj in scene]
    correct, _ = evaluate_image(caption, filter_detections(caption, truth, rules), rules)
    return caption, render(scene), correct, scene_targets(scene)


def build_examples(records: list[dict], allowed: set[str] | None, num: int, seed: int, scene_change: float = 0.0):
    """Captions, uint8 images ``[num, 3, H, W]``, bool labels ``[num]`` and scene targets ``[num, 2, N]``."""
    rng = np.random.default_rng(seed)
    captions, images, labels, targets = [], [], [], []
    for _ in tqdm(range(num), desc="examples", mininterval=10):
        caption, image, label, target = caption_example(records, allowed, rng, scene_change)
        captions.append(caption["prompt"])
        images.append(image)
        labels.append(label)
        targets.append(target)
    return (captions, torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2), torch.tensor(labels),
            torch.from_numpy(np.stack(targets)))


def scene_loss(scene_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the scene head's shape and colour logits against ``scene_targets``."""
    shapes = 1 + len(SHAPES)
    return (F.cross_entropy(scene_logits[..., :shapes].flatten(0, 1), targets[:, 0].flatten())
            + F.cross_entropy(scene_logits[..., shapes:].flatten(0, 1), targets[:, 1].flatten()))


def learning_rate(step: int, steps: int, peak: float, warmup: int) -> float:
    """Linear warmup over ``warmup`` steps, then cosine decay to 0."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


@torch.no_grad()
def accuracy(model: JudgeNet, kinds, text, codes, labels, batch: int = 1024) -> float:
    model.eval()
    predictions = torch.cat([model(kinds[i:i + batch], text[i:i + batch], codes[i:i + batch]).argmax(-1) == 0
                             for i in range(0, len(labels), batch)])
    model.train()
    return float((predictions == labels).float().mean())


def train(args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    tokenizer = PatchTokenizer.load(args.tokenizer)
    text = WordTokenizer.for_shapes_world()
    train_records = load_metadata(SHAPES_SUITE_DIR / "train_metadata.jsonl")
    eval_records = load_metadata(SHAPES_SUITE_DIR / "evaluation_metadata.jsonl")
    start = time.time()
    captions, images, labels, targets = build_examples(train_records, {r["prompt"] for r in train_records},
                                                       args.num_examples, args.seed, args.scene_change)
    # Held-out scenes with any caption (negatives need not be evaluation prompts).
    held_captions, held_images, held_labels, _ = build_examples(eval_records, None, args.eval_examples,
                                                                args.seed + 1, args.scene_change)
    codes, held_codes = tokenizer.encode(images), tokenizer.encode(held_images)
    tokens, held_tokens = text.encode(captions), text.encode(held_captions)
    cfg = JudgeNetConfig(text_vocab_size=len(text), codebook_size=tokenizer.cfg.codebook_size,
                         patch_pixels=tokenizer.codebook.shape[1], scene_head=args.scene_weight > 0,
                         hidden_size=args.hidden_size, num_layers=args.layers, num_heads=args.heads,
                         pixel_stem=args.pixel_stem)
    kind = cfg.kinds.index("orm")
    kinds, held_kinds = torch.full((len(labels),), kind), torch.full((len(held_labels),), kind)
    model = JudgeNet(cfg)
    model.set_patches(tokenizer.codebook)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    generator = torch.Generator().manual_seed(args.seed)
    curve = []
    for step in tqdm(range(args.steps), desc="judge", mininterval=10):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args.steps, args.lr, args.warmup)
        batch = torch.randint(len(labels), (args.batch_size,), generator=generator)
        if cfg.scene_head:
            logits, scene = model.answer_and_scene(kinds[batch], tokens[batch], codes[batch])
            answer_loss = F.cross_entropy(logits, (~labels[batch]).long())  # class 0 = yes
            loss = answer_loss + args.scene_weight * scene_loss(scene, targets[batch])
        else:
            loss = answer_loss = F.cross_entropy(model(kinds[batch], tokens[batch], codes[batch]),
                                                 (~labels[batch]).long())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 100 == 0 or step == args.steps - 1:
            point = {"step": step, "loss": loss.item(), "answer_loss": answer_loss.item(),
                     "seconds": time.time() - start}
            if args.eval_every and (step % args.eval_every == 0 or step == args.steps - 1):
                point["heldout_rendered_accuracy"] = accuracy(model, held_kinds, held_tokens, held_codes, held_labels)
                tqdm.write(json.dumps(point))
            curve.append(point)
    seen = torch.randperm(len(labels), generator=generator)[:8192]  # a sample: the full set takes minutes on a CPU
    log = {"recipe": args.recipe, "args": vars(args), "curve": curve, "train_seconds": time.time() - start,
           "train_accuracy_sample": accuracy(model, kinds[seen], tokens[seen], codes[seen], labels[seen]),
           "heldout_rendered_accuracy": accuracy(model, held_kinds, held_tokens, held_codes, held_labels),
           "heldout_yes_share": float(held_labels.float().mean())}
    save_judge(args.out, model.eval(), text, tokenizer, log)
    return log


# ----------------------------------------------------------------------------
# Fine-tuned recipes on generated images

FINETUNED = ("orm_ft", "prm", "parm", "parm++")
NO_REGION = -1
GROUPS_PER_CALL = 1 << 24
"""Group ids of one ``generated_examples`` call are offset by this per added example set."""
"""``regenerate`` value of examples without a region target (only failing finals have one)."""


def clarity_label(step: int, num_steps: int, clear_from: float, unclear_until: float) -> bool | None:
    """Static clarity label of the preview after ``step`` of ``num_steps`` (None: between, unused)."""
    if step >= clear_from * num_steps:
        return True
    if step <= unclear_until * num_steps:
        return False
    return None


def generated_examples(data: dict, recipe: str, clear_from: float, unclear_until: float) -> dict:
    """The examples of ``recipe`` in one ``judge_data`` file: kinds, prompts, codes, labels, reflection targets."""
    prompts = [data["prompts"][g] for g in data["traj_group"].tolist()]
    previews, steps = data["previews"].long(), data["num_steps"]
    finals = previews[:, -1]
    out = {"kind": [], "prompt": [], "codes": [], "label": [], "critique": [], "regenerate": [], "group": []}

    def add(kind: str, example_prompts: list[str], codes: torch.Tensor, labels: torch.Tensor,
            critique: torch.Tensor | None = None, regenerate: torch.Tensor | None = None,
            groups: torch.Tensor | None = None) -> None:
        """``groups``: examples that a best-of-N would compare (one prompt, one question, one step)
        share a group id; None: the examples are not compared (clarity labels are static by step)."""
        n = len(example_prompts)
        calls = len(out["group"])
        out["group"].append(torch.full((n,), -1) if groups is None else groups.long() + calls * GROUPS_PER_CALL)
        out["kind"] += [kind] * n
        out["prompt"] += example_prompts
        out["codes"].append(codes)
        out["label"].append(labels.bool())
        out["critique"].append(critique if critique is not None else torch.full((n,), NO_REGION))
        out["regenerate"].append(regenerate.long() if regenerate is not None else
                                 torch.full((n, codes.shape[1]), NO_REGION))

    if recipe in ("orm_ft", "parm", "parm++"):
        if recipe == "parm++":
            region = torch.where(data["label"][:, None], NO_REGION, data["regenerate"].long())
            add("orm", prompts, finals, data["label"], data["critique"], region, groups=data["traj_group"])
        else:
            add("orm", prompts, finals, data["label"], groups=data["traj_group"])
    if recipe == "prm":
        prm_prompts = [data["prompts"][g] for g in data["prm_group"].tolist()]
        add("prm", prm_prompts, data["prm_codes"].long(), data["prm_hits"] > 0,
            groups=data["prm_group"] * (steps + 1) + data["prm_step"])
        # from the last step, the only continuation is the image
        add("prm", prompts, finals, data["label"], groups=data["traj_group"])
    if recipe in ("parm", "parm++"):
        for step in range(1, steps + 1):
            clear = clarity_label(step, steps, clear_from, unclear_until)
            if clear is None:
                continue
            add("clarity", prompts, previews[:, step - 1], torch.full((len(prompts),), clear))
            if clear:
                add("potential", prompts, previews[:, step - 1], data["label"], groups=data["traj_group"])
    return {"kind": out["kind"], "prompt": out["prompt"], "codes": torch.cat(out["codes"]),
            "label": torch.cat(out["label"]), "critique": torch.cat(out["critique"]),
            "regenerate": torch.cat(out["regenerate"]), "group": torch.cat(out["group"])}


TRAJECTORY_KEYS = ("traj_group", "previews", "label", "critique", "regenerate")
PRM_KEYS = ("prm_group", "prm_step", "prm_codes", "prm_hits")


def split_prompts(data: dict, every: int) -> tuple[dict, dict]:
    """``(training part, validation part)`` of a ``judge_data`` file: the prompts whose index in the file
    is ``every - 1`` modulo ``every`` (every ``every``-th prompt) go to validation with all their paths
    and PRM labels, so a held-in ranking can choose settings without reading an evaluation prompt."""
    parts = []
    for keep in (lambda g: g % every != every - 1, lambda g: g % every == every - 1):
        traj, prm = keep(data["traj_group"]), keep(data["prm_group"])
        parts.append({**data, **{k: data[k][traj] for k in TRAJECTORY_KEYS}, **{k: data[k][prm] for k in PRM_KEYS}})
    return parts[0], parts[1]


@torch.no_grad()
def validation_ranking(model: JudgeNet, text: WordTokenizer, data: dict, kind: str) -> dict:
    """Within-prompt ranking of the finals of ``data`` by ``model``'s P(yes) to ``kind``, with its SE."""
    model.eval()
    groups = data["traj_group"]
    kinds = torch.full((len(groups),), model.cfg.kinds.index(kind))
    prompts = text.encode([data["prompts"][g] for g in groups.tolist()])
    finals = data["previews"][:, -1].long()
    p_yes = torch.cat([model(kinds[i:i + 1024], prompts[i:i + 1024], finals[i:i + 1024]).softmax(-1)[:, 0]
                       for i in range(0, len(groups), 1024)])
    model.train()
    return within_prompt_ranking(p_yes, groups, data["label"])


def merge_examples(parts: list[dict]) -> dict:
    """One example set from several files; group ids stay apart (a file's groups are its own prompts)."""
    merged = {key: (sum((p[key] for p in parts), []) if isinstance(parts[0][key], list) else
                    torch.cat([p[key] for p in parts])) for key in parts[0] if key != "group"}
    offset = max(int(p["group"].max()) + 1 for p in parts)
    merged["group"] = torch.cat([torch.where(p["group"] < 0, -1, p["group"] + i * offset) for i, p in enumerate(parts)])
    return merged


def within_prompt_pairs(groups: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``long [M, 2]``: every (yes example, no example) of one group (``groups`` -1: in none)."""
    pairs = []
    order = torch.argsort(groups, stable=True)
    ids, counts = torch.unique_consecutive(groups[order], return_counts=True)
    for group, members in zip(ids.tolist(), torch.split(order, counts.tolist())):
        if group < 0:
            continue
        yes, no = members[labels[members]], members[~labels[members]]
        if len(yes) and len(no):
            pairs.append(torch.cartesian_prod(yes, no))
    return torch.cat(pairs) if pairs else torch.zeros(0, 2, dtype=torch.long)


def pairwise_loss(answer_logits: torch.Tensor, num_pairs: int) -> torch.Tensor:
    """Bradley-Terry loss that the yes example of each pair outranks the no one: ``-log sigmoid(s_yes - s_no)``
    with ``s`` = yes logit - no logit. The first ``num_pairs`` rows are the yes sides, the next the no sides."""
    if num_pairs == 0:
        return answer_logits.new_zeros(())
    score = answer_logits[:, 0] - answer_logits[:, 1]
    return F.softplus(score[num_pairs:2 * num_pairs] - score[:num_pairs]).mean()


def judge_loss(model: JudgeNet, kinds: torch.Tensor, text: torch.Tensor, codes: torch.Tensor, labels: torch.Tensor,
               critique: torch.Tensor, regenerate: torch.Tensor, num_pairs: int = 0,
               pairwise_weight: float = 0.0) -> torch.Tensor:
    """Answer cross-entropy, plus the within-prompt ranking loss on the first ``2 * num_pairs`` rows
    (``pairwise_loss``), plus the reflection heads' losses where the example has targets."""
    if not model.cfg.reflection:
        answer = model(kinds, text, codes)
        return F.cross_entropy(answer, (~labels).long()) + pairwise_weight * pairwise_loss(answer, num_pairs)
    answer, critique_logits, region = model.reflect(kinds, text, codes)
    loss = F.cross_entropy(answer, (~labels).long()) + pairwise_weight * pairwise_loss(answer, num_pairs)
    has_critique = critique != NO_REGION
    if has_critique.any():
        loss = loss + F.cross_entropy(critique_logits[has_critique], critique[has_critique])
    has_region = regenerate != NO_REGION
    if has_region.any():
        loss = loss + F.binary_cross_entropy_with_logits(region[has_region], regenerate[has_region].float())
    return loss


def initial_judge(args: argparse.Namespace) -> tuple[JudgeNet, WordTokenizer, PatchTokenizer]:
    """The model a fine-tune starts from: the zero-shot ORM at ``args.init`` (the paper fine-tunes its
    zero-shot VLM), or with ``--init none`` a fresh one of the architecture the flags give."""
    reflection = args.recipe == "parm++"
    if args.init == "none":
        tokenizer = PatchTokenizer.load(args.tokenizer)
        text = WordTokenizer.for_shapes_world()
        cfg = JudgeNetConfig(text_vocab_size=len(text), codebook_size=tokenizer.cfg.codebook_size,
                             patch_pixels=tokenizer.codebook.shape[1], hidden_size=args.hidden_size,
                             num_layers=args.layers, num_heads=args.heads, pixel_stem=args.pixel_stem,
                             reflection=reflection)
        model = JudgeNet(cfg)
        model.set_patches(tokenizer.codebook)
        return model, text, tokenizer
    base, text, tokenizer = load_judge(args.init)
    model = JudgeNet(JudgeNetConfig(**{**base.cfg.__dict__, "reflection": reflection}))
    missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and all(k.startswith(("critique.", "region.")) for k in missing), (missing, unexpected)
    return model, text, tokenizer


def finetune(args: argparse.Namespace) -> dict:
    """Fine-tune ``args.init`` (the zero-shot ORM) on generated examples of ``args.recipe``."""
    torch.manual_seed(args.seed)
    model, text, tokenizer = initial_judge(args)
    cfg = model.cfg
    start = time.time()
    files = [torch.load(path, weights_only=False) for path in args.data]
    held_in = []
    if args.val_every:
        files, held_in = map(list, zip(*(split_prompts(data, args.val_every) for data in files)))
    examples = merge_examples([generated_examples(data, args.recipe, args.clear_from, args.unclear_until)
                               for data in files])
    kinds = torch.tensor([cfg.kinds.index(k) for k in examples["kind"]])
    tokens = text.encode(examples["prompt"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    generator = torch.Generator().manual_seed(args.seed)
    pairs = within_prompt_pairs(examples["group"], examples["label"])
    num_pairs = min(args.pair_batch, len(pairs)) if args.pairwise_weight > 0 else 0
    curve, n = [], len(kinds)
    model.train()
    for step in tqdm(range(args.steps), desc=f"judge {args.recipe}", mininterval=10):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args.steps, args.lr, args.warmup)
        # Pair rows first (yes sides, then no sides), then random examples up to the batch size.
        picked = pairs[torch.randint(len(pairs), (num_pairs,), generator=generator)] if num_pairs else pairs[:0]
        batch = torch.cat([picked[:, 0], picked[:, 1],
                           torch.randint(n, (args.batch_size - 2 * num_pairs,), generator=generator)])
        loss = judge_loss(model, kinds[batch], tokens[batch], examples["codes"][batch], examples["label"][batch],
                          examples["critique"][batch], examples["regenerate"][batch], num_pairs, args.pairwise_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 50 == 0 or step == args.steps - 1:
            curve.append({"step": step, "loss": loss.item(), "seconds": time.time() - start})
    counts = {kind: int(sum(k == kind for k in examples["kind"])) for kind in cfg.kinds}
    seen = torch.randperm(n, generator=generator)[:8192]  # a sample: the full set takes minutes on a CPU
    log = {"recipe": args.recipe, "args": vars(args), "curve": curve, "train_seconds": time.time() - start,
           "examples": counts, "within_prompt_pairs": len(pairs), "train_accuracy_sample": accuracy(model, kinds[seen], tokens[seen],
                                                                 examples["codes"][seen], examples["label"][seen])}
    if held_in:
        log["validation_ranking"] = {data["order"]: validation_ranking(model, text, data, "prm" if args.recipe == "prm"
                                                                       else "orm") for data in held_in}
    save_judge(args.out, model.eval(), text, tokenizer, log)
    return log


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", choices=["orm_zs", *FINETUNED], default="orm_zs")
    parser.add_argument("--out", default=None, help="default: weights/shapes/judges/<recipe>")
    parser.add_argument("--tokenizer", default="weights/shapes/tokenizer")
    parser.add_argument("--num-examples", type=int, default=30_000, help="orm_zs: rendered training examples")
    parser.add_argument("--eval-examples", type=int, default=2_000, help="orm_zs: rendered held-out examples")
    parser.add_argument("--scene-change", type=float, default=0.3,
                        help="orm_zs: share of scenes changed before captioning (missing/extra/recoloured objects)")
    parser.add_argument("--scene-weight", type=float, default=0.5,
                        help="orm_zs: weight of the per-token shape/colour loss (0: no scene head)")
    parser.add_argument("--eval-every", type=int, default=500, help="orm_zs: held-out accuracy every this many steps")
    parser.add_argument("--warmup", type=int, default=100, help="linear warmup steps before the cosine decay")
    parser.add_argument("--init", default="weights/shapes/judges/orm_zs",
                        help="fine-tuned recipes start here; 'none': a fresh judge of the architecture below")
    parser.add_argument("--hidden-size", type=int, default=128, help="architecture (orm_zs, or --init none)")
    parser.add_argument("--layers", type=int, default=3, help="architecture: transformer layers")
    parser.add_argument("--heads", type=int, default=4, help="architecture: attention heads")
    parser.add_argument("--pixel-stem", type=int, default=0,
                        help="architecture: channels of a conv stem over the picture of the codes (0: none)")
    parser.add_argument("--data", nargs="+", default=["data/judges/mask_train.pt", "data/judges/raster_train.pt"],
                        help="fine-tuned recipes: training.judge_data files")
    parser.add_argument("--clear-from", type=float, default=0.5, help="parm: clarity yes from this share of steps")
    parser.add_argument("--unclear-until", type=float, default=0.4, help="parm: clarity no up to this share")
    parser.add_argument("--pairwise-weight", type=float, default=1.0,
                        help="fine-tunes: weight of the within-prompt ranking loss (0: plain cross-entropy)")
    parser.add_argument("--pair-batch", type=int, default=32,
                        help="fine-tunes: within-prompt (yes, no) pairs in each batch (2 rows each)")
    parser.add_argument("--val-every", type=int, default=0,
                        help="fine-tunes: keep every K-th prompt of each file out of training and report the "
                             "within-prompt ranking on it (held-in validation; 0: train on all)")
    parser.add_argument("--steps", type=int, default=1_200)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.out = args.out or f"weights/shapes/judges/{args.recipe}"
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    log = train(args) if args.recipe == "orm_zs" else finetune(args)
    print(json.dumps({k: v for k, v in log.items() if k != "curve"}, indent=1))


if __name__ == "__main__":
    main()
