"""FASA's sampling adaptation, iteration-based: every PERIOD iterations, the per-class
classification loss of the held-out images (a split of the training set by default, never the
evaluation set) drives the class sampling probabilities of the virtual features. The hook only
computes those losses; the predictor (``FASAOutputLayers.adapt``) owns and updates its state."""

import logging
import zlib
from collections import Counter

import torch
import torch.nn.functional as F
from detectron2.data import (
    DatasetMapper,
    build_detection_test_loader,
    get_detection_dataset_dicts,
)
from detectron2.engine import HookBase
from detectron2.engine.hooks import PeriodicCheckpointer
from torch.nn.parallel import DistributedDataParallel

from ..data.class_statistics import frequency_groups
from ..data.named_errors import NamedErrorMapper
from ..data.resumable_loader import build_resumable_train_loader
from ..modeling.distributed import all_reduce_sum
from .roi_features import roi_box_features
from .trainer import LongTailTrainer

__all__ = ["split_held_out", "held_out_by_group", "FASAAdaptationHook", "FASATrainer"]

logger = logging.getLogger(__name__)


def _classes(record):
    return {a["category_id"] for a in record.get("annotations", ())}


def split_held_out(dataset_dicts, fraction):
    """(training, held-out) records, stratified so that no class loses all its training images.

    Candidates are the images whose id hashes below ``fraction`` (so the split does not depend
    on order, seed or number of workers); taken in hash order, a candidate is held out only if
    every class in it keeps at least one training image. (A plain 5 % hold-out removes every
    training image of several rare classes on LVIS.)
    """
    keys = [zlib.crc32(str(d["image_id"]).encode()) for d in dataset_dicts]
    candidates = sorted(
        (i for i, k in enumerate(keys) if k % 10000 < fraction * 10000),
        key=lambda i: (keys[i], str(dataset_dicts[i]["image_id"])),
    )
    remaining = Counter(c for d in dataset_dicts for c in _classes(d))
    held = set()
    for i in candidates:
        classes = _classes(dataset_dicts[i])
        if all(remaining[c] > 1 for c in classes):
            remaining.subtract(classes)
            held.add(i)
    return (
        [d for i, d in enumerate(dataset_dicts) if i not in held],
        [d for i, d in enumerate(dataset_dicts) if i in held],
    )


def held_out_by_group(dataset_dicts, held_out):
    """{"r" | "c" | "f": (held-out images, images)} with a class of that LVIS group (by its
    image count in ``dataset_dicts``); an image counts in each group it has a class of."""
    image_count = Counter(c for d in dataset_dicts for c in _classes(d))
    group = dict(zip(image_count, frequency_groups(list(image_count.values()))))
    held_ids = {d["image_id"] for d in held_out}
    out = {g: [0, 0] for g in "rcf"}
    for d in dataset_dicts:
        for g in {group[c] for c in _classes(d)}:
            out[g][0] += d["image_id"] in held_ids
            out[g][1] += 1
    return {g: tuple(v) for g, v in out.items()}


class FASAAdaptationHook(HookBase):
    """Every ``period`` iterations: held-out losses of the model's predictor, then its
    ``adapt(losses)`` (a ``FASAOutputLayers``)."""

    def __init__(self, period, loader):
        self.period, self.loader = period, loader

    def after_step(self):
        next_iter = self.trainer.iter + 1
        if next_iter % self.period == 0 and next_iter < self.trainer.max_iter:
            self.adapt()

    @torch.no_grad()
    def held_out_losses(self, model):
        """(C,) sum of the RoI cross-entropies of each class over all sampled RoIs' count."""
        predictor = model.roi_heads.box_predictor
        C = predictor.num_classes
        totals = torch.zeros(2, C + 1, device=model.device)
        for batch in self.loader:
            x, gt = roi_box_features(model, batch)
            ce = F.cross_entropy(predictor.classifier(x.flatten(1)).float(), gt, reduction="none")
            totals[0].index_add_(0, gt, ce)
            totals[1].index_add_(0, gt, torch.ones_like(ce))
        totals = all_reduce_sum(totals)
        return totals[0, :C] / totals[1].sum().clamp(min=1)

    def adapt(self):
        model = self.trainer.model
        model = model.module if isinstance(model, DistributedDataParallel) else model
        predictor = model.roi_heads.box_predictor
        model.eval()  # frozen BatchNorm statistics; the RoI sampling still runs
        try:
            losses = self.held_out_losses(model)
        finally:
            model.train()
        probs = predictor.adapt(losses)
        self.trainer.storage.put_scalar("fasa_prob_sum", probs.sum().item())


class FASATrainer(LongTailTrainer):
    """Trains on DATASETS.TRAIN minus the held-out split, which the adaptation hook uses."""

    @classmethod
    def fasa_splits(cls, cfg):
        fasa = cfg.MODEL.ROI_BOX_HEAD.FASA
        dicts = get_detection_dataset_dicts(
            cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS
        )
        if fasa.ADAPT_DATASET:
            return dicts, get_detection_dataset_dicts([fasa.ADAPT_DATASET])
        train, held_out = split_held_out(dicts, fasa.HELD_OUT_FRACTION)
        if not held_out or not train:
            raise ValueError(
                f"MODEL.ROI_BOX_HEAD.FASA.HELD_OUT_FRACTION {fasa.HELD_OUT_FRACTION} "
                f"leaves {len(train)} training and {len(held_out)} held-out images"
            )
        groups = held_out_by_group(dicts, held_out)
        logger.info(
            "FASA held-out images per group (held out / images with a class of the group): "
            + ", ".join(f"{g} {h}/{n}" for g, (h, n) in groups.items())
        )
        return train, held_out

    @classmethod
    def build_train_loader(cls, cfg):
        return build_resumable_train_loader(cfg, dataset=cls.fasa_splits(cfg)[0])

    def build_hooks(self):
        cfg, fasa = self.cfg, self.cfg.MODEL.ROI_BOX_HEAD.FASA
        train, held_out = self.fasa_splits(cfg)
        period = (
            fasa.ADAPT_PERIOD
            if fasa.ADAPT_PERIOD > 0
            else max(len(train) // cfg.SOLVER.IMS_PER_BATCH, 1)
        )  # one epoch
        mapper = NamedErrorMapper(DatasetMapper(cfg, is_train=True))  # a bad image is named
        loader = build_detection_test_loader(held_out, mapper=mapper)
        logger.info(
            f"FASA: {len(train)} training images, {len(held_out)} held out; "
            f"adaptation every {period} iterations"
        )
        hooks = super().build_hooks()
        # Adapt before the checkpoint of the same iteration, so that it holds the new state.
        where = next(
            (i for i, h in enumerate(hooks) if isinstance(h, PeriodicCheckpointer)), len(hooks)
        )
        hooks.insert(where, FASAAdaptationHook(period, loader))
        return hooks
